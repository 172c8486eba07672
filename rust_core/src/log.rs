//! A context's patch log, read (the layout is `fastctx.backends.patchlog`'s): every fold, and
//! every node that reads a context it does not hold, goes through all its entries, which may
//! be thousands, so they are cut out here rather than one `struct.unpack` at a time.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// An entry's fixed part: u32 patch length, u64 version, u64 updated_at (little endian).
const ENTRY_HEAD: usize = 20;

/// One entry of a log: the version its patch made, when, and the patch as stored.
#[pyclass(frozen, get_all, module = "fastctx._core")]
pub struct LogEntry {
    version: u64,
    updated_at: u64,
    patch: Py<PyBytes>,
}

#[pymethods]
impl LogEntry {
    fn __repr__(&self, py: Python<'_>) -> String {
        let size = self.patch.bind(py).as_bytes().len();
        format!("LogEntry(version={}, size={size})", self.version)
    }
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"))
}

/// The positions of the entries of `data` from `offset` on: (version, updated_at, patch).
pub fn entry_spans(
    data: &[u8],
    mut offset: usize,
) -> Result<Vec<(u64, u64, usize, usize)>, &'static str> {
    let mut spans = Vec::new();
    while offset < data.len() {
        if offset + ENTRY_HEAD > data.len() {
            return Err("truncated entry");
        }
        let length = u32::from_le_bytes(data[offset..offset + 4].try_into().expect("4 bytes"));
        let (version, updated_at) = (u64_at(data, offset + 4), u64_at(data, offset + 12));
        offset += ENTRY_HEAD;
        let end = offset
            .checked_add(length as usize)
            .filter(|&end| end <= data.len())
            .ok_or("truncated patch")?;
        spans.push((version, updated_at, offset, end));
        offset = end;
    }
    Ok(spans)
}

/// The entries of `data` from `offset` on (a whole log: from its header's end); ValueError
/// naming what is wrong when they are cut short.
#[pyfunction]
#[pyo3(signature = (data, offset = 0))]
fn log_entries(py: Python<'_>, data: &[u8], offset: usize) -> PyResult<Vec<LogEntry>> {
    let spans = entry_spans(data, offset).map_err(PyValueError::new_err)?;
    Ok(spans
        .into_iter()
        .map(|(version, updated_at, start, end)| LogEntry {
            version,
            updated_at,
            patch: PyBytes::new(py, &data[start..end]).unbind(),
        })
        .collect())
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LogEntry>()?;
    m.add_function(wrap_pyfunction!(log_entries, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64, updated_at: u64, patch: &[u8]) -> Vec<u8> {
        let mut out = (patch.len() as u32).to_le_bytes().to_vec();
        out.extend(version.to_le_bytes());
        out.extend(updated_at.to_le_bytes());
        out.extend(patch);
        out
    }

    #[test]
    fn reads_entries_in_order() {
        let mut data = b"FL\x01\x01\0\0\0\0\0\0\0".to_vec();
        data.extend(entry(2, 10, b"[]"));
        data.extend(entry(3, 11, b""));
        data.extend(entry(4, 12, br#"[{"op":"remove","path":"/a"}]"#));
        let spans = entry_spans(&data, 11).unwrap();
        let versions: Vec<_> = spans.iter().map(|span| (span.0, span.1)).collect();
        assert_eq!(versions, [(2, 10), (3, 11), (4, 12)]);
        let (_, _, start, end) = spans[2];
        assert_eq!(&data[start..end], br#"[{"op":"remove","path":"/a"}]"#);
        assert_eq!(entry_spans(&data, data.len()).unwrap(), []);
    }

    #[test]
    fn refuses_every_truncation() {
        let data = [entry(2, 10, b"[1,2,3]"), entry(3, 11, b"[4]")].concat();
        for cut in 1..data.len() {
            if cut == ENTRY_HEAD + 7 {
                continue; // between the two entries: a whole log of one
            }
            let found = entry_spans(&data[..cut], 0);
            assert!(found.is_err(), "{cut}: {found:?}");
        }
        let mut long = entry(2, 10, b"[]");
        long[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(entry_spans(&long, 0), Err("truncated patch"));
    }
}
