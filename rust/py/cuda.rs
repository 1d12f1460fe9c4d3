//! CUDA sources compiled into the extension, so they ship with every wheel; Python compiles
//! them with NVRTC (through CuPy) at first use.

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;

/// (family, file name, source). `common.cuh` is prepended to every family's source.
#[rustfmt::skip]
const SOURCES: &[(&str, &str, &str)] = &[
    ("common", "common.cuh", include_str!("../../cuda/common.cuh")),
    ("gaussian", "gaussian.cu", include_str!("../../cuda/gaussian.cu")),
    ("mia", "mia.cu", include_str!("../../cuda/mia.cu")),
    ("musc", "musc.cu", include_str!("../../cuda/musc.cu")),
    ("patchcore", "patchcore.cu", include_str!("../../cuda/patchcore.cu")),
    ("tsetlin", "tsetlin.cu", include_str!("../../cuda/tsetlin.cu")),
];

/// The CUDA source of one family, with `#line` markers so compiler errors name the real file.
#[pyfunction(name = "cuda_source")]
fn py_cuda_source(family: &str) -> PyResult<String> {
    let find = |name: &str| SOURCES.iter().find(|(f, _, _)| *f == name);
    let (_, file, body) = find(family)
        .ok_or_else(|| PyKeyError::new_err(format!("no CUDA source for family {family:?}")))?;
    let mut out = String::new();
    if family != "common" {
        if let Some((_, cfile, cbody)) = find("common") {
            out.push_str(&format!("#line 1 \"{cfile}\"\n{cbody}\n"));
        }
    }
    out.push_str(&format!("#line 1 \"{file}\"\n{body}\n"));
    Ok(out)
}

/// The families that have CUDA kernels.
#[pyfunction(name = "cuda_families")]
fn py_cuda_families() -> Vec<&'static str> {
    SOURCES
        .iter()
        .map(|(f, _, _)| *f)
        .filter(|f| *f != "common")
        .collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_cuda_source, m)?)?;
    m.add_function(wrap_pyfunction!(py_cuda_families, m)?)?;
    Ok(())
}
