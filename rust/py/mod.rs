//! PyO3 wrappers: arguments are extracted, the GIL is released, the pure kernel runs, and the
//! result comes back as an owned numpy array. No kernel logic lives here.
//! Tuple returns and long argument lists mirror the Python signatures, hence the two allows.
#![allow(clippy::type_complexity, clippy::too_many_arguments)]

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBool;

pub mod arrays;
pub mod cuda;
pub mod errors;
pub mod gaussian;
pub mod metrics;
pub mod mia;
pub mod musc;
pub mod patchcore;
pub mod tsetlin;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    metrics::register(m)?;
    gaussian::register(m)?;
    mia::register(m)?;
    musc::register(m)?;
    patchcore::register(m)?;
    tsetlin::register(m)?;
    cuda::register(m)?;
    m.add_function(wrap_pyfunction!(py_before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(py_after_fork_in_parent, m)?)?;
    m.add_function(wrap_pyfunction!(py_reset_after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(py_resolve_threads, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// Hold the thread-pool cache across fork(); registered with os.register_at_fork.
#[pyfunction(name = "before_fork")]
fn py_before_fork() {
    crate::pool::before_fork();
}

/// Release what before_fork held, in the parent.
#[pyfunction(name = "after_fork_in_parent")]
fn py_after_fork_in_parent() {
    crate::pool::after_fork_in_parent();
}

/// Forget thread pools inherited through fork(); registered with os.register_at_fork.
#[pyfunction(name = "reset_after_fork")]
fn py_reset_after_fork() {
    crate::pool::reset_after_fork();
}

/// The number of threads a call with this n_jobs would use.
#[pyfunction(name = "resolve_threads", signature = (n_jobs=None))]
fn py_resolve_threads(n_jobs: Option<Threads>) -> usize {
    crate::pool::resolve_threads(n_jobs.map(i64::from))
}

/// An `n_jobs` argument: any Python int, saturated to the i64 range (the pool caps the count),
/// so `n_jobs=2**70` means "many" instead of raising OverflowError.
#[derive(Clone, Copy)]
pub struct Threads(i64);

impl From<Threads> for i64 {
    fn from(t: Threads) -> i64 {
        t.0
    }
}

impl<'py> FromPyObject<'py> for Threads {
    fn extract_bound(ob: &Bound<'py, PyAny>) -> PyResult<Self> {
        // The estimators' rule (`check_n_jobs`): a bool is not a count, and 0 threads is no count.
        if ob.is_instance_of::<PyBool>() {
            return Err(PyTypeError::new_err(format!(
                "n_jobs: expected None or a nonzero integer, got bool {ob}"
            )));
        }
        match ob.extract::<i64>() {
            Ok(0) => Err(PyValueError::new_err(
                "n_jobs: must be None or a nonzero integer (-1: every CPU, -2: all but one), got 0",
            )),
            Ok(n) => Ok(Threads(n)),
            Err(e) if e.is_instance_of::<PyOverflowError>(ob.py()) => {
                let negative = ob.lt(0)?;
                Ok(Threads(if negative { i64::MIN } else { i64::MAX }))
            }
            Err(e) => Err(e),
        }
    }
}
