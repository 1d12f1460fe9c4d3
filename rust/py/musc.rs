use numpy::{PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::arrays::{contiguous, dims, shaped, slice_like, with_floats, FloatArray};
use super::errors::to_py;
use super::Threads;
use crate::musc;
use crate::pool;

/// LNAMD of `features [N, H, W, C]` with an `r x r` box: `[N, H, W, C]`, unit-norm patches.
#[pyfunction(name = "musc_lnamd", signature = (features, r, n_jobs=None))]
fn py_musc_lnamd<'py>(
    py: Python<'py>,
    features: FloatArray<'py>,
    r: usize,
    n_jobs: Option<Threads>,
) -> PyResult<Py<PyAny>> {
    let [n, h, w, c] = dims::<4>(&features.shape(), "features")?;
    with_floats!(features, "features", |x| {
        let out = py
            .detach(|| pool::install(n_jobs.map(i64::from), || musc::lnamd(x, n, h, w, c, r)))
            .map_err(to_py)?;
        shaped(py, out, &[n, h, w, c])
    })
}

/// Mutual scores of `patches [N, P, C]`: `[N, P]`.
#[pyfunction(name = "musc_mutual_scores", signature = (patches, top_ratio, max_memory=None, n_jobs=None))]
fn py_musc_mutual_scores<'py>(
    py: Python<'py>,
    patches: FloatArray<'py>,
    top_ratio: f64,
    max_memory: Option<usize>,
    n_jobs: Option<Threads>,
) -> PyResult<Py<PyAny>> {
    let [n, p, c] = dims::<3>(&patches.shape(), "patches")?;
    with_floats!(patches, "patches", |x| {
        let out = py
            .detach(|| {
                pool::install(n_jobs.map(i64::from), || {
                    musc::mutual_scores(x, n, p, c, top_ratio, max_memory)
                })
            })
            .map_err(to_py)?;
        shaped(py, out, &[n, p])
    })
}

/// Scores of `queries [M, P, C]` against `bank [Nb, Pb, C]`: `[M, P]`.
#[pyfunction(name = "musc_scores_against_bank", signature = (queries, bank, top_ratio, max_memory=None, n_jobs=None))]
fn py_musc_scores_against_bank<'py>(
    py: Python<'py>,
    queries: FloatArray<'py>,
    bank: FloatArray<'py>,
    top_ratio: f64,
    max_memory: Option<usize>,
    n_jobs: Option<Threads>,
) -> PyResult<Py<PyAny>> {
    let [m, p, c] = dims::<3>(&queries.shape(), "queries")?;
    let [nb, pb, cb] = dims::<3>(&bank.shape(), "bank")?;
    if cb != c {
        return Err(PyValueError::new_err(format!(
            "bank: expected {c} channels like the queries, got {cb}"
        )));
    }
    with_floats!(queries, "queries", |q| {
        let b = slice_like(q, &bank, "bank")?;
        let out = py
            .detach(|| {
                pool::install(n_jobs.map(i64::from), || {
                    musc::scores_against_bank(q, m, p, b, nb, pb, c, top_ratio, max_memory)
                })
            })
            .map_err(to_py)?;
        shaped(py, out, &[m, p])
    })
}

/// RsCIN of `image_scores [N]` with `embeddings [N, D]` (float64): `[N]`.
#[pyfunction(name = "musc_rscin", signature = (image_scores, embeddings, k_list, n_jobs=None))]
fn py_musc_rscin<'py>(
    py: Python<'py>,
    image_scores: PyReadonlyArrayDyn<'py, f64>,
    embeddings: PyReadonlyArrayDyn<'py, f64>,
    k_list: Vec<usize>,
    n_jobs: Option<Threads>,
) -> PyResult<Py<PyAny>> {
    let [n, d] = dims::<2>(embeddings.shape(), "embeddings")?;
    let s = contiguous(&image_scores, "image_scores")?;
    let e = contiguous(&embeddings, "embeddings")?;
    let out = py
        .detach(|| pool::install(n_jobs.map(i64::from), || musc::rscin(s, e, n, d, &k_list)))
        .map_err(to_py)?;
    shaped(py, out, &[n])
}

/// MuSc's k: the number of smallest per-image minima averaged, `max(1, floor(references * top_ratio))`.
#[pyfunction(name = "musc_top_k")]
fn py_musc_top_k(references: usize, top_ratio: f64) -> PyResult<usize> {
    if !(top_ratio > 0.0 && top_ratio <= 1.0) {
        return Err(PyValueError::new_err(format!(
            "top_ratio: must lie in (0, 1], got {top_ratio}"
        )));
    }
    Ok(musc::top_k(references, top_ratio))
}

/// Query images whose per-pair minima of `value_bytes` each fit in `max_memory` bytes (at least 1).
#[pyfunction(name = "musc_chunk_of_queries", signature = (queries, references, p, max_memory, value_bytes))]
fn py_musc_chunk_of_queries(
    queries: usize,
    references: usize,
    p: usize,
    max_memory: Option<usize>,
    value_bytes: usize,
) -> usize {
    musc::chunk_of_queries_for(value_bytes, queries, references, p, max_memory)
}

/// The rounding bound of the expanded distance key for `c` channels of `itemsize`-byte floats.
#[pyfunction(name = "musc_key_tolerance")]
fn py_musc_key_tolerance(c: usize, max_a: f64, max_b: f64, itemsize: usize) -> f64 {
    musc::key_tolerance_for(itemsize, c, max_a, max_b)
}

/// Aligned mutual scores of `patches [N, H, W, C]` (each patch against the patches within
/// `window` cells of its position in the other images): `[N, H, W]`.
#[pyfunction(name = "musc_aligned_mutual_scores", signature = (patches, top_ratio, window, n_jobs=None))]
fn py_musc_aligned_mutual_scores<'py>(
    py: Python<'py>,
    patches: FloatArray<'py>,
    top_ratio: f64,
    window: usize,
    n_jobs: Option<Threads>,
) -> PyResult<Py<PyAny>> {
    let [n, h, w, c] = dims::<4>(&patches.shape(), "patches")?;
    with_floats!(patches, "patches", |x| {
        let out = py
            .detach(|| {
                pool::install(n_jobs.map(i64::from), || {
                    musc::aligned_mutual_scores(x, n, h, w, c, top_ratio, window)
                })
            })
            .map_err(to_py)?;
        shaped(py, out, &[n, h, w])
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_musc_aligned_mutual_scores, m)?)?;
    m.add_function(wrap_pyfunction!(py_musc_top_k, m)?)?;
    m.add_function(wrap_pyfunction!(py_musc_chunk_of_queries, m)?)?;
    m.add_function(wrap_pyfunction!(py_musc_key_tolerance, m)?)?;
    m.add_function(wrap_pyfunction!(py_musc_lnamd, m)?)?;
    m.add_function(wrap_pyfunction!(py_musc_mutual_scores, m)?)?;
    m.add_function(wrap_pyfunction!(py_musc_scores_against_bank, m)?)?;
    m.add_function(wrap_pyfunction!(py_musc_rscin, m)?)?;
    Ok(())
}
