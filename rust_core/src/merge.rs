//! RFC 7386 merge patch over raw JSON bytes, and its Python function.
//!
//! Only the members the patch names are looked at: every other member of the document is
//! validated by the scanner and copied as written, minus insignificant whitespace. The patch is
//! small and parsed whole, but its values too stay as written.

use std::borrow::Cow;
use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde_json::{Map, Value};

use crate::errors::Error;
use crate::gil::maybe_detach;
use crate::json::{parse, serialize, utf8};
use crate::scan::{ScanError, Scanner, unescape, write_compact};

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
            write_members(members, &mut true, out);
            out.push(b'}');
        }
    }
}

/// Writes the members, except nulls.
fn write_members(members: &Members<'_>, first: &mut bool, out: &mut Vec<u8>) {
    for member in &members.list {
        if !matches!(member.value, MergePatch::Null) {
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

/// A JSON Patch written as a merge goes: each member the merge adds, replaces or removes, at
/// its RFC 6901 pointer. Only used on input without a backslash, so a key read is a key as
/// written, with nothing to escape in a JSON string, and a value is the merge's own output.
#[derive(Default)]
struct Ops {
    /// The pointer to the object being merged.
    pointer: Vec<u8>,
    /// The operations so far, from the array's opening bracket.
    out: Vec<u8>,
}

impl Ops {
    /// Adds the operation `op` at `key` of the current object (at the object itself if none).
    fn push(&mut self, op: &str, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.out.push(if self.out.is_empty() { b'[' } else { b',' });
        self.out.extend_from_slice(br#"{"op":""#);
        self.out.extend_from_slice(op.as_bytes());
        self.out.extend_from_slice(br#"","path":""#);
        self.out.extend_from_slice(&self.pointer);
        if let Some(key) = key {
            push_token(key, &mut self.out);
        }
        self.out.push(b'"');
        if let Some(value) = value {
            self.out.extend_from_slice(br#","value":"#);
            self.out.extend_from_slice(value);
        }
        self.out.push(b'}');
    }

    /// Moves the pointer into member `key`; returns what `leave` takes to come back.
    fn enter(&mut self, key: &[u8]) -> usize {
        let parent = self.pointer.len();
        push_token(key, &mut self.pointer);
        parent
    }

    fn leave(&mut self, parent: usize) {
        self.pointer.truncate(parent);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.out.is_empty() {
            return b"[]".to_vec();
        }
        self.out.push(b']');
        self.out
    }
}

/// Appends `/key` as an RFC 6901 reference token.
fn push_token(key: &[u8], out: &mut Vec<u8>) {
    out.push(b'/');
    for &byte in key {
        match byte {
            b'~' => out.extend_from_slice(b"~0"),
            b'/' => out.extend_from_slice(b"~1"),
            _ => out.push(byte),
        }
    }
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
    mut ops: Option<&mut Ops>,
) -> Result<(), Stop> {
    if scanner.peek() != Some(b'{') {
        // RFC 7386: a target that is not an object is merged as if it were {}
        scanner.skip_value(depth)?;
        let start = out.len();
        out.push(b'{');
        write_members(patch, &mut true, out);
        out.push(b'}');
        if let Some(ops) = ops {
            ops.push("replace", None, Some(&out[start..]));
        }
        return Ok(());
    }
    let mut seen = vec![false; patch.list.len()];
    let mut first = true;
    out.push(b'{');
    let mut more = scanner.enter_object(depth)?;
    while more {
        let (raw_key, escaped) = scanner.key()?;
        let key = key_text(raw_key, escaped);
        match patch.find(&key) {
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
                        if let Some(ops) = ops.as_deref_mut() {
                            ops.push("remove", Some(&key), None);
                        }
                    }
                    MergePatch::Object(members) => {
                        write_key(raw_key, &mut first, out);
                        match ops.as_deref_mut() {
                            None => merge_object(scanner, members, depth + 1, out, None)?,
                            Some(ops) => {
                                let parent = ops.enter(&key);
                                merge_object(scanner, members, depth + 1, out, Some(&mut *ops))?;
                                ops.leave(parent);
                            }
                        }
                    }
                    value => {
                        scanner.skip_value(depth + 1)?;
                        write_key(raw_key, &mut first, out);
                        let start = out.len();
                        write_patch(value, out);
                        if let Some(ops) = ops.as_deref_mut() {
                            ops.push("replace", Some(&key), Some(&out[start..]));
                        }
                    }
                }
            }
        }
        more = scanner.next_member()?;
    }
    // the members the document did not have, in the patch's order
    for (member, _) in patch.list.iter().zip(seen).filter(|(_, seen)| !seen) {
        if matches!(member.value, MergePatch::Null) {
            continue;
        }
        write_key(member.raw_key, &mut first, out);
        let start = out.len();
        write_patch(&member.value, out);
        if let Some(ops) = ops.as_deref_mut() {
            ops.push("add", Some(&member.key), Some(&out[start..]));
        }
    }
    out.push(b'}');
    Ok(())
}

fn not_json(what: &'static str) -> impl Fn(ScanError) -> Error {
    move |err| Error::Json(format!("{what}: {err}"))
}

/// Merge patch over bytes: the result as compact JSON.
///
/// Members the patch does not name are copied as written, repeated ones included. When the
/// document repeats a key the patch names, the document is parsed as serde_json reads it
/// (the last value counts, in the first place) and merged as a `Value`, so every occurrence
/// does not each get a copy of the patch.
pub fn merge_patch_bytes(document: &[u8], patch: &[u8]) -> Result<Vec<u8>, Error> {
    match merge_scanned(document, patch, None)? {
        Some(out) => Ok(out),
        None => {
            let mut target = parse(document, "document")?;
            merge_values(&mut target, parse(patch, "patch")?);
            Ok(serialize(&target))
        }
    }
}

/// A JSON Patch and the document it makes, both compact JSON.
pub type PatchAndResult = (Vec<u8>, Vec<u8>);

/// The merge over bytes, and the JSON Patch (RFC 6902) that makes the same change: (patch,
/// result), in one pass and without parsing the document.
///
/// `None` when a parse is needed to make exactly the bytes a parse and write would (what
/// every other node makes of the log): when either input has what a parse writes back its
/// own way (`parse_rewrites`), or when the document repeats a key the patch names.
pub fn merge_with_json_patch(
    document: &[u8],
    patch: &[u8],
) -> Result<Option<PatchAndResult>, Error> {
    if parse_rewrites(document) || parse_rewrites(patch) {
        return Ok(None);
    }
    let mut ops = Ops::default();
    let merged = merge_scanned(document, patch, Some(&mut ops))?;
    Ok(merged.map(|result| (ops.finish(), result)))
}

/// Whether JSON text holds what serde_json writes back otherwise than as written, beyond
/// whitespace: a backslash (escapes are written its own way) or a number with an exponent
/// (`1E5` is written `1e+5`). Without a backslash no quote is escaped, so every quote opens
/// or closes a string and a digit outside strings followed by `e` is an exponent.
fn parse_rewrites(json: &[u8]) -> bool {
    let mut in_string = false;
    let mut after_digit = false;
    for &byte in json {
        match byte {
            b'\\' => return true,
            b'"' => in_string = !in_string,
            b'e' | b'E' if after_digit => return true,
            _ => {}
        }
        after_digit = !in_string && byte.is_ascii_digit();
    }
    false
}

/// The merge over bytes; `None` when the document repeats a key the patch names.
fn merge_scanned(
    document: &[u8],
    patch: &[u8],
    ops: Option<&mut Ops>,
) -> Result<Option<Vec<u8>>, Error> {
    utf8(document).map_err(|err| err.at("document"))?;
    utf8(patch).map_err(|err| err.at("patch"))?;
    let mut patch_scanner = Scanner::new(patch);
    patch_scanner.skip_space();
    let parsed = parse_merge_patch(&mut patch_scanner, 0).map_err(not_json("patch"))?;
    patch_scanner.finish().map_err(not_json("patch"))?;

    let mut scanner = Scanner::new(document);
    let mut out = Vec::with_capacity(document.len() + patch.len());
    scanner.skip_space();
    let merged = match &parsed {
        MergePatch::Object(members) => merge_object(&mut scanner, members, 0, &mut out, ops),
        other => scanner.skip_value(0).map_err(Stop::from).map(|_| {
            write_patch(other, &mut out);
            if let Some(ops) = ops {
                ops.push("replace", None, Some(&out));
            }
        }),
    };
    match merged {
        Ok(()) => {
            scanner.finish().map_err(not_json("document"))?;
            Ok(Some(out))
        }
        Err(Stop::NotJson(err)) => Err(not_json("document")(err)),
        Err(Stop::RepeatedKey) => Ok(None),
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

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(merge_patch, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(doc: &str, patch: &str) -> String {
        String::from_utf8(merge_patch_bytes(doc.as_bytes(), patch.as_bytes()).unwrap()).unwrap()
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
            assert!(matches!(err, Error::Json(_)), "{doc} {patch}: {err:?}");
        }
    }
}
