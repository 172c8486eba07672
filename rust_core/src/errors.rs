//! The exceptions `fastctx._core` raises, defined once and registered on the module.

use pyo3::exceptions::PyValueError;
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
    "The input is not one valid JSON value in UTF-8 (or nests deeper than 128 levels)."
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
    "A JSON Patch `test` operation found a value different from the expected one."
);

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("FrameError", py.get_type::<FrameError>())?;
    m.add("JsonError", py.get_type::<JsonError>())?;
    m.add("PatchError", py.get_type::<PatchError>())?;
    m.add("PatchTestFailed", py.get_type::<PatchTestFailed>())?;
    Ok(())
}
