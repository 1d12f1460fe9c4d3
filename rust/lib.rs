//! fastcore_ad core: pure Rust kernels, with the Python bindings behind the `python` feature.
//!
//! Rationale (measured, see bench/RESULTS.md):
//! - Dense products go through the `gemm` crate with its AVX-512 (x86-v4) kernels; each rayon
//!   task calls it single-threaded on a row tile so the epilogues (centring, squared norms)
//!   stay in cache instead of materialising whole intermediate matrices.
//! - Metrics sort integer keys derived from the float bits (no comparator on floats), and the
//!   positives and negatives are sorted apart so no payload travels with the keys.
//! - Factorisations run in float64 whatever the input dtype; scoring runs in the input dtype.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod error;
pub mod gaussian;
pub mod linalg;
pub mod metrics;
pub mod mia;
pub mod musc;
pub mod patchcore;
pub mod pool;
pub mod tsetlin;

#[cfg(feature = "python")]
mod py;

#[cfg(feature = "python")]
use pyo3::prelude::*;

/// The module registry: the only place that lists what Python sees.
#[cfg(feature = "python")]
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py::register(m)
}
