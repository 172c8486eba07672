//! Documents that grow at the end of an array, and the patches of a context's log applied to
//! a document.
//!
//! A conversation grows by one message a turn: a JSON Patch that only appends to one array
//! (`add` at `<array>/-`). Applied to a large document, such a patch is spliced into its bytes
//! before the array's closing bracket, and the document is not parsed. Past `ROPE_MIN_BYTES`
//! the splice itself is put off: the result is a `Document`, the base bytes and the items
//! appended since, which makes the next append and a read of the array's last elements cost
//! what they append and read, not the document's size. Its bytes are made once, when asked.
//!
//! Every other patch is applied to the parsed document, which is then written compactly. Each
//! node applies the patches of a context's log with these same rules, in the same order, so
//! every node holds the same bytes for the same version.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde_json::Value;

use crate::errors::Error;
use crate::gil::maybe_detach;
use crate::json::{parse, serialize};
use crate::patch::{Op, apply, depth_within, parse_operations};
use crate::pointer::{Pointer, array_index};
use crate::scan::MAX_DEPTH;
use crate::select::{Bounds, array_at, select_bytes, slice_range};

/// Documents at least this long keep their appended items apart from their bytes.
pub const ROPE_MIN_BYTES: usize = 64 * 1024;

/// An array's pointer (its reference tokens) and items appended to it, as compact JSON.
pub type Appended = (Vec<String>, Vec<Arc<[u8]>>);

/// The items a JSON Patch appends, when all it does is append them to one array: the array's
/// pointer and each item as compact JSON. None for any other patch, malformed ones included
/// (they take the general way, which says what is wrong).
pub fn appended_items(patch: &[u8]) -> Option<Appended> {
    let operations = parse_operations(patch).ok()?;
    let mut array: Option<Vec<String>> = None;
    let mut items = Vec::with_capacity(operations.len());
    for operation in operations {
        let (parent, last) = operation.path.split_last()?;
        if operation.op != Op::Add || last != "-" {
            return None;
        }
        match &array {
            Some(tokens) if tokens.as_slice() != parent => return None,
            Some(_) => {}
            None => array = Some(parent.to_vec()),
        }
        let value = operation.value?;
        // As deep as the general way allows (the item sits one level inside the array).
        depth_within(&value, MAX_DEPTH.checked_sub(parent.len() + 1)?)?;
        items.push(Arc::from(serialize(&value)));
    }
    Some((array?, items))
}

/// Items appended to the array at `pointer` of a base document.
#[derive(Clone)]
struct Tail {
    pointer: Vec<String>,
    /// Where the array's closing bracket is in the base.
    close: usize,
    /// The base array's elements, as ranges of the base.
    elements: Arc<Vec<Range<usize>>>,
    items: Vec<Arc<[u8]>>,
    /// The bytes the items add, separators included.
    added: usize,
}

impl Tail {
    fn new(pointer: Vec<String>, close: usize, elements: Vec<Range<usize>>) -> Self {
        Self {
            pointer,
            close,
            elements: Arc::new(elements),
            items: Vec::new(),
            added: 0,
        }
    }

    fn push(&mut self, items: Vec<Arc<[u8]>>) {
        for item in items {
            let separated = !(self.elements.is_empty() && self.items.is_empty());
            self.added += item.len() + usize::from(separated);
            self.items.push(item);
        }
    }

    fn len(&self) -> usize {
        self.elements.len() + self.items.len()
    }

    /// The whole document: the base with the items spliced in before the bracket.
    fn splice(&self, base: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(base.len() + self.added);
        out.extend_from_slice(&base[..self.close]);
        for (at, item) in self.items.iter().enumerate() {
            if at > 0 || !self.elements.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(item);
        }
        out.extend_from_slice(&base[self.close..]);
        out
    }

    /// The whole array, as the whole document's bytes have it.
    fn array(&self, base: &[u8]) -> Vec<u8> {
        let start = self.array_start(base);
        let mut out = Vec::with_capacity(self.close + 1 - start + self.added);
        out.extend_from_slice(&base[start..self.close]);
        for (at, item) in self.items.iter().enumerate() {
            if at > 0 || !self.elements.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(item);
        }
        out.push(b']');
        out
    }

    /// Where the array's opening bracket is in the base.
    fn array_start(&self, base: &[u8]) -> usize {
        let before = self
            .elements
            .first()
            .map_or(self.close, |first| first.start);
        base[..before]
            .iter()
            .rposition(|&byte| byte == b'[')
            .expect("an array starts with a bracket")
    }

    /// The array's elements in `range`, each as stored, joined into an array.
    fn elements_in(&self, base: &[u8], range: Range<usize>) -> Vec<u8> {
        let mut out = vec![b'['];
        for (at, index) in range.enumerate() {
            if at > 0 {
                out.push(b',');
            }
            match self.elements.get(index) {
                Some(element) => out.extend_from_slice(&base[element.clone()]),
                None => out.extend_from_slice(&self.items[index - self.elements.len()]),
            }
        }
        out.push(b']');
        out
    }
}

/// A document as base bytes and the items appended to one of its arrays since: its bytes are
/// made when first asked for, and reads of that array need not make them. Immutable.
#[pyclass(frozen, module = "fastctx._core")]
pub struct Document {
    base: Py<PyBytes>,
    tail: Tail,
    bytes: OnceLock<Py<PyBytes>>,
}

#[pymethods]
impl Document {
    fn __len__(&self, py: Python<'_>) -> usize {
        self.base.as_bytes(py).len() + self.tail.added
    }

    /// The document's JSON bytes, made once.
    fn bytes(&self, py: Python<'_>) -> Py<PyBytes> {
        self.bytes
            .get_or_init(|| {
                let base = self.base.as_bytes(py);
                let whole = maybe_detach(py, base.len(), || self.tail.splice(base));
                PyBytes::new(py, &whole).unbind()
            })
            .clone_ref(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Document({} bytes, {} items appended to {})",
            self.__len__(py),
            self.tail.items.len(),
            Pointer::from_tokens(&self.tail.pointer)
        )
    }
}

impl Document {
    /// The value `pointer` names, narrowed by `bounds`: from the base and the items when the
    /// pointer names the array or a place inside it, or a place beside it; from the whole
    /// document's bytes when it names a place that holds the array.
    pub fn select(
        &self,
        py: Python<'_>,
        pointer: &str,
        bounds: Option<Bounds>,
    ) -> Result<Vec<u8>, Error> {
        let parsed = Pointer::parse(pointer).map_err(Error::Select)?;
        let tokens = parsed.tokens();
        let base = self.base.as_bytes(py);
        let tail = &self.tail;
        let whole = |py| -> Result<Vec<u8>, Error> {
            let bytes = self.bytes(py);
            select_bytes(bytes.as_bytes(py), pointer, bounds).map(|cut| cut.into_owned())
        };
        if tokens == tail.pointer.as_slice() {
            let range = slice_range(bounds.unwrap_or((None, None)), tail.len());
            return Ok(match bounds {
                Some(_) => tail.elements_in(base, range),
                None => tail.array(base),
            });
        }
        if tokens.len() > tail.pointer.len() && tokens.starts_with(&tail.pointer) {
            let inner = &tokens[tail.pointer.len() + 1..];
            let element = array_index(&tokens[tail.pointer.len()], tail.len(), false);
            let value: &[u8] = match element {
                Ok(index) if index < tail.elements.len() => &base[tail.elements[index].clone()],
                Ok(index) => &tail.items[index - tail.elements.len()],
                Err(_) => return whole(py), // which says why nothing is there
            };
            let rest = Pointer::from_tokens(inner).to_string();
            return match select_bytes(value, &rest, bounds) {
                Ok(cut) => Ok(cut.into_owned()),
                Err(_) => whole(py), // the same error, with the pointer's whole way in it
            };
        }
        if tail.pointer.starts_with(tokens) {
            return whole(py);
        }
        select_bytes(base, pointer, bounds).map(|cut| cut.into_owned())
    }
}

/// A document as the functions below take and return it.
pub enum Doc {
    Bytes(Py<PyBytes>),
    Rope(Py<Document>),
}

impl<'py> FromPyObject<'_, 'py> for Doc {
    type Error = PyErr;

    fn extract(object: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(bytes) = object.cast::<PyBytes>() {
            return Ok(Self::Bytes(bytes.to_owned().unbind()));
        }
        Ok(Self::Rope(object.cast::<Document>()?.to_owned().unbind()))
    }
}

/// What a run of patches has made so far.
enum State {
    Bytes(Vec<u8>),
    Kept(Py<PyBytes>),
    Rope(Py<PyBytes>, Tail),
    Parsed(Value),
}

/// Applies `patches` in order to `document` (see the module's docs for how). `budget`: the
/// bound on what `copy` operations add, for a patch checked as it is written; None for
/// patches of a log, which passed it when they were written.
pub fn apply_all(
    py: Python<'_>,
    document: Doc,
    patches: &[&[u8]],
    budget: bool,
) -> Result<Doc, Error> {
    let mut state = match document {
        Doc::Bytes(bytes) => State::Kept(bytes),
        Doc::Rope(rope) => {
            let rope = rope.get();
            State::Rope(rope.base.clone_ref(py), rope.tail.clone())
        }
    };
    for (index, patch) in patches.iter().enumerate() {
        let place = |err: Error| {
            if budget {
                err
            } else {
                err.at(format_args!("patch {index}"))
            }
        };
        state = step(py, state, patch, budget).map_err(place)?;
    }
    Ok(match state {
        State::Kept(bytes) => Doc::Bytes(bytes),
        State::Bytes(bytes) => Doc::Bytes(PyBytes::new(py, &bytes).unbind()),
        State::Parsed(value) => Doc::Bytes(PyBytes::new(py, &serialize(&value)).unbind()),
        State::Rope(base, tail) => {
            if base.as_bytes(py).len() < ROPE_MIN_BYTES {
                let whole = tail.splice(base.as_bytes(py));
                Doc::Bytes(PyBytes::new(py, &whole).unbind())
            } else {
                let rope = Document {
                    base,
                    tail,
                    bytes: OnceLock::new(),
                };
                Doc::Rope(Py::new(py, rope).expect("a Document can always be made"))
            }
        }
    })
}

fn step(py: Python<'_>, state: State, patch: &[u8], budget: bool) -> Result<State, Error> {
    if let Some((pointer, items)) = appended_items(patch) {
        let base = match state {
            State::Rope(base, mut tail) if tail.pointer == pointer => {
                tail.push(items);
                return Ok(State::Rope(base, tail));
            }
            State::Rope(base, tail) => tail.splice(base.as_bytes(py)),
            State::Kept(bytes) => bytes.as_bytes(py).to_vec(),
            State::Bytes(bytes) => bytes,
            State::Parsed(value) => serialize(&value),
        };
        if let Some((close, elements)) = array_at(&base, &pointer)? {
            let mut tail = Tail::new(pointer, close, elements);
            tail.push(items);
            return Ok(State::Rope(PyBytes::new(py, &base).unbind(), tail));
        }
        // Not an array there: the general way says why, or appends to an object's "-".
        return general(State::Bytes(base), patch, budget, py);
    }
    general(state, patch, budget, py)
}

fn general(state: State, patch: &[u8], budget: bool, py: Python<'_>) -> Result<State, Error> {
    let (mut value, size) = match state {
        State::Parsed(value) => (value, 0),
        State::Kept(bytes) => (
            parse(bytes.as_bytes(py), "document")?,
            bytes.as_bytes(py).len(),
        ),
        State::Bytes(bytes) => (parse(&bytes, "document")?, bytes.len()),
        State::Rope(base, tail) => {
            let whole = tail.splice(base.as_bytes(py));
            (parse(&whole, "document")?, whole.len())
        }
    };
    apply(
        &mut value,
        if budget { size } else { usize::MAX / 4 },
        patch,
    )?;
    Ok(State::Parsed(value))
}

/// Apply the JSON Patches of a context's log in order (see the module's docs).
#[pyfunction]
fn apply_patches(py: Python<'_>, document: Doc, patches: Vec<Vec<u8>>) -> PyResult<Py<PyAny>> {
    let views: Vec<&[u8]> = patches.iter().map(Vec::as_slice).collect();
    Ok(apply_all(py, document, &views, false)?.into_any())
}

/// Apply one JSON Patch as it is written (see the module's docs).
#[pyfunction]
fn patched(py: Python<'_>, document: Doc, patch: &[u8]) -> PyResult<Py<PyAny>> {
    Ok(apply_all(py, document, &[patch], true)?.into_any())
}

impl Doc {
    fn into_any(self) -> Py<PyAny> {
        match self {
            Self::Bytes(bytes) => bytes.into_any(),
            Self::Rope(rope) => rope.into_any(),
        }
    }
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Document>()?;
    m.add("ROPE_MIN_BYTES", ROPE_MIN_BYTES)?;
    m.add_function(wrap_pyfunction!(apply_patches, m)?)?;
    m.add_function(wrap_pyfunction!(patched, m)?)?;
    Ok(())
}
