use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::arrays::{contiguous, expect_len, shaped};
use super::errors::to_py;
use super::Threads;
use crate::mia::{self, Logits};
use crate::pool;

/// Logits as Python hands them over: float32, float64, or 16-bit patterns (bfloat16 / float16).
#[derive(FromPyObject)]
enum LogitsArray<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
    Bits16(PyReadonlyArrayDyn<'py, u16>),
}

/// `(logp, mu, sigma)`, each float64 `[B, T]`, for logits `[B, T_logits, V]` (`half` names the
/// format of 16-bit patterns: "bfloat16" or "float16"), int64 targets `[B, T]` with
/// `T <= T_logits` (positions past T are not read) and an optional uint8 mask `[B, T]`;
/// `with_max=True` appends `max_logp`, the log-probability of the top-1 token.
#[pyfunction(name = "token_stats", signature = (logits, targets, mask=None, half="bfloat16", n_jobs=None, with_max=false))]
fn py_token_stats<'py>(
    py: Python<'py>,
    logits: LogitsArray<'py>,
    targets: PyReadonlyArrayDyn<'py, i64>,
    mask: Option<PyReadonlyArrayDyn<'py, u8>>,
    half: &str,
    n_jobs: Option<Threads>,
    with_max: bool,
) -> PyResult<Py<PyAny>> {
    let shape = match &logits {
        LogitsArray::F32(a) => a.shape().to_vec(),
        LogitsArray::F64(a) => a.shape().to_vec(),
        LogitsArray::Bits16(a) => a.shape().to_vec(),
    };
    if shape.len() != 3 {
        return Err(PyValueError::new_err(format!(
            "logits: expected 3 dimensions [B, T, V], got shape {shape:?}"
        )));
    }
    let (b, logits_time, v) = (shape[0], shape[1], shape[2]);
    let target_shape = targets.shape().to_vec();
    if target_shape.len() != 2 || target_shape[0] != b {
        return Err(PyValueError::new_err(format!(
            "targets: expected shape [{b}, T], got {target_shape:?}"
        )));
    }
    let t = target_shape[1];
    if t > logits_time {
        return Err(PyValueError::new_err(format!(
            "targets: {t} positions per sequence, but logits have {logits_time}"
        )));
    }
    let targets = contiguous(&targets, "targets")?;
    let mask = match &mask {
        Some(m) => Some(contiguous(m, "mask")?),
        None => None,
    };
    if let Some(m) = mask {
        expect_len(m.len(), b * t, "mask", "one per target position")?;
    }
    let view = match &logits {
        LogitsArray::F32(a) => Logits::F32(contiguous(a, "logits")?),
        LogitsArray::F64(a) => Logits::F64(contiguous(a, "logits")?),
        LogitsArray::Bits16(a) => {
            let bits = contiguous(a, "logits")?;
            match half {
                "bfloat16" => Logits::Bf16(bits),
                "float16" => Logits::F16(bits),
                other => {
                    return Err(PyValueError::new_err(format!(
                        "half: expected 'bfloat16' or 'float16', got {other:?}"
                    )))
                }
            }
        }
    };
    let stats = py
        .detach(|| {
            pool::install(n_jobs.map(i64::from), || {
                mia::token_stats(
                    view,
                    mia::Shape {
                        batch: b,
                        time: t,
                        logits_time,
                        vocab: v,
                    },
                    targets,
                    mask,
                )
            })
        })
        .map_err(to_py)?;
    let mut out = vec![
        shaped(py, stats.logp, &[b, t])?,
        shaped(py, stats.mu, &[b, t])?,
        shaped(py, stats.sigma, &[b, t])?,
    ];
    if with_max {
        out.push(shaped(py, stats.max_logp, &[b, t])?);
    }
    Ok(PyTuple::new(py, out)?.into_any().unbind())
}

/// Mean of the `int(n * ratio)` (at least 1) smallest scored values per row of `values [B, T]`
/// for each ratio: float64 `[B, len(ratios)]`.
#[pyfunction(name = "min_k_means", signature = (values, ratios, mask=None, n_jobs=None))]
fn py_min_k_means<'py>(
    py: Python<'py>,
    values: PyReadonlyArrayDyn<'py, f64>,
    ratios: Vec<f64>,
    mask: Option<PyReadonlyArrayDyn<'py, u8>>,
    n_jobs: Option<Threads>,
) -> PyResult<Py<PyAny>> {
    let shape = values.shape().to_vec();
    if shape.len() != 2 {
        return Err(PyValueError::new_err(format!(
            "values: expected 2 dimensions [B, T], got shape {shape:?}"
        )));
    }
    let (rows, cols) = (shape[0], shape[1]);
    let data = contiguous(&values, "values")?;
    let mask = match &mask {
        Some(m) => Some(contiguous(m, "mask")?),
        None => None,
    };
    if let Some(m) = mask {
        expect_len(m.len(), rows * cols, "mask", "one per value")?;
    }
    let out = py
        .detach(|| {
            pool::install(n_jobs.map(i64::from), || {
                mia::min_k_means(data, rows, cols, mask, &ratios)
            })
        })
        .map_err(to_py)?;
    let a = Array2::from_shape_vec((rows, ratios.len()), out)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py).into_any().unbind())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_token_stats, m)?)?;
    m.add_function(wrap_pyfunction!(py_min_k_means, m)?)?;
    Ok(())
}
