//! Deltas: a merge patch restated as the JSON Patch that makes the same change, and a run of
//! JSON Patches applied to a document in one pass.
//!
//! A context is stored as a base document and a log of the JSON Patches written since
//! (`fastctx.registry`). Every node that brings a copy up to date, and the writer itself,
//! computes a version's document with `apply_patches`: parse once, apply each patch, serialize
//! once, so that every node holds the same bytes for the same version, and a reader catching
//! up on many small patches pays for one parse of the document, not one per patch.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use serde_json::{Map, Value};

use crate::errors::Error;
use crate::gil::maybe_detach;
use crate::json::{parse, serialize};
use crate::merge::merge_with_json_patch;
use crate::patch::apply;

/// `key` as one RFC 6901 reference token.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// `patch` with its null members dropped, at every depth: what RFC 7386 makes of it when
/// the target has nothing there.
fn without_nulls(patch: &Value) -> Value {
    match patch {
        Value::Object(members) => Value::Object(
            members
                .iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(key, value)| (key.clone(), without_nulls(value)))
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

fn operation(op: &str, path: &str, value: Option<Value>) -> Value {
    let mut members = Map::new();
    members.insert("op".to_owned(), Value::String(op.to_owned()));
    members.insert("path".to_owned(), Value::String(path.to_owned()));
    if let Some(value) = value {
        members.insert("value".to_owned(), value);
    }
    Value::Object(members)
}

/// The operations that make `target`, found at `path`, what the merge patch `patch` makes it.
fn merge_operations(target: &Value, patch: &Value, path: &str, ops: &mut Vec<Value>) {
    let (Value::Object(members), Value::Object(current)) = (patch, target) else {
        // Not both objects: the patch (nulls dropped) replaces the target whole.
        ops.push(operation("replace", path, Some(without_nulls(patch))));
        return;
    };
    for (key, value) in members {
        let child = format!("{path}/{}", escape(key));
        match (current.get(key), value) {
            (None, Value::Null) => {}
            (Some(_), Value::Null) => ops.push(operation("remove", &child, None)),
            (Some(inner @ Value::Object(_)), Value::Object(_)) => {
                merge_operations(inner, value, &child, ops);
            }
            (Some(_), _) => ops.push(operation("replace", &child, Some(without_nulls(value)))),
            (None, _) => ops.push(operation("add", &child, Some(without_nulls(value)))),
        }
    }
}

/// The RFC 6902 JSON Patch that makes the change the RFC 7386 merge patch makes to
/// `document`, and the document it makes: (patch, result), both compact JSON.
///
/// Made over the bytes in one pass where that gives the bytes a parse would
/// (`merge::merge_with_json_patch`), from parsed values otherwise.
pub fn merge_as_json_patch_bytes(
    document: &[u8],
    merge_patch: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    match merge_with_json_patch(document, merge_patch)? {
        Some(made) => Ok(made),
        None => merge_as_json_patch_parsed(document, merge_patch),
    }
}

fn merge_as_json_patch_parsed(
    document: &[u8],
    merge_patch: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let mut doc = parse(document, "document")?;
    let merge = parse(merge_patch, "patch")?;
    let mut ops = Vec::new();
    merge_operations(&doc, &merge, "", &mut ops);
    let patch = serialize(&Value::Array(ops));
    apply(&mut doc, document.len(), &patch)?;
    Ok((patch, serialize(&doc)))
}

/// Restate an RFC 7386 merge patch as the RFC 6902 JSON Patch that makes the same change.
#[pyfunction]
fn merge_as_json_patch<'py>(
    py: Python<'py>,
    document: &[u8],
    patch: &[u8],
) -> PyResult<Bound<'py, PyTuple>> {
    let len = document.len() + patch.len();
    let (json_patch, result) =
        maybe_detach(py, len, || merge_as_json_patch_bytes(document, patch))?;
    PyTuple::new(
        py,
        [PyBytes::new(py, &json_patch), PyBytes::new(py, &result)],
    )
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(merge_as_json_patch, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::merge_patch_bytes;

    fn value(text: &[u8]) -> Value {
        serde_json::from_slice(text).unwrap()
    }

    /// The restated patch makes what the merge patch makes, and says it in JSON Patch.
    fn check(doc: &str, merge: &str, expected_patch: &str) {
        let (patch, result) = merge_as_json_patch_bytes(doc.as_bytes(), merge.as_bytes()).unwrap();
        assert_eq!(
            value(&patch),
            value(expected_patch.as_bytes()),
            "{doc} + {merge}"
        );
        let merged = merge_patch_bytes(doc.as_bytes(), merge.as_bytes()).unwrap();
        assert_eq!(value(&result), value(&merged), "{doc} + {merge}");
        // and member order, as merging keeps it
        assert_eq!(result, serialize(&value(&merged)), "{doc} + {merge}");
        // the same document, made over the bytes or from parsed values, and made by the patch
        let (_, parsed) = merge_as_json_patch_parsed(doc.as_bytes(), merge.as_bytes()).unwrap();
        assert_eq!(result, parsed, "{doc} + {merge}");
        let mut applied = value(doc.as_bytes());
        apply(&mut applied, doc.len(), &patch).unwrap();
        assert_eq!(serialize(&applied), result, "{doc} + {merge}");
    }

    #[test]
    fn restates_over_bytes_as_parsed_values_would() {
        // whitespace, numbers as written, members of the patch in another order than the
        // document's (the operations follow the document's: they touch distinct members)
        check(
            r#"{"a/b":{"m~n":{}}}"#,
            r#"{"a/b":{"m~n":{"~/":1}}}"#,
            r#"[{"op":"add","path":"/a~1b/m~0n/~0~1","value":1}]"#,
        );
        check(
            "{ \"a\" : [ 1 , 2.0 ] ,\n \"b\": {\"c\": 1.50, \"d\": [] }, \"e\": 7 }",
            r#"{"e": null, "b": {"d": {"x": null, "y": -0.0}, "c": 10}, "f": [ 1 ]}"#,
            r#"[{"op":"replace","path":"/b/c","value":10},
                {"op":"replace","path":"/b/d","value":{"y":-0.0}},
                {"op":"remove","path":"/e"},{"op":"add","path":"/f","value":[1]}]"#,
        );
        check(r#"{"a":{"b":1}}"#, r#"{"a":{}}"#, "[]");
        check(
            r#"{"a":1}"#,
            "null",
            r#"[{"op":"replace","path":"","value":null}]"#,
        );
        // where a parse is needed: exponents (the operations then follow the patch's order),
        // escapes, and a repeated key the patch names
        check(
            "{ \"a\" : [ 1 , 2.0E+1 ] ,\n \"b\": {\"c\": 1.50, \"d\": [] }, \"e\": 7 }",
            r#"{"e": null, "b": {"d": {"x": null, "y": -0.0E-0}, "c": 1e400}, "f": [ 1 ]}"#,
            r#"[{"op":"remove","path":"/e"},
                {"op":"replace","path":"/b/d","value":{"y":-0.0e-0}},
                {"op":"replace","path":"/b/c","value":1e+400},{"op":"add","path":"/f","value":[1]}]"#,
        );
        check(
            r#"{"\u0061":1,"b":"\/"}"#,
            r#"{"a":2}"#,
            r#"[{"op":"replace","path":"/a","value":2}]"#,
        );
        check(
            r#"{"a":1,"b":0,"a":2}"#,
            r#"{"a":3}"#,
            r#"[{"op":"replace","path":"/a","value":3}]"#,
        );
        for (doc, merge) in [
            (&br#"{"a":"\n"}"#[..], &br#"{"b":1}"#[..]),
            (br#"{"a":1}"#, br#"{"b":"\u00e9"}"#),
            (br#"{"a":2E1}"#, br#"{"b":1}"#),
            (br#"{"a":1}"#, br#"{"b":1.5e-3}"#),
        ] {
            assert!(merge_with_json_patch(doc, merge).unwrap().is_none());
        }
        // letters after digits inside strings are no exponent
        let (patch, result) = merge_with_json_patch(br#"{"e":"1E","4e":[1]}"#, br#"{"a":"0e0"}"#)
            .unwrap()
            .expect("no escape and no exponent: made over the bytes");
        assert_eq!(patch, br#"[{"op":"add","path":"/a","value":"0e0"}]"#);
        assert_eq!(result, br#"{"e":"1E","4e":[1],"a":"0e0"}"#);
    }

    #[test]
    fn restates_merge_patches() {
        check(
            r#"{"a":1}"#,
            r#"{"b":2}"#,
            r#"[{"op":"add","path":"/b","value":2}]"#,
        );
        check(
            r#"{"a":1,"b":2}"#,
            r#"{"a":null}"#,
            r#"[{"op":"remove","path":"/a"}]"#,
        );
        check(r#"{"a":1}"#, r#"{"z":null}"#, "[]");
        check(
            r#"{"a":1}"#,
            r#"{"a":[1]}"#,
            r#"[{"op":"replace","path":"/a","value":[1]}]"#,
        );
        check(
            r#"{"a":{"x":1,"y":2}}"#,
            r#"{"a":{"y":null,"z":{"q":null,"r":1}}}"#,
            r#"[{"op":"remove","path":"/a/y"},{"op":"add","path":"/a/z","value":{"r":1}}]"#,
        );
        check(
            r#"{"a":5}"#,
            r#"{"a":{"b":null,"c":1}}"#,
            r#"[{"op":"replace","path":"/a","value":{"c":1}}]"#,
        );
        check(
            r#"[1,2]"#,
            r#"{"a":1}"#,
            r#"[{"op":"replace","path":"","value":{"a":1}}]"#,
        );
        check(
            r#"{"a":1}"#,
            "7",
            r#"[{"op":"replace","path":"","value":7}]"#,
        );
        check(
            r#"{"a/b":1,"m~n":2}"#,
            r#"{"a/b":null,"m~n":3}"#,
            r#"[{"op":"remove","path":"/a~1b"},{"op":"replace","path":"/m~0n","value":3}]"#,
        );
    }

    #[test]
    fn keeps_numbers_as_written() {
        let (_, result) =
            merge_as_json_patch_bytes(br#"{"a":1.50}"#, br#"{"b":123456789012345678901234567890}"#)
                .unwrap();
        assert_eq!(result, br#"{"a":1.50,"b":123456789012345678901234567890}"#);
    }
}
