//! One error type for every kernel; `py/errors.rs` maps it to Python exceptions in one place.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum CoreError {
    /// A caller-supplied argument is unusable (maps to ValueError).
    InvalidArgument(String),
    /// A covariance (or another matrix) cannot be factorised (maps to FastcoreError subclass).
    Singular(String),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::InvalidArgument(msg) | CoreError::Singular(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for CoreError {}

pub type CoreResult<T> = Result<T, CoreError>;

pub fn invalid<T>(msg: impl Into<String>) -> CoreResult<T> {
    Err(CoreError::InvalidArgument(msg.into()))
}
