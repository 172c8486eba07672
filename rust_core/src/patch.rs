//! RFC 6902 JSON Patch over JSON bytes, and its Python function.
//!
//! A JSON Patch parses into `serde_json::Value` with `preserve_order` (object members keep
//! their order; removals shift, never swap) and `arbitrary_precision` (numbers come out as
//! written), and is applied to a private copy, so a failed operation produces no result at all.

use std::fmt;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::error::Category;

use crate::errors::Error;
use crate::gil::maybe_detach;
use crate::json::{AnyJson, parse, serialize, utf8, validate};
use crate::pointer::{Pointer, array_index, get, get_mut};
use crate::scan::MAX_DEPTH;

/// Nesting of `value` (0 for a scalar), or `None` once it exceeds `limit`.
pub(crate) fn depth_within(value: &Value, limit: usize) -> Option<usize> {
    let deepest = |children: &mut dyn Iterator<Item = &Value>| {
        let limit = limit.checked_sub(1)?;
        let mut deepest = 0;
        for child in children {
            deepest = deepest.max(depth_within(child, limit)?);
        }
        Some(deepest + 1)
    };
    match value {
        Value::Array(items) => deepest(&mut items.iter()),
        Value::Object(map) => deepest(&mut map.values()),
        _ => Some(0),
    }
}

/// A rough serialized size, to bound how far `copy` operations can grow a document.
fn weight(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(weight).sum::<usize>() + 2,
        Value::Object(map) => {
            map.iter()
                .map(|(k, v)| k.len() + weight(v) + 4)
                .sum::<usize>()
                + 2
        }
        Value::String(s) => s.len() + 2,
        Value::Number(n) => n.as_str().len(),
        _ => 4,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
            Self::Replace => "replace",
            Self::Move => "move",
            Self::Copy => "copy",
            Self::Test => "test",
        }
    }
}

/// One operation of a JSON Patch document, checked for the members its `op` requires.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Operation {
    pub(crate) op: Op,
    pub(crate) path: Pointer,
    /// `from`, for move and copy.
    pub(crate) from: Option<Pointer>,
    /// `value`, for add, replace and test.
    pub(crate) value: Option<Value>,
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OperationVisitor)
    }
}

struct OperationVisitor;

fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), E> {
    match slot.replace(value) {
        // RFC 6902 A.13: a repeated member makes the operation ambiguous, so it is invalid.
        Some(_) => Err(E::custom(format_args!(
            "operation has member {name:?} twice"
        ))),
        None => Ok(()),
    }
}

impl<'de> Visitor<'de> for OperationVisitor {
    type Value = Operation;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON Patch operation object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Operation, A::Error> {
        let (mut op, mut path, mut from, mut value) = (None, None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "op" => once(&mut op, map.next_value::<String>()?, "op")?,
                "path" => once(&mut path, map.next_value::<String>()?, "path")?,
                "from" => once(&mut from, map.next_value::<String>()?, "from")?,
                "value" => once(&mut value, map.next_value::<Value>()?, "value")?,
                // RFC 6902 section 4: members an operation does not define are ignored.
                _ => {
                    map.next_value::<AnyJson>()?;
                }
            }
        }
        let op = match op.as_deref() {
            Some("add") => Op::Add,
            Some("remove") => Op::Remove,
            Some("replace") => Op::Replace,
            Some("move") => Op::Move,
            Some("copy") => Op::Copy,
            Some("test") => Op::Test,
            Some(other) => return Err(de::Error::custom(format_args!("unknown op {other:?}"))),
            None => return Err(de::Error::custom("operation has no \"op\"")),
        };
        let name = op.name();
        let pointer = |text: String| Pointer::parse(&text).map_err(de::Error::custom);
        let path = match path {
            Some(text) => pointer(text)?,
            None => return Err(de::Error::custom(format_args!("{name} has no \"path\""))),
        };
        let from = match (op, from) {
            (Op::Move | Op::Copy, Some(text)) => Some(pointer(text)?),
            (Op::Move | Op::Copy, None) => {
                return Err(de::Error::custom(format_args!("{name} has no \"from\"")));
            }
            _ => None,
        };
        if matches!(op, Op::Add | Op::Replace | Op::Test) && value.is_none() {
            return Err(de::Error::custom(format_args!("{name} has no \"value\"")));
        }
        Ok(Operation {
            op,
            path,
            from,
            value,
        })
    }
}

pub(crate) fn parse_operations(patch: &[u8]) -> Result<Vec<Operation>, Error> {
    let text = utf8(patch).map_err(|err| err.at("patch"))?;
    serde_json::from_str::<Vec<Operation>>(text).map_err(|err| match err.classify() {
        // A shape error can come before a syntax error further on: not JSON wins.
        Category::Data => match validate(patch) {
            Ok(()) => Error::Patch(format!("invalid JSON Patch: {err}")),
            Err(not_json) => not_json.at("patch"),
        },
        _ => Error::Json(format!("patch: {err}")),
    })
}

/// Numbers are equal when their values are (RFC 6902 4.6): 1, 1.0 and 10e-1 all are.
fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    let (a, b) = (a.as_str(), b.as_str());
    a == b || matches!((decimal(a), decimal(b)), (Some(x), Some(y)) if x == y)
}

/// A JSON number as (negative, significant digits, exponent), exact and canonical.
fn decimal(text: &str) -> Option<(bool, String, i64)> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let exponent = exponent.checked_sub(i64::try_from(frac.len()).ok()?)?;
    let significant = digits.trim_start_matches('0');
    let trimmed = significant.trim_end_matches('0');
    if trimmed.is_empty() {
        return Some((false, String::new(), 0)); // zero, whatever its sign
    }
    let shift = i64::try_from(significant.len() - trimmed.len()).ok()?;
    Some((negative, trimmed.to_owned(), exponent.checked_add(shift)?))
}

/// Deep equality as RFC 6902 `test` defines it: member order does not matter.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| json_equal(x, y)))
        }
        _ => a == b,
    }
}

/// The `add` operation: RFC 6902 section 4.1.
fn add(doc: &mut Value, path: &Pointer, value: Value) -> Result<(), String> {
    if depth_within(&value, MAX_DEPTH.saturating_sub(path.len())).is_none() {
        return Err(format!(
            "the result would nest deeper than {MAX_DEPTH} levels"
        ));
    }
    let Some((parent, last)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent)? {
        Value::Object(map) => {
            map.insert(last.to_owned(), value);
        }
        Value::Array(items) => {
            let index = array_index(last, items.len(), true)?;
            items.insert(index, value);
        }
        _ => return Err("the parent of the target is not an object or array".to_owned()),
    }
    Ok(())
}

/// The `remove` operation (RFC 6902 section 4.2); returns the removed value.
fn remove(doc: &mut Value, path: &Pointer) -> Result<Value, String> {
    let Some((parent, last)) = path.split_last() else {
        return Err("cannot remove the whole document".to_owned());
    };
    match get_mut(doc, parent)? {
        Value::Object(map) => map
            .shift_remove(last)
            .ok_or_else(|| format!("no member {last:?}")),
        Value::Array(items) => Ok(items.remove(array_index(last, items.len(), false)?)),
        _ => Err("the parent of the target is not an object or array".to_owned()),
    }
}

/// Applies JSON Patch operations in order to `doc`; `copy_budget` caps the weight copies add.
struct Patcher {
    copy_budget: usize,
}

impl Patcher {
    fn apply(&mut self, doc: &mut Value, operation: Operation) -> Result<(), Error> {
        let Operation {
            op,
            path,
            from,
            value,
        } = operation;
        let invalid = |msg: String| Error::Patch(format!("{} {path}: {msg}", op.name()));
        match (op, from, value) {
            (Op::Add, _, Some(value)) => add(doc, &path, value).map_err(invalid),
            (Op::Remove, _, _) => remove(doc, &path).map(drop).map_err(invalid),
            (Op::Replace, _, Some(value)) => {
                if depth_within(&value, MAX_DEPTH.saturating_sub(path.len())).is_none() {
                    return Err(invalid(format!(
                        "the result would nest deeper than {MAX_DEPTH}"
                    )));
                }
                *get_mut(doc, path.tokens()).map_err(invalid)? = value;
                Ok(())
            }
            (Op::Move, Some(from), _) => {
                if from.is_proper_prefix_of(&path) {
                    return Err(invalid(format!("cannot move {from} into its own child")));
                }
                if from == path {
                    return get(doc, from.tokens())
                        .map(drop)
                        .map_err(|msg| invalid(format!("{from}: {msg}")));
                }
                let value = remove(doc, &from).map_err(|msg| invalid(format!("{from}: {msg}")))?;
                add(doc, &path, value).map_err(invalid)
            }
            (Op::Copy, Some(from), _) => {
                let value =
                    get(doc, from.tokens()).map_err(|msg| invalid(format!("{from}: {msg}")))?;
                let cost = weight(value);
                if cost > self.copy_budget {
                    return Err(invalid("copies would grow the document too far".to_owned()));
                }
                self.copy_budget -= cost;
                let value = value.clone();
                add(doc, &path, value).map_err(invalid)
            }
            (Op::Test, _, Some(expected)) => match get(doc, path.tokens()) {
                Ok(actual) if json_equal(actual, &expected) => Ok(()),
                Ok(actual) => Err(Error::TestFailed(format!(
                    "test {path}: expected {expected}, found {actual}"
                ))),
                Err(msg) => Err(Error::TestFailed(format!("test {path}: {msg}"))),
            },
            _ => unreachable!("Operation's deserializer requires the members each op needs"),
        }
    }
}

/// Applies the JSON Patch `patch` to `doc`, a document of about `size` bytes serialized;
/// on an error `doc` may be half-patched, so callers patch a copy they can drop.
pub fn apply(doc: &mut Value, size: usize, patch: &[u8]) -> Result<(), Error> {
    let operations = parse_operations(patch)?;
    // Copies may add at most about as much as the inputs plus 1 MiB: enough for any honest
    // patch, and no way to double a document with every operation.
    let mut patcher = Patcher {
        copy_budget: size + patch.len() + (1 << 20),
    };
    for (index, operation) in operations.into_iter().enumerate() {
        patcher
            .apply(doc, operation)
            .map_err(|err| err.at(format_args!("operation {index}")))?;
    }
    Ok(())
}

/// JSON Patch over bytes: the result as compact JSON.
pub fn json_patch_bytes(document: &[u8], patch: &[u8]) -> Result<Vec<u8>, Error> {
    let mut doc = parse(document, "document")?;
    apply(&mut doc, document.len(), patch)?;
    Ok(serialize(&doc))
}

/// Apply an RFC 6902 JSON Patch atomically; returns the result as compact JSON bytes.
#[pyfunction]
fn json_patch<'py>(
    py: Python<'py>,
    document: &[u8],
    patch: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let len = document.len() + patch.len();
    let out = maybe_detach(py, len, || json_patch_bytes(document, patch))?;
    Ok(PyBytes::new(py, &out))
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(json_patch, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patched(doc: &str, patch: &str) -> Result<String, Error> {
        json_patch_bytes(doc.as_bytes(), patch.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn numbers_compare_by_value() {
        for (a, b) in [
            ("1", "1.0"),
            ("1", "10e-1"),
            ("100", "1e2"),
            ("0", "-0.0"),
            ("1.5", "15E-1"),
        ] {
            assert_eq!(decimal(a), decimal(b), "{a} {b}");
        }
        for (a, b) in [("1", "-1"), ("1", "1.0000000000000000000001"), ("10", "1")] {
            assert_ne!(decimal(a), decimal(b), "{a} {b}");
        }
        let doc = r#"{"n":1.0,"m":[1,{"x":2}]}"#;
        assert!(patched(doc, r#"[{"op":"test","path":"/n","value":1}]"#).is_ok());
        assert!(
            patched(
                doc,
                r#"[{"op":"test","path":"","value":{"m":[1e0,{"x":20e-1}],"n":1}}]"#
            )
            .is_ok()
        );
        let err = patched(doc, r#"[{"op":"test","path":"/m/0","value":"1"}]"#).unwrap_err();
        assert!(matches!(err, Error::TestFailed(_)));
    }

    #[test]
    fn operations_parse_strictly() {
        let invalid = [
            r#"{"op":"add","path":"/a","value":1}"#,
            r#"[1]"#,
            r#"[{"path":"/a"}]"#,
            r#"[{"op":"jump","path":"/a"}]"#,
            r#"[{"op":"add","value":1}]"#,
            r#"[{"op":"add","path":"/a"}]"#,
            r#"[{"op":"move","path":"/a"}]"#,
            r#"[{"op":"copy","path":"/a"}]"#,
            r#"[{"op":"remove","path":"a"}]"#,
            r#"[{"op":"remove","path":1}]"#,
            r#"[{"op":"add","path":"/a","value":1,"op":"remove"}]"#,
        ];
        for patch in invalid {
            let err = patched("{}", patch).unwrap_err();
            assert!(matches!(err, Error::Patch(_)), "{patch}: {err:?}");
        }
        for not_json in [
            r#"{"op":"add",]"#,
            "[",
            "[1] [2]",
            r#"[{"op":"x","y":"\ud800"}]"#,
        ] {
            let err = patched("{}", not_json).unwrap_err();
            assert!(matches!(err, Error::Json(_)), "{not_json}: {err:?}");
        }
        let ok = patched(
            "{}",
            r#"[{"op":"add","path":"/a","value":null,"xyz":[1,{"a":2}]}]"#,
        );
        assert_eq!(ok.unwrap(), r#"{"a":null}"#);
    }

    #[test]
    fn operations_apply() {
        let doc = r#"{"a":{"b":[1,2,3]},"c":"d"}"#;
        let cases = [
            (
                r#"[{"op":"add","path":"/a/b/-","value":4}]"#,
                r#"{"a":{"b":[1,2,3,4]},"c":"d"}"#,
            ),
            (
                r#"[{"op":"add","path":"/a/b/0","value":0}]"#,
                r#"{"a":{"b":[0,1,2,3]},"c":"d"}"#,
            ),
            (r#"[{"op":"add","path":"","value":[]}]"#, r#"[]"#),
            (
                r#"[{"op":"remove","path":"/a/b/1"}]"#,
                r#"{"a":{"b":[1,3]},"c":"d"}"#,
            ),
            (
                r#"[{"op":"replace","path":"/a","value":1}]"#,
                r#"{"a":1,"c":"d"}"#,
            ),
            (
                r#"[{"op":"move","from":"/a","path":"/z"}]"#,
                r#"{"c":"d","z":{"b":[1,2,3]}}"#,
            ),
            (r#"[{"op":"move","from":"/a","path":"/a"}]"#, doc),
            (
                r#"[{"op":"move","from":"/a/b/0","path":"/a/b/-"}]"#,
                r#"{"a":{"b":[2,3,1]},"c":"d"}"#,
            ),
            (
                r#"[{"op":"copy","from":"/a/b","path":"/a/b/1"}]"#,
                r#"{"a":{"b":[1,[1,2,3],2,3]},"c":"d"}"#,
            ),
            (
                r#"[{"op":"add","path":"/c","value":"e"}]"#,
                r#"{"a":{"b":[1,2,3]},"c":"e"}"#,
            ),
        ];
        for (patch, want) in cases {
            assert_eq!(patched(doc, patch).unwrap(), want, "{patch}");
        }
        let failing = [
            r#"[{"op":"add","path":"/x/y","value":1}]"#,
            r#"[{"op":"add","path":"/a/b/4","value":1}]"#,
            r#"[{"op":"add","path":"/c/x","value":1}]"#,
            r#"[{"op":"remove","path":"/x"}]"#,
            r#"[{"op":"remove","path":""}]"#,
            r#"[{"op":"remove","path":"/a/b/-"}]"#,
            r#"[{"op":"replace","path":"/x","value":1}]"#,
            r#"[{"op":"move","from":"/a","path":"/a/x"}]"#,
            r#"[{"op":"move","from":"/x","path":"/y"}]"#,
            r#"[{"op":"copy","from":"/x","path":"/y"}]"#,
            r#"[{"op":"add","path":"/z","value":1},{"op":"remove","path":"/nope"}]"#,
        ];
        for patch in failing {
            let err = patched(doc, patch).unwrap_err();
            assert!(matches!(err, Error::Patch(_)), "{patch}: {err:?}");
        }
        let err = patched(doc, r#"[{"op":"test","path":"/x","value":1}]"#).unwrap_err();
        assert!(matches!(err, Error::TestFailed(_)));
    }

    #[test]
    fn bounds_depth_and_copy_growth() {
        // the deepest value a patch can carry: the patch's own array and op object are 2 levels
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH - 2), "]".repeat(MAX_DEPTH - 2));
        let add = |path: &str| format!(r#"[{{"op":"add","path":"{path}","value":{deep}}}]"#);
        let out = patched(r#"{"a":{}}"#, &add("/a/b")).unwrap();
        assert!(validate(out.as_bytes()).is_ok());
        let err = patched(r#"{"a":{"b":{}}}"#, &add("/a/b/c")).unwrap_err();
        assert!(
            matches!(err, Error::Patch(ref msg) if msg.contains("deeper")),
            "{err:?}"
        );
        let replace = format!(r#"[{{"op":"replace","path":"/a/b/c","value":{deep}}}]"#);
        assert!(patched(r#"{"a":{"b":{"c":1}}}"#, &replace).is_err());
        let copy = r#"[{"op":"copy","from":"/a","path":"/a/b/c"}]"#;
        assert!(patched(&format!(r#"{{"a":{{"b":{{}},"x":{deep}}}}}"#), copy).is_err());

        let doubling: Vec<String> = (0..64)
            .map(|i| format!(r#"{{"op":"copy","from":"","path":"/x{i}"}}"#))
            .collect();
        let doubling = doubling.join(",");
        let err = patched(r#"{"k":"0123456789"}"#, &format!("[{doubling}]")).unwrap_err();
        assert!(
            matches!(err, Error::Patch(ref msg) if msg.contains("too far")),
            "{err:?}"
        );
    }
}
