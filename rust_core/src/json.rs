//! JSON over bytes: validation (one value, UTF-8, no trailing data, nesting at most 127
//! levels), and the parsing into a `serde_json::Value` and writing back that `merge` and `patch`
//! share.

use std::fmt;

use pyo3::prelude::*;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::errors::Error;
use crate::gil::maybe_detach;

/// Any JSON value, parsed and dropped; unlike `serde::de::IgnoredAny` it decodes every string,
/// so it rejects exactly what parsing into a `serde_json::Value` rejects (lone surrogates too).
pub struct AnyJson;

impl<'de> Deserialize<'de> for AnyJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyJsonVisitor)
    }
}

struct AnyJsonVisitor;

impl<'de> Visitor<'de> for AnyJsonVisitor {
    type Value = AnyJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_i64<E>(self, _: i64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_u64<E>(self, _: u64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_f64<E>(self, _: f64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_str<E>(self, _: &str) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_unit<E>(self) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyJson, A::Error> {
        while seq.next_element::<AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyJson, A::Error> {
        while map.next_entry::<AnyJson, AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }
}

/// `data` as text, or a JSON error saying why it is not UTF-8.
pub fn utf8(data: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(data).map_err(|err| Error::Json(format!("invalid UTF-8: {err}")))
}

/// Checks that `data` is one JSON value; the error says where it is not.
pub fn validate(data: &[u8]) -> Result<(), Error> {
    serde_json::from_str::<AnyJson>(utf8(data)?).map_err(|err| Error::Json(err.to_string()))?;
    Ok(())
}

/// Parses `data`, named `what` in the error, into a value.
pub fn parse(data: &[u8], what: &str) -> Result<Value, Error> {
    let text = utf8(data).map_err(|err| err.at(what))?;
    serde_json::from_str(text).map_err(|err| Error::Json(format!("{what}: {err}")))
}

/// `value` as compact JSON.
pub fn serialize(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a Value with string keys always serializes")
}

/// Raise JsonError unless `data` is one JSON value in UTF-8 with nothing after it.
#[pyfunction]
fn validate_json(py: Python<'_>, data: &[u8]) -> PyResult<()> {
    Ok(maybe_detach(py, data.len(), || validate(data))?)
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(validate_json, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_json_values() {
        for ok in [
            &b"{}"[..],
            b"[]",
            b"null",
            b"0",
            b"-1.5e300",
            b"1e400",
            b"123456789012345678901234567890",
            b" \"\\u00e9\xc3\xa9\" ",
            b"{\"a\": [1, {\"b\": null}], \"a\": true}",
        ] {
            assert!(validate(ok).is_ok(), "{:?}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn rejects_non_json() {
        for bad in [
            &b""[..],
            b" ",
            b"{",
            b"{} {}",
            b"[1,]",
            b"{'a': 1}",
            b"NaN",
            b"01",
            b"\"\xff\"",
            b"\"\xc3\"",
            b"\"a\x01\"",
            b"\"\\x\"",
            b"\"\\ud800\"",
            b"\"\\udc00x\"",
        ] {
            assert!(validate(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn limits_depth() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(validate(nested(127).as_bytes()).is_ok());
        assert!(validate(nested(10_000).as_bytes()).is_err());
    }
}
