//! Array arguments: float32 / float64 arrays taken zero-copy (Python makes them C-contiguous).

use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{IntoPyArray, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

#[derive(FromPyObject)]
pub enum FloatArray<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
}

impl FloatArray<'_> {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            FloatArray::F32(a) => a.shape().to_vec(),
            FloatArray::F64(a) => a.shape().to_vec(),
        }
    }
}

pub fn contiguous<'a, T: numpy::Element>(
    a: &'a PyReadonlyArrayDyn<'_, T>,
    name: &str,
) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err(format!("{name}: expected a C-contiguous array")))
}

/// Run `$body` with `$s` bound to the array's contiguous slice, whichever float type it holds.
macro_rules! with_floats {
    ($arr:expr, $name:expr, |$s:ident| $body:expr) => {
        match &$arr {
            $crate::py::arrays::FloatArray::F32(a) => {
                let $s = $crate::py::arrays::contiguous(a, $name)?;
                $body
            }
            $crate::py::arrays::FloatArray::F64(a) => {
                let $s = $crate::py::arrays::contiguous(a, $name)?;
                $body
            }
        }
    };
}
pub(crate) use with_floats;

/// Float types that can be read out of a `FloatArray`.
pub trait FloatElement: numpy::Element + Sized {
    fn slice_of<'a>(a: &'a FloatArray<'_>, name: &str) -> PyResult<&'a [Self]>;
}

impl FloatElement for f32 {
    fn slice_of<'a>(a: &'a FloatArray<'_>, name: &str) -> PyResult<&'a [f32]> {
        match a {
            FloatArray::F32(x) => contiguous(x, name),
            FloatArray::F64(_) => Err(PyValueError::new_err(format!(
                "{name}: expected float32 like the data, got float64"
            ))),
        }
    }
}

impl FloatElement for f64 {
    fn slice_of<'a>(a: &'a FloatArray<'_>, name: &str) -> PyResult<&'a [f64]> {
        match a {
            FloatArray::F64(x) => contiguous(x, name),
            FloatArray::F32(_) => Err(PyValueError::new_err(format!(
                "{name}: expected float64 like the data, got float32"
            ))),
        }
    }
}

/// `other` as a slice of the same element type as `_like`.
pub fn slice_like<'a, T: FloatElement>(
    _like: &[T],
    other: &'a FloatArray<'_>,
    name: &str,
) -> PyResult<&'a [T]> {
    T::slice_of(other, name)
}

/// An owned result vector as a numpy array of shape `dims`.
pub fn shaped<T: numpy::Element>(py: Python<'_>, v: Vec<T>, dims: &[usize]) -> PyResult<Py<PyAny>> {
    let a =
        ArrayD::from_shape_vec(IxDyn(dims), v).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py).into_any().unbind())
}

/// The shape of `name` as exactly `D` dimensions, or a ValueError naming it.
pub fn dims<const D: usize>(shape: &[usize], name: &str) -> PyResult<[usize; D]> {
    shape.try_into().map_err(|_| {
        PyValueError::new_err(format!(
            "{name}: expected {D} dimensions, got shape {shape:?}"
        ))
    })
}

/// ValueError naming `name` unless it holds exactly `want` elements (`what` says why).
pub fn expect_len(len: usize, want: usize, name: &str, what: &str) -> PyResult<()> {
    if len != want {
        return Err(PyValueError::new_err(format!(
            "{name}: expected {want} elements ({what}), got {len}"
        )));
    }
    Ok(())
}
