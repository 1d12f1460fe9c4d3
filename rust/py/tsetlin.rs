use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::arrays::contiguous;
use super::errors::to_py;
use super::Threads;
use crate::pool;
use crate::tsetlin::{self, Config, Docs};

/// The machine's configuration, read from a dict built by `fastcore_ad.tsetlin`.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct PyConfig {
    n_features: usize,
    n_classes: usize,
    n_clauses: usize,
    state_bits: usize,
    threshold: i64,
    specificity: f64,
    weighted: bool,
    boost_true_positive: bool,
    focused_negatives: bool,
    max_included_literals: usize,
    absorbing: Option<u32>,
    clause_drop_p: f64,
    negated_literals: bool,
    max_negated_literals: usize,
    coalesced: bool,
    seed: u64,
}

impl From<PyConfig> for Config {
    fn from(c: PyConfig) -> Self {
        Config {
            n_features: c.n_features,
            n_classes: c.n_classes,
            n_clauses: c.n_clauses,
            state_bits: c.state_bits,
            threshold: c.threshold,
            specificity: c.specificity,
            weighted: c.weighted,
            boost_true_positive: c.boost_true_positive,
            focused_negatives: c.focused_negatives,
            max_included_literals: c.max_included_literals,
            absorbing: c.absorbing,
            clause_drop_p: c.clause_drop_p,
            negated_literals: c.negated_literals,
            max_negated_literals: c.max_negated_literals,
            coalesced: c.coalesced,
            seed: c.seed,
        }
    }
}

/// Documents: `packed` `[n, feature_words]` uint64, or CSR `indptr` (int64) + `indices` (int32).
#[derive(FromPyObject)]
enum PyDocs<'py> {
    Packed(PyReadonlyArrayDyn<'py, u64>),
    Csr((PyReadonlyArrayDyn<'py, i64>, PyReadonlyArrayDyn<'py, i32>)),
}

fn docs_of<'a>(docs: &'a PyDocs<'_>) -> PyResult<Docs<'a>> {
    match docs {
        PyDocs::Packed(words) => {
            let n_docs = words.shape().first().copied().unwrap_or(0);
            Ok(Docs::Packed {
                words: contiguous(words, "X")?,
                n_docs,
            })
        }
        PyDocs::Csr((indptr, indices)) => Ok(Docs::Csr {
            indptr: contiguous(indptr, "X.indptr")?,
            indices: contiguous(indices, "X.indices")?,
        }),
    }
}

/// Fresh model state: (action [banks*C*lw] u64, lower [banks*C*lw*(b-1)] u64, weights i32).
#[pyfunction(name = "tsetlin_initial_state")]
fn py_tsetlin_initial_state(
    py: Python<'_>,
    config: PyConfig,
) -> PyResult<(Py<PyAny>, Py<PyAny>, Py<PyAny>)> {
    let cfg: Config = config.into();
    let (action, lower, weights) = tsetlin::initial_state(&cfg).map_err(to_py)?;
    Ok((
        action.into_pyarray(py).into_any().unbind(),
        lower.into_pyarray(py).into_any().unbind(),
        weights.into_pyarray(py).into_any().unbind(),
    ))
}

/// One pass of online training over `order`, updating the state arrays in place.
#[pyfunction(name = "tsetlin_train_epoch", signature = (config, action, lower, weights, docs, y, order, epoch, n_jobs=None))]
#[allow(clippy::too_many_arguments)]
fn py_tsetlin_train_epoch<'py>(
    py: Python<'py>,
    config: PyConfig,
    action: Bound<'py, PyArrayDyn<u64>>,
    lower: Bound<'py, PyArrayDyn<u64>>,
    weights: Bound<'py, PyArrayDyn<i32>>,
    docs: PyDocs<'py>,
    y: PyReadonlyArrayDyn<'py, i64>,
    order: PyReadonlyArrayDyn<'py, i64>,
    epoch: u64,
    n_jobs: Option<Threads>,
) -> PyResult<()> {
    let cfg: Config = config.into();
    let docs = docs_of(&docs)?;
    let y = contiguous(&y, "y")?;
    let order = contiguous(&order, "order")?;
    let err = |name: &str| {
        PyValueError::new_err(format!(
            "{name}: expected a writable C-contiguous array that no other argument shares"
        ))
    };
    // try_readwrite, not the extractor: a read-only or shared array is an error, not a panic.
    let mut action = action.try_readwrite().map_err(|_| err("action"))?;
    let mut lower = lower.try_readwrite().map_err(|_| err("lower"))?;
    let mut weights = weights.try_readwrite().map_err(|_| err("weights"))?;
    let action = action.as_slice_mut().map_err(|_| err("action"))?;
    let lower = lower.as_slice_mut().map_err(|_| err("lower"))?;
    let weights = weights.as_slice_mut().map_err(|_| err("weights"))?;
    py.detach(|| {
        pool::install(n_jobs.map(i64::from), || {
            tsetlin::train_epoch(&cfg, action, lower, weights, &docs, y, order, epoch)
        })
    })
    .map_err(to_py)
}

/// Raw class sums `[n_docs, n_classes]` (int64, prediction-time clause outputs, unclamped).
#[pyfunction(name = "tsetlin_class_sums", signature = (config, action, weights, docs, n_jobs=None))]
fn py_tsetlin_class_sums<'py>(
    py: Python<'py>,
    config: PyConfig,
    action: PyReadonlyArrayDyn<'py, u64>,
    weights: PyReadonlyArrayDyn<'py, i32>,
    docs: PyDocs<'py>,
    n_jobs: Option<Threads>,
) -> PyResult<Py<PyAny>> {
    let cfg: Config = config.into();
    let docs = docs_of(&docs)?;
    let action = contiguous(&action, "action")?;
    let weights = contiguous(&weights, "weights")?;
    let n = docs.n_docs();
    let sums = py
        .detach(|| {
            pool::install(n_jobs.map(i64::from), || {
                tsetlin::class_sums(&cfg, action, weights, &docs)
            })
        })
        .map_err(to_py)?;
    let a = Array2::from_shape_vec((n, cfg.n_classes), sums)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py).into_any().unbind())
}

/// Prediction-time clause outputs `[n_docs, banks * n_clauses]` (uint8; empty clauses 0).
#[pyfunction(name = "tsetlin_clause_outputs", signature = (config, action, docs, n_jobs=None))]
fn py_tsetlin_clause_outputs<'py>(
    py: Python<'py>,
    config: PyConfig,
    action: PyReadonlyArrayDyn<'py, u64>,
    docs: PyDocs<'py>,
    n_jobs: Option<Threads>,
) -> PyResult<Py<PyAny>> {
    let cfg: Config = config.into();
    let docs = docs_of(&docs)?;
    let action = contiguous(&action, "action")?;
    let n = docs.n_docs();
    let total = cfg.n_banks() * cfg.n_clauses;
    let outs = py
        .detach(|| {
            pool::install(n_jobs.map(i64::from), || {
                tsetlin::clause_outputs(&cfg, action, &docs)
            })
        })
        .map_err(to_py)?;
    let a = Array2::from_shape_vec((n, total), outs)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py).into_any().unbind())
}

/// The counter-based random number at (seed, parts...): exposed so tests can replay the stream.
#[pyfunction(name = "tsetlin_stream_key")]
fn py_tsetlin_stream_key(seed: u64, parts: Vec<u64>) -> u64 {
    tsetlin::stream_key(seed, &parts)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_tsetlin_initial_state, m)?)?;
    m.add_function(wrap_pyfunction!(py_tsetlin_train_epoch, m)?)?;
    m.add_function(wrap_pyfunction!(py_tsetlin_class_sums, m)?)?;
    m.add_function(wrap_pyfunction!(py_tsetlin_clause_outputs, m)?)?;
    m.add_function(wrap_pyfunction!(py_tsetlin_stream_key, m)?)?;
    Ok(())
}
