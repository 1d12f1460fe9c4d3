use numpy::{IntoPyArray, PyReadonlyArrayDyn};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::arrays::{contiguous, dims, expect_len, with_floats, FloatArray};
use super::errors::to_py;
use super::Threads;
use crate::metrics;
use crate::pool;

/// AUROC, AP, F1-max, TPR at each max FPR and FPR at each min TPR, from one sort.
/// The labels as a slice, one per score (a ValueError naming `labels` otherwise).
fn labels_for<'a>(
    scores: &FloatArray<'_>,
    labels: &'a PyReadonlyArrayDyn<'_, u8>,
) -> PyResult<&'a [u8]> {
    let labels = contiguous(labels, "labels")?;
    expect_len(
        labels.len(),
        scores.shape().iter().product(),
        "labels",
        "one per score",
    )?;
    Ok(labels)
}

/// The maps' `[N, H, W]` and the masks as a slice, one per pixel (ValueErrors naming them).
fn maps_and_masks<'a>(
    maps: &FloatArray<'_>,
    masks: &'a PyReadonlyArrayDyn<'_, u8>,
) -> PyResult<([usize; 3], &'a [u8])> {
    let [n, h, w] = dims::<3>(&maps.shape(), "anomaly_maps")?;
    let masks = contiguous(masks, "masks")?;
    expect_len(
        masks.len(),
        n * h * w,
        "masks",
        "one per pixel of the anomaly maps",
    )?;
    Ok(([n, h, w], masks))
}

#[pyfunction(name = "binary_summary", signature = (scores, labels, max_fprs, min_tprs, n_jobs=None))]
fn py_binary_summary<'py>(
    py: Python<'py>,
    scores: FloatArray<'py>,
    labels: PyReadonlyArrayDyn<'py, u8>,
    max_fprs: Vec<f64>,
    min_tprs: Vec<f64>,
    n_jobs: Option<Threads>,
) -> PyResult<Bound<'py, PyDict>> {
    let labels = labels_for(&scores, &labels)?;
    let summary = with_floats!(scores, "scores", |s| py
        .detach(|| pool::install(n_jobs.map(i64::from), || {
            metrics::summarize(s, labels, &max_fprs, &min_tprs)
        })));
    let out = PyDict::new(py);
    out.set_item("auroc", summary.auroc)?;
    out.set_item("average_precision", summary.average_precision)?;
    out.set_item("f1_max", summary.f1_max)?;
    out.set_item("f1_threshold", summary.f1_threshold)?;
    out.set_item("tpr_at_fpr", summary.tpr_at_fpr)?;
    out.set_item("fpr_at_tpr", summary.fpr_at_tpr)?;
    Ok(out)
}

type CurveArrays<'py> = (
    Bound<'py, numpy::PyArray1<u64>>,
    Bound<'py, numpy::PyArray1<u64>>,
    Bound<'py, numpy::PyArray1<f64>>,
);

/// The ROC curve at every distinct score: (false positives, true positives, thresholds).
#[pyfunction(name = "curve_counts", signature = (scores, labels, n_jobs=None))]
fn py_curve_counts<'py>(
    py: Python<'py>,
    scores: FloatArray<'py>,
    labels: PyReadonlyArrayDyn<'py, u8>,
    n_jobs: Option<Threads>,
) -> PyResult<CurveArrays<'py>> {
    let labels = labels_for(&scores, &labels)?;
    let c = with_floats!(scores, "scores", |s| py
        .detach(|| pool::install(n_jobs.map(i64::from), || metrics::curve(
            s, labels
        ))));
    Ok((
        c.false_positives.into_pyarray(py),
        c.true_positives.into_pyarray(py),
        c.thresholds.into_pyarray(py),
    ))
}

/// The PRO curve (fpr, pro) up to the first point past max_fpr, for maps/masks `[n, h, w]`.
#[pyfunction(name = "pro_curve", signature = (maps, masks, max_fpr, n_jobs=None))]
fn py_pro_curve<'py>(
    py: Python<'py>,
    maps: FloatArray<'py>,
    masks: PyReadonlyArrayDyn<'py, u8>,
    max_fpr: f64,
    n_jobs: Option<Threads>,
) -> PyResult<(
    Bound<'py, numpy::PyArray1<f64>>,
    Bound<'py, numpy::PyArray1<f64>>,
)> {
    let ([n, h, w], masks) = maps_and_masks(&maps, &masks)?;
    let result = with_floats!(maps, "anomaly_maps", |s| py
        .detach(|| pool::install(n_jobs.map(i64::from), || {
            metrics::pro_curve(s, masks, n, h, w, max_fpr)
        })));
    let (fprs, pros) = result.map_err(to_py)?;
    Ok((fprs.into_pyarray(py), pros.into_pyarray(py)))
}

/// Area under the PRO curve up to max_fpr, normalised by max_fpr.
#[pyfunction(name = "aupro", signature = (maps, masks, max_fpr, n_jobs=None))]
fn py_aupro<'py>(
    py: Python<'py>,
    maps: FloatArray<'py>,
    masks: PyReadonlyArrayDyn<'py, u8>,
    max_fpr: f64,
    n_jobs: Option<Threads>,
) -> PyResult<f64> {
    let ([n, h, w], masks) = maps_and_masks(&maps, &masks)?;
    let result = with_floats!(maps, "anomaly_maps", |s| py
        .detach(|| pool::install(n_jobs.map(i64::from), || metrics::aupro(
            s, masks, n, h, w, max_fpr
        ))));
    result.map_err(to_py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_binary_summary, m)?)?;
    m.add_function(wrap_pyfunction!(py_curve_counts, m)?)?;
    m.add_function(wrap_pyfunction!(py_pro_curve, m)?)?;
    m.add_function(wrap_pyfunction!(py_aupro, m)?)?;
    Ok(())
}
