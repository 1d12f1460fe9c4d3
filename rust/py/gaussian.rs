use numpy::ndarray::{Array1, Array2, Array3};
use numpy::IntoPyArray;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::arrays::{dims, expect_len, shaped, slice_like, with_floats, FloatArray};
use super::errors::to_py;
use super::Threads;
use crate::gaussian::{self, Estimator, Shape};
use crate::pool;

fn parse_shape(shape: &str) -> PyResult<Shape> {
    match shape {
        "lower" => Ok(Shape::Lower),
        "upper" => Ok(Shape::Upper),
        "full" => Ok(Shape::Full),
        other => Err(PyValueError::new_err(format!(
            "shape: expected 'lower', 'upper' or 'full', got {other:?}"
        ))),
    }
}

/// Distances `||(x_i - mean) @ w||` for `x [m, d]`, `w [d, k]` (all of x's dtype).
#[pyfunction(name = "mahalanobis", signature = (x, mean, w, shape, n_jobs=None))]
fn py_mahalanobis<'py>(
    py: Python<'py>,
    x: FloatArray<'py>,
    mean: FloatArray<'py>,
    w: FloatArray<'py>,
    shape: &str,
    n_jobs: Option<Threads>,
) -> PyResult<Py<PyAny>> {
    let shape = parse_shape(shape)?;
    let [m, d] = dims::<2>(&x.shape(), "x")?;
    let [wd, k] = dims::<2>(&w.shape(), "precision_cholesky")?;
    expect_len(wd, d, "precision_cholesky", "rows: one per feature of x")?;
    with_floats!(x, "x", |xv| {
        let mv = slice_like(xv, &mean, "mean")?;
        let wv = slice_like(xv, &w, "precision_cholesky")?;
        expect_len(mv.len(), d, "mean", "one per feature of x")?;
        let out = py.detach(|| {
            pool::install(n_jobs.map(i64::from), || {
                gaussian::mahalanobis(xv, m, d, mv, wv, k, shape)
            })
        });
        shaped(py, out, &[m])
    })
}

/// Per-position distances: `x [m, P, d]`, `means [P, d]`, `factors [P, d, d]` -> `[m, P]`.
#[pyfunction(name = "mahalanobis_per_position", signature = (x, means, factors, shape, n_jobs=None))]
fn py_mahalanobis_per_position<'py>(
    py: Python<'py>,
    x: FloatArray<'py>,
    means: FloatArray<'py>,
    factors: FloatArray<'py>,
    shape: &str,
    n_jobs: Option<Threads>,
) -> PyResult<Py<PyAny>> {
    let shape = parse_shape(shape)?;
    let [m, p, d] = dims::<3>(&x.shape(), "x")?;
    with_floats!(x, "x", |xv| {
        let mv = slice_like(xv, &means, "means")?;
        let fv = slice_like(xv, &factors, "factors")?;
        expect_len(mv.len(), p * d, "means", "[P, d] for x of shape [m, P, d]")?;
        expect_len(
            fv.len(),
            p * d * d,
            "factors",
            "[P, d, d] for x of shape [m, P, d]",
        )?;
        let out = py.detach(|| {
            pool::install(n_jobs.map(i64::from), || {
                gaussian::mahalanobis_per_position(xv, m, p, d, mv, fv, shape)
            })
        });
        shaped(py, out, &[m, p])
    })
}

/// Fit one Gaussian to `x [n, d]`: (mean, covariance, shrinkage, precision_cholesky), float64.
#[pyfunction(name = "fit_gaussian", signature = (x, estimator, reg, n_jobs=None))]
fn py_fit_gaussian<'py>(
    py: Python<'py>,
    x: FloatArray<'py>,
    estimator: &str,
    reg: f64,
    n_jobs: Option<Threads>,
) -> PyResult<(Py<PyAny>, Py<PyAny>, f64, Py<PyAny>)> {
    let estimator = Estimator::parse(estimator).map_err(to_py)?;
    let [n, d] = dims::<2>(&x.shape(), "x")?;
    let fit = with_floats!(x, "X", |xv| py
        .detach(|| pool::install(n_jobs.map(i64::from), || {
            gaussian::fit(xv, n, d, d, estimator, reg, "the covariance")
        })));
    let fit = fit.map_err(to_py)?;
    let cov = Array2::from_shape_vec((d, d), fit.covariance)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let l = Array2::from_shape_vec((d, d), fit.precision_cholesky)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((
        Array1::from(fit.mean).into_pyarray(py).into_any().unbind(),
        cov.into_pyarray(py).into_any().unbind(),
        fit.shrinkage,
        l.into_pyarray(py).into_any().unbind(),
    ))
}

/// Per-position fits for `x [n, P, d]`: (means [P, d], covariances, factors [P, d, d],
/// shrinkages [P]) in x's dtype (shrinkages float64).
#[pyfunction(name = "fit_gaussian_per_position", signature = (x, estimator, reg, n_jobs=None))]
fn py_fit_gaussian_per_position<'py>(
    py: Python<'py>,
    x: FloatArray<'py>,
    estimator: &str,
    reg: f64,
    n_jobs: Option<Threads>,
) -> PyResult<(Py<PyAny>, Py<PyAny>, Py<PyAny>, Py<PyAny>)> {
    let estimator = Estimator::parse(estimator).map_err(to_py)?;
    let [n, p, d] = dims::<3>(&x.shape(), "x")?;
    with_floats!(x, "X", |xv| {
        let fits = py.detach(|| {
            pool::install(n_jobs.map(i64::from), || {
                gaussian::fit_per_position(xv, n, p, d, estimator, reg)
            })
        });
        let fits = fits.map_err(to_py)?;
        let err = |e: numpy::ndarray::ShapeError| PyValueError::new_err(e.to_string());
        Ok((
            Array2::from_shape_vec((p, d), fits.means)
                .map_err(err)?
                .into_pyarray(py)
                .into_any()
                .unbind(),
            Array3::from_shape_vec((p, d, d), fits.covariances)
                .map_err(err)?
                .into_pyarray(py)
                .into_any()
                .unbind(),
            Array3::from_shape_vec((p, d, d), fits.factors)
                .map_err(err)?
                .into_pyarray(py)
                .into_any()
                .unbind(),
            Array1::from(fits.shrinkages)
                .into_pyarray(py)
                .into_any()
                .unbind(),
        ))
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_mahalanobis, m)?)?;
    m.add_function(wrap_pyfunction!(py_mahalanobis_per_position, m)?)?;
    m.add_function(wrap_pyfunction!(py_fit_gaussian, m)?)?;
    m.add_function(wrap_pyfunction!(py_fit_gaussian_per_position, m)?)?;
    Ok(())
}
