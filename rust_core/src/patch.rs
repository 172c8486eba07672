//! JSON patches: RFC 7386 merge patch and RFC 6902 JSON Patch, over JSON bytes.
//!
//! A merge patch walks the document's raw bytes (see `scan`) and rewrites only the members
//! the patch names; everything else is copied as written. A JSON Patch parses into
//! `serde_json::Value` with `preserve_order` (object members keep their order; removals shift,
//! never swap) and `arbitrary_precision` (numbers come out as written), and is applied to a
//! private copy, so a failed operation produces no result at all.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::error::Category;
use serde_json::{Map, Value};

use crate::errors::{JsonError, PatchError, PatchTestFailed};
use crate::json::{AnyJson, maybe_detach, validate};
use crate::pointer::{Pointer, array_index, get, get_mut};
use crate::scan::{ScanError, Scanner, unescape, write_compact};

pub use crate::scan::MAX_DEPTH;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The document or the patch is not JSON.
    NotJson(String),
    /// The patch is malformed, or an operation cannot be applied.
    Invalid(String),
    /// A `test` operation failed.
    TestFailed(String),
}

impl From<Failure> for PyErr {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::NotJson(msg) => JsonError::new_err(msg),
            Failure::Invalid(msg) => PatchError::new_err(msg),
            Failure::TestFailed(msg) => PatchTestFailed::new_err(msg),
        }
    }
}

fn parse(data: &[u8], what: &str) -> Result<Value, Failure> {
    let text = std::str::from_utf8(data)
        .map_err(|err| Failure::NotJson(format!("{what}: invalid UTF-8: {err}")))?;
    serde_json::from_str(text).map_err(|err| Failure::NotJson(format!("{what}: {err}")))
}

fn serialize(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a Value with string keys always serializes")
}

// ---------------------------------------------------------------------------------------------
// RFC 7386 merge patch, over raw bytes
//
// Only the members the patch names are looked at: every other member of the document is
// validated by the scanner and copied as written, minus insignificant whitespace. The patch is
// small and parsed whole, but its values too stay as written.

/// A parsed merge patch: objects as members, every other value as its raw JSON.
enum MergePatch<'a> {
    Null,
    /// An array, string, number or boolean; `spaced` if it has whitespace to strip.
    Raw {
        json: &'a [u8],
        spaced: bool,
    },
    Object(Members<'a>),
}

struct Member<'a> {
    /// The decoded key, to match the document's keys against.
    key: Cow<'a, [u8]>,
    /// The key as written, quotes included.
    raw_key: &'a [u8],
    value: MergePatch<'a>,
}

/// A patch object's members in order; past `INDEX_FROM` members, with a hash index.
#[derive(Default)]
struct Members<'a> {
    list: Vec<Member<'a>>,
    index: Option<HashMap<Cow<'a, [u8]>, usize>>,
}

const INDEX_FROM: usize = 16;

impl<'a> Members<'a> {
    fn find(&self, key: &[u8]) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.list.iter().position(|member| *member.key == *key),
        }
    }

    /// A repeated key keeps its first place and takes the last value, as serde_json's map does.
    fn insert(&mut self, member: Member<'a>) {
        if let Some(at) = self.find(&member.key) {
            self.list[at].value = member.value;
            return;
        }
        if self.index.is_none() && self.list.len() >= INDEX_FROM {
            let index = self.list.iter().enumerate();
            self.index = Some(index.map(|(at, m)| (m.key.clone(), at)).collect());
        }
        if let Some(index) = &mut self.index {
            index.insert(member.key.clone(), self.list.len());
        }
        self.list.push(member);
    }
}

fn key_text(raw_key: &[u8], escaped: bool) -> Cow<'_, [u8]> {
    if escaped {
        Cow::Owned(unescape(raw_key))
    } else {
        Cow::Borrowed(&raw_key[1..raw_key.len() - 1])
    }
}

/// Parses the patch value that starts here, inside `depth` enclosing objects.
fn parse_merge_patch<'a>(
    scanner: &mut Scanner<'a>,
    depth: usize,
) -> Result<MergePatch<'a>, ScanError> {
    match scanner.peek() {
        Some(b'{') => {
            let mut members = Members::default();
            let mut more = scanner.enter_object(depth)?;
            while more {
                let (raw_key, escaped) = scanner.key()?;
                let value = parse_merge_patch(scanner, depth + 1)?;
                let key = key_text(raw_key, escaped);
                members.insert(Member {
                    key,
                    raw_key,
                    value,
                });
                more = scanner.next_member()?;
            }
            Ok(MergePatch::Object(members))
        }
        Some(b'n') => scanner.skip_value(depth).map(|_| MergePatch::Null),
        _ => {
            let start = scanner.pos();
            let spaced = scanner.skip_value(depth)?;
            Ok(MergePatch::Raw {
                json: scanner.since(start),
                spaced,
            })
        }
    }
}

/// Writes `merge(anything but an object, patch)`: the patch without its null members.
fn write_patch(patch: &MergePatch<'_>, out: &mut Vec<u8>) {
    match patch {
        MergePatch::Null => out.extend_from_slice(b"null"),
        MergePatch::Raw { json, spaced } => write_compact(json, *spaced, out),
        MergePatch::Object(members) => {
            out.push(b'{');
            write_members(members, &[], &mut true, out);
            out.push(b'}');
        }
    }
}

/// Writes the members not marked in `seen` (all if it is empty), except nulls.
fn write_members(members: &Members<'_>, seen: &[bool], first: &mut bool, out: &mut Vec<u8>) {
    for (at, member) in members.list.iter().enumerate() {
        if !seen.get(at).copied().unwrap_or(false) && !matches!(member.value, MergePatch::Null) {
            write_key(member.raw_key, first, out);
            write_patch(&member.value, out);
        }
    }
}

fn write_key(raw_key: &[u8], first: &mut bool, out: &mut Vec<u8>) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    out.extend_from_slice(raw_key);
    out.push(b':');
}

/// Why a merge over raw bytes stopped.
enum Stop {
    NotJson(ScanError),
    /// The document repeats a key that the patch names: only a parse can tell which
    /// occurrence counts.
    RepeatedKey,
}

impl From<ScanError> for Stop {
    fn from(err: ScanError) -> Self {
        Self::NotJson(err)
    }
}

/// Writes `merge(the document value that starts here, patch)` for an object patch.
fn merge_object(
    scanner: &mut Scanner<'_>,
    patch: &Members<'_>,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), Stop> {
    if scanner.peek() != Some(b'{') {
        // RFC 7386: a target that is not an object is merged as if it were {}
        scanner.skip_value(depth)?;
        out.push(b'{');
        write_members(patch, &[], &mut true, out);
        out.push(b'}');
        return Ok(());
    }
    let mut seen = vec![false; patch.list.len()];
    let mut first = true;
    out.push(b'{');
    let mut more = scanner.enter_object(depth)?;
    while more {
        let (raw_key, escaped) = scanner.key()?;
        match patch.find(&key_text(raw_key, escaped)) {
            None => {
                let start = scanner.pos();
                let spaced = scanner.skip_value(depth + 1)?;
                write_key(raw_key, &mut first, out);
                write_compact(scanner.since(start), spaced, out);
            }
            Some(at) => {
                if std::mem::replace(&mut seen[at], true) {
                    return Err(Stop::RepeatedKey);
                }
                match &patch.list[at].value {
                    MergePatch::Null => {
                        scanner.skip_value(depth + 1)?;
                    }
                    MergePatch::Object(members) => {
                        write_key(raw_key, &mut first, out);
                        merge_object(scanner, members, depth + 1, out)?;
                    }
                    value => {
                        scanner.skip_value(depth + 1)?;
                        write_key(raw_key, &mut first, out);
                        write_patch(value, out);
                    }
                }
            }
        }
        more = scanner.next_member()?;
    }
    write_members(patch, &seen, &mut first, out);
    out.push(b'}');
    Ok(())
}

fn not_json(what: &'static str) -> impl Fn(ScanError) -> Failure {
    move |err| Failure::NotJson(format!("{what}: {err}"))
}

fn check_utf8(data: &[u8], what: &str) -> Result<(), Failure> {
    std::str::from_utf8(data)
        .map(drop)
        .map_err(|err| Failure::NotJson(format!("{what}: invalid UTF-8: {err}")))
}

/// Merge patch over bytes: the result as compact JSON.
///
/// Members the patch does not name are copied as written, repeated ones included. When the
/// document repeats a key the patch names, the document is parsed as serde_json reads it
/// (the last value counts, in the first place) and merged as a `Value`, so every occurrence
/// does not each get a copy of the patch.
pub fn merge_patch_bytes(document: &[u8], patch: &[u8]) -> Result<Vec<u8>, Failure> {
    check_utf8(document, "document")?;
    check_utf8(patch, "patch")?;
    let mut patch_scanner = Scanner::new(patch);
    patch_scanner.skip_space();
    let parsed = parse_merge_patch(&mut patch_scanner, 0).map_err(not_json("patch"))?;
    patch_scanner.finish().map_err(not_json("patch"))?;

    let mut scanner = Scanner::new(document);
    let mut out = Vec::with_capacity(document.len() + patch.len());
    scanner.skip_space();
    let merged = match &parsed {
        MergePatch::Object(members) => merge_object(&mut scanner, members, 0, &mut out),
        other => scanner
            .skip_value(0)
            .map(|_| write_patch(other, &mut out))
            .map_err(Stop::from),
    };
    match merged {
        Ok(()) => {
            scanner.finish().map_err(not_json("document"))?;
            Ok(out)
        }
        Err(Stop::NotJson(err)) => Err(not_json("document")(err)),
        Err(Stop::RepeatedKey) => {
            let mut target = parse(document, "document")?;
            merge_values(&mut target, parse(patch, "patch")?);
            Ok(serialize(&target))
        }
    }
}

/// RFC 7386 over parsed values.
fn merge_values(target: &mut Value, patch: Value) {
    let Value::Object(members) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        unreachable!("made an object just above")
    };
    for (key, value) in members {
        if value.is_null() {
            target.shift_remove(&key);
        } else {
            merge_values(target.entry(key).or_insert(Value::Null), value);
        }
    }
}

/// Nesting of `value` (0 for a scalar), or `None` once it exceeds `limit`.
fn depth_within(value: &Value, limit: usize) -> Option<usize> {
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

// ---------------------------------------------------------------------------------------------
// RFC 6902 JSON Patch

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
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
struct Operation {
    op: Op,
    path: Pointer,
    /// `from`, for move and copy.
    from: Option<Pointer>,
    /// `value`, for add, replace and test.
    value: Option<Value>,
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

fn parse_operations(patch: &[u8]) -> Result<Vec<Operation>, Failure> {
    let text = std::str::from_utf8(patch)
        .map_err(|err| Failure::NotJson(format!("patch: invalid UTF-8: {err}")))?;
    serde_json::from_str::<Vec<Operation>>(text).map_err(|err| match err.classify() {
        // A shape error can come before a syntax error further on: not JSON wins.
        Category::Data => match validate(patch) {
            Ok(()) => Failure::Invalid(format!("invalid JSON Patch: {err}")),
            Err(msg) => Failure::NotJson(format!("patch: {msg}")),
        },
        _ => Failure::NotJson(format!("patch: {err}")),
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
    fn apply(&mut self, doc: &mut Value, operation: Operation) -> Result<(), Failure> {
        let Operation {
            op,
            path,
            from,
            value,
        } = operation;
        let invalid = |msg: String| Failure::Invalid(format!("{} {path}: {msg}", op.name()));
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
                Ok(actual) => Err(Failure::TestFailed(format!(
                    "test {path}: expected {expected}, found {actual}"
                ))),
                Err(msg) => Err(Failure::TestFailed(format!("test {path}: {msg}"))),
            },
            _ => unreachable!("Operation's deserializer requires the members each op needs"),
        }
    }
}

/// JSON Patch over bytes: the result as compact JSON.
pub fn json_patch_bytes(document: &[u8], patch: &[u8]) -> Result<Vec<u8>, Failure> {
    let mut doc = parse(document, "document")?;
    let operations = parse_operations(patch)?;
    // Copies may add at most about as much as the inputs plus 1 MiB: enough for any honest
    // patch, and no way to double a document with every operation.
    let mut patcher = Patcher {
        copy_budget: document.len() + patch.len() + (1 << 20),
    };
    for (index, operation) in operations.into_iter().enumerate() {
        patcher
            .apply(&mut doc, operation)
            .map_err(|failure| match failure {
                Failure::Invalid(msg) => Failure::Invalid(format!("operation {index}: {msg}")),
                Failure::TestFailed(msg) => {
                    Failure::TestFailed(format!("operation {index}: {msg}"))
                }
                not_json => not_json,
            })?;
    }
    Ok(serialize(&doc))
}

/// Apply an RFC 7386 merge patch; returns the result as compact JSON bytes.
#[pyfunction]
fn merge_patch<'py>(
    py: Python<'py>,
    document: &[u8],
    patch: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let len = document.len() + patch.len();
    let out = maybe_detach(py, len, || merge_patch_bytes(document, patch))?;
    Ok(PyBytes::new(py, &out))
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
    m.add_function(wrap_pyfunction!(merge_patch, m)?)?;
    m.add_function(wrap_pyfunction!(json_patch, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(doc: &str, patch: &str) -> String {
        String::from_utf8(merge_patch_bytes(doc.as_bytes(), patch.as_bytes()).unwrap()).unwrap()
    }

    fn patched(doc: &str, patch: &str) -> Result<String, Failure> {
        json_patch_bytes(doc.as_bytes(), patch.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn merge_patch_rfc7386_appendix_a() {
        let cases = [
            (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
            (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
            (
                r#"{"a":{"b":"c"}}"#,
                r#"{"a":{"b":"d","c":null}}"#,
                r#"{"a":{"b":"d"}}"#,
            ),
            (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
            (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
            (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
            (r#"{"a":"foo"}"#, "null", "null"),
            (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
            (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
            (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
            (
                r#"{}"#,
                r#"{"a":{"bb":{"ccc":null}}}"#,
                r#"{"a":{"bb":{}}}"#,
            ),
        ];
        for (doc, patch, want) in cases {
            assert_eq!(merged(doc, patch), want, "{doc} + {patch}");
        }
    }

    #[test]
    fn merge_patch_keeps_member_order_and_numbers() {
        assert_eq!(
            merged(r#"{"z":1,"a":2,"m":3,"q":4}"#, r#"{"a":null,"z":5,"b":6}"#),
            r#"{"z":5,"m":3,"q":4,"b":6}"#
        );
        assert_eq!(
            merged(
                r#"{"big":123456789012345678901234567890,"f":1.50}"#,
                r#"{"x":1e400}"#
            ),
            r#"{"big":123456789012345678901234567890,"f":1.50,"x":1e400}"#
        );
    }

    #[test]
    fn merge_patch_copies_what_it_does_not_touch() {
        assert_eq!(
            merged(
                "{ \"a\" : [ 1 , 2.0E+1 ] ,\n \"b\":\"\\u00e9 \\\" \" , \"c\": {\"d\": 1}}",
                r#"{"c": {"e": [ null ], "f": null}, "g": {"h": null, "i": -0.0E-0}}"#
            ),
            r#"{"a":[1,2.0E+1],"b":"\u00e9 \" ","c":{"d":1,"e":[null]},"g":{"i":-0.0E-0}}"#
        );
        assert_eq!(
            merged(r#"{"\u0061":1,"b":2}"#, r#"{"a":null}"#),
            r#"{"b":2}"#
        );
        assert_eq!(merged("[1, 2]", r#"{"a":{"b":null}}"#), r#"{"a":{}}"#);
    }

    #[test]
    fn merge_patch_reads_repeated_keys_as_serde_json_does() {
        // not named by the patch: copied as written
        assert_eq!(
            merged(r#"{"a":1,"a":2}"#, r#"{"b":3}"#),
            r#"{"a":1,"a":2,"b":3}"#
        );
        // named by the patch: the last value counts, in the first place
        assert_eq!(
            merged(r#"{"a":{"x":1},"b":0,"a":{"y":2}}"#, r#"{"a":{"z":3}}"#),
            r#"{"a":{"y":2,"z":3},"b":0}"#
        );
        assert_eq!(
            merged(r#"{"a":1}"#, r#"{"a":2,"b":3,"a":null}"#),
            r#"{"b":3}"#
        );
        let many = format!("{{{}\"b\":0}}", r#""a":0,"#.repeat(1000));
        assert_eq!(merged(&many, r#"{"a":"x"}"#), r#"{"a":"x","b":0}"#);
        let keys: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let patch = format!("{{{},\"k3\":null}}", keys.join(","));
        assert_eq!(merged(r#"{"k3":"old","z":1}"#, &patch), {
            let mut want: Vec<String> = vec![r#""z":1"#.to_owned()];
            want.extend(keys.iter().filter(|k| !k.starts_with(r#""k3""#)).cloned());
            format!("{{{}}}", want.join(","))
        });
    }

    #[test]
    fn merge_patch_rejects_non_json() {
        for (doc, patch) in [
            ("{", "{}"),
            ("{}", "{"),
            ("{} x", "{}"),
            ("{}", "\"\\ud800\""),
            (r#"{"a":1,"b":[1,]}"#, r#"{"a":2}"#),
            (r#"{"a":1,"b":"\ud800"}"#, r#"{"a":2}"#),
            (r#"{"a":1,"b":01}"#, r#"{"a":2}"#),
            (r#"{"a":1,"a":2,"b":[}"#, r#"{"a":2}"#),
            ("[1,", "2"),
        ] {
            let err = merge_patch_bytes(doc.as_bytes(), patch.as_bytes()).unwrap_err();
            assert!(matches!(err, Failure::NotJson(_)), "{doc} {patch}: {err:?}");
        }
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
        assert!(matches!(err, Failure::TestFailed(_)));
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
            assert!(matches!(err, Failure::Invalid(_)), "{patch}: {err:?}");
        }
        for not_json in [
            r#"{"op":"add",]"#,
            "[",
            "[1] [2]",
            r#"[{"op":"x","y":"\ud800"}]"#,
        ] {
            let err = patched("{}", not_json).unwrap_err();
            assert!(matches!(err, Failure::NotJson(_)), "{not_json}: {err:?}");
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
            assert!(matches!(err, Failure::Invalid(_)), "{patch}: {err:?}");
        }
        let err = patched(doc, r#"[{"op":"test","path":"/x","value":1}]"#).unwrap_err();
        assert!(matches!(err, Failure::TestFailed(_)));
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
            matches!(err, Failure::Invalid(ref msg) if msg.contains("deeper")),
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
            matches!(err, Failure::Invalid(ref msg) if msg.contains("too far")),
            "{err:?}"
        );
    }
}
