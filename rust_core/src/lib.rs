//! `fastctx._core`: the Context Serializer and the in-process cache, for the Python package.

use pyo3::prelude::*;

pub mod cache;
pub mod delta;
pub mod document;
pub mod errors;
pub mod frame;
pub mod gil;
pub mod json;
pub mod log;
pub mod merge;
pub mod patch;
pub mod pointer;
pub mod scan;
pub mod seal;
pub mod select;
pub mod token;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // setattr, not add: `__version__` does not belong in `__all__`.
    m.setattr("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::init(m)?;
    token::init(m)?;
    json::init(m)?;
    log::init(m)?;
    frame::init(m)?;
    merge::init(m)?;
    patch::init(m)?;
    delta::init(m)?;
    document::init(m)?;
    select::init(m)?;
    cache::init(m)?;
    seal::init(m)?;
    Ok(())
}
