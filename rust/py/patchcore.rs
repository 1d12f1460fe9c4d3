use std::sync::Mutex;

use numpy::IntoPyArray;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::arrays::{dims, expect_len, slice_like, with_floats, FloatArray};
use super::errors::to_py;
use super::Threads;
use crate::patchcore::{self, Metric};
use crate::pool;

fn parse_metric(metric: &str) -> PyResult<Metric> {
    match metric {
        "euclidean" => Ok(Metric::Euclidean),
        "cosine" => Ok(Metric::Cosine),
        other => Err(PyValueError::new_err(format!(
            "metric: expected 'euclidean' or 'cosine', got {other:?}"
        ))),
    }
}

/// Exact k nearest neighbours of `queries [m, d]` in `bank [n, d]`: (distances float64 `[m, k]`,
/// indices int64 `[m, k]`), ascending, ties by the lower bank index.
#[pyfunction(name = "knn", signature = (queries, bank, k, metric="euclidean", n_jobs=None))]
fn py_knn<'py>(
    py: Python<'py>,
    queries: FloatArray<'py>,
    bank: FloatArray<'py>,
    k: usize,
    metric: &str,
    n_jobs: Option<Threads>,
) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
    let metric = parse_metric(metric)?;
    let [m, d] = dims::<2>(&queries.shape(), "queries")?;
    let [n, db] = dims::<2>(&bank.shape(), "bank")?;
    expect_len(db, d, "bank", "features per vector, like the queries")?;
    let (dist, idx) = with_floats!(queries, "queries", |q| {
        let b = slice_like(q, &bank, "bank")?;
        py.detach(|| {
            pool::install(n_jobs.map(i64::from), || {
                patchcore::knn(q, m, b, n, d, k, metric)
            })
        })
        .map_err(to_py)?
    });
    let dist = numpy::ndarray::Array2::from_shape_vec((m, k), dist)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let idx = numpy::ndarray::Array2::from_shape_vec((m, k), idx)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((
        dist.into_pyarray(py).into_any().unbind(),
        idx.into_pyarray(py).into_any().unbind(),
    ))
}

/// Exact greedy k-center selection of `n_select` rows of `x [n, d]` from `start`: int64 indices.
#[pyfunction(name = "greedy_coreset", signature = (x, n_select, start=0, progress=None, n_jobs=None))]
fn py_greedy_coreset<'py>(
    py: Python<'py>,
    x: FloatArray<'py>,
    n_select: usize,
    start: usize,
    progress: Option<Py<PyAny>>,
    n_jobs: Option<Threads>,
) -> PyResult<Py<PyAny>> {
    let [n, d] = dims::<2>(&x.shape(), "X")?;
    // An exception raised by the callback (KeyboardInterrupt included: the signal handler runs
    // inside it) stops the selection and is raised again here, not swallowed.
    let raised: Mutex<Option<PyErr>> = Mutex::new(None);
    let report = |done: usize| match &progress {
        None => true,
        Some(cb) => Python::attach(|py| match cb.call1(py, (done,)) {
            Ok(_) => true,
            Err(err) => {
                if let Ok(mut slot) = raised.lock() {
                    slot.get_or_insert(err);
                }
                false
            }
        }),
    };
    let out = with_floats!(x, "X", |xs| {
        py.detach(|| {
            pool::install(n_jobs.map(i64::from), || {
                patchcore::greedy_coreset(xs, n, d, n_select, start, &report)
            })
        })
    });
    if let Some(err) = raised.into_inner().ok().flatten() {
        return Err(err);
    }
    let out = out.map_err(to_py)?;
    Ok(out.into_pyarray(py).into_any().unbind())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_knn, m)?)?;
    m.add_function(wrap_pyfunction!(py_greedy_coreset, m)?)?;
    Ok(())
}
