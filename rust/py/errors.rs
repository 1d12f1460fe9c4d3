//! The one place where core errors become Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

use crate::error::CoreError;

create_exception!(
    _core,
    FastcoreError,
    PyException,
    "Base class of fastcore_ad's own errors."
);
create_exception!(
    _core,
    SingularCovarianceError,
    FastcoreError,
    "A covariance matrix is singular or too ill-conditioned to factorise."
);

pub fn to_py(err: CoreError) -> PyErr {
    match err {
        CoreError::InvalidArgument(msg) => PyValueError::new_err(msg),
        CoreError::Singular(msg) => SingularCovarianceError::new_err(msg),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("FastcoreError", py.get_type::<FastcoreError>())?;
    m.add(
        "SingularCovarianceError",
        py.get_type::<SingularCovarianceError>(),
    )?;
    Ok(())
}
