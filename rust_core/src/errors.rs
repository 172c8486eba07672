//! The one error type of `fastctx._core`, and the Python exception each kind of it becomes.

use std::fmt;

use pyo3::exceptions::{PyLookupError, PyOSError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    fastctx._core,
    FrameError,
    PyValueError,
    "A stored frame is truncated, corrupted or of an unknown format."
);
pyo3::create_exception!(
    fastctx._core,
    JsonError,
    PyValueError,
    "The input is not one valid JSON value in UTF-8 (or nests deeper than 127 levels)."
);
pyo3::create_exception!(
    fastctx._core,
    PatchError,
    PyValueError,
    "A patch document is invalid, or cannot be applied to the document."
);
pyo3::create_exception!(
    fastctx._core,
    PatchTestFailed,
    PatchError,
    "A JSON Patch `test` operation found a different value, or no value, at its path."
);

pyo3::create_exception!(
    fastctx._core,
    PathNotFound,
    PyLookupError,
    "A JSON Pointer names no value in the document."
);
pyo3::create_exception!(
    fastctx._core,
    SelectError,
    PyValueError,
    "A JSON Pointer is malformed, or a slice is asked of a value that is not an array."
);

/// Why a call failed. Each kind becomes one Python exception, with the message as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A stored frame is truncated, corrupted or of an unknown format: `FrameError`.
    Frame(String),
    /// An argument cannot be stored as given (a payload over the frame limit, a bad session
    /// id): `ValueError`.
    Argument(String),
    /// An input is not one JSON value in UTF-8, or nests too deep: `JsonError`.
    Json(String),
    /// A patch is malformed, or one of its operations cannot be applied: `PatchError`.
    Patch(String),
    /// A JSON Patch `test` operation failed: `PatchTestFailed`.
    TestFailed(String),
    /// A JSON Pointer names nothing in the document: `PathNotFound`.
    Missing(String),
    /// A JSON Pointer is malformed, or a slice's target is not an array: `SelectError`.
    Select(String),
    /// The OS random source failed: `OSError`.
    Os(String),
}

impl Error {
    pub fn message(&self) -> &str {
        match self {
            Self::Frame(msg)
            | Self::Argument(msg)
            | Self::Json(msg)
            | Self::Patch(msg)
            | Self::TestFailed(msg)
            | Self::Missing(msg)
            | Self::Select(msg)
            | Self::Os(msg) => msg,
        }
    }

    /// The same kind of error, its message prefixed with where it happened: "{place}: ...".
    pub fn at(self, place: impl fmt::Display) -> Self {
        let within = |msg: String| format!("{place}: {msg}");
        match self {
            Self::Frame(msg) => Self::Frame(within(msg)),
            Self::Argument(msg) => Self::Argument(within(msg)),
            Self::Json(msg) => Self::Json(within(msg)),
            Self::Patch(msg) => Self::Patch(within(msg)),
            Self::TestFailed(msg) => Self::TestFailed(within(msg)),
            Self::Missing(msg) => Self::Missing(within(msg)),
            Self::Select(msg) => Self::Select(within(msg)),
            Self::Os(msg) => Self::Os(within(msg)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

/// The one place where a Rust error becomes a Python exception.
impl From<Error> for PyErr {
    fn from(err: Error) -> Self {
        match err {
            Error::Frame(msg) => FrameError::new_err(msg),
            Error::Argument(msg) => PyValueError::new_err(msg),
            Error::Json(msg) => JsonError::new_err(msg),
            Error::Patch(msg) => PatchError::new_err(msg),
            Error::TestFailed(msg) => PatchTestFailed::new_err(msg),
            Error::Missing(msg) => PathNotFound::new_err(msg),
            Error::Select(msg) => SelectError::new_err(msg),
            Error::Os(msg) => PyOSError::new_err(msg),
        }
    }
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("FrameError", py.get_type::<FrameError>())?;
    m.add("JsonError", py.get_type::<JsonError>())?;
    m.add("PatchError", py.get_type::<PatchError>())?;
    m.add("PatchTestFailed", py.get_type::<PatchTestFailed>())?;
    m.add("PathNotFound", py.get_type::<PathNotFound>())?;
    m.add("SelectError", py.get_type::<SelectError>())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_prefix_the_message_and_keep_the_kind() {
        let err = Error::Patch("no member \"a\"".to_owned()).at("operation 2");
        assert_eq!(err, Error::Patch("operation 2: no member \"a\"".to_owned()));
        assert_eq!(err.to_string(), "operation 2: no member \"a\"");
        let err = Error::Json("EOF".to_owned()).at("patch").at("outer");
        assert_eq!(err.message(), "outer: patch: EOF");
    }
}
