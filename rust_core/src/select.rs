//! Partial reads: the value a JSON Pointer names, cut out of raw JSON bytes as they are stored,
//! and optionally narrowed to a slice of an array; no `serde_json::Value` is built.
//!
//! The scanner walks the whole document, so that invalid JSON anywhere is an error, as for
//! every other way of reading it. Only the members and elements on the pointer's way are looked
//! into; every other value is skipped. A key that an object repeats names its last value, as
//! parsing the document (serde_json, Python's json) would have it.

use std::borrow::Cow;
use std::ops::Range;

use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::document::Document;
use crate::errors::Error;
use crate::gil::maybe_detach;
use crate::json::utf8;
use crate::pointer::{Pointer, array_index};
use crate::scan::{ScanError, Scanner, unescape};

/// A slice's start and end, as Python gives them: negative counts from the end, `None` is the
/// open side.
pub type Bounds = (Option<i64>, Option<i64>);

/// What the walk met at the place the pointer names.
enum Found {
    /// The value there, as a range of the input.
    Value(Range<usize>),
    /// The elements of the array there, each a range of the input (they were asked for), and
    /// where its closing bracket is.
    Elements(Vec<Range<usize>>, usize),
    /// Elements were asked for, but the value there is this kind of value instead.
    NotArray(&'static str),
}

/// Why the pointer names nothing: after how many of its tokens the walk stopped, and what the
/// value reached there said to the next token.
struct Missing {
    depth: usize,
    why: String,
}

type Walked = Result<Result<Found, Missing>, ScanError>;

/// What kind of JSON value starts with `byte`, for messages.
fn kind(byte: u8) -> &'static str {
    match byte {
        b'{' => "an object",
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "a number",
    }
}

/// A place in the document, as messages name it.
fn place(pointer: &Pointer, depth: usize) -> String {
    match depth {
        0 => "the document".to_owned(),
        _ => pointer.prefix(depth).to_string(),
    }
}

fn key_is(raw_key: &[u8], escaped: bool, token: &str) -> bool {
    if escaped {
        unescape(raw_key) == token.as_bytes()
    } else {
        &raw_key[1..raw_key.len() - 1] == token.as_bytes()
    }
}

struct Walk<'a, 'p> {
    scanner: Scanner<'a>,
    tokens: &'p [String],
    /// Whether the value at the pointer is wanted element by element (a slice of it).
    elements: bool,
}

impl Walk<'_, '_> {
    /// Walks the value that starts here, the `depth`-th on the pointer's way (so inside
    /// `depth` containers), to its end.
    fn find(&mut self, depth: usize) -> Walked {
        let Some(token) = self.tokens.get(depth) else {
            return self.target(depth);
        };
        match self.scanner.peek() {
            Some(b'{') => {
                let mut found = Err(Missing {
                    depth,
                    why: format!("has no member {token:?}"),
                });
                let mut more = self.scanner.enter_object(depth)?;
                while more {
                    let (raw_key, escaped) = self.scanner.key()?;
                    if key_is(raw_key, escaped, token) {
                        found = self.find(depth + 1)?; // a later repeat of the key wins
                    } else {
                        self.scanner.skip_value(depth + 1)?;
                    }
                    more = self.scanner.next_member()?;
                }
                Ok(found)
            }
            Some(b'[') => {
                let index = array_index(token, usize::MAX, false);
                let mut found = None;
                let mut len = 0;
                let mut more = self.scanner.enter_array(depth)?;
                while more {
                    if index == Ok(len) {
                        found = Some(self.find(depth + 1)?);
                    } else {
                        self.scanner.skip_value(depth + 1)?;
                    }
                    len += 1;
                    more = self.scanner.next_element()?;
                }
                Ok(found.unwrap_or_else(|| {
                    // An index too large for a usize is still an index, past the end.
                    let digits = token.bytes().all(|b| b.is_ascii_digit());
                    let why = match index {
                        Err(msg) if !digits || token.is_empty() || token.starts_with('0') => {
                            format!("is an array, and {msg}")
                        }
                        _ => format!("has {len} elements, so no element {token}"),
                    };
                    Err(Missing { depth, why })
                }))
            }
            byte => {
                self.scanner.skip_value(depth)?; // at the end of the input, the error
                let kind = kind(byte.unwrap_or_default());
                let why = format!("is {kind}, which has no members or elements");
                Ok(Err(Missing { depth, why }))
            }
        }
    }

    /// Walks the value the pointer names, which starts here.
    fn target(&mut self, depth: usize) -> Walked {
        let start = self.scanner.pos();
        match self.scanner.peek() {
            Some(b'[') if self.elements => {
                let mut elements = Vec::new();
                let mut more = self.scanner.enter_array(depth)?;
                while more {
                    let element = self.scanner.pos();
                    self.scanner.skip_value(depth + 1)?;
                    elements.push(element..self.scanner.pos());
                    more = self.scanner.next_element()?;
                }
                Ok(Ok(Found::Elements(elements, self.scanner.pos() - 1)))
            }
            Some(byte) if self.elements => {
                self.scanner.skip_value(depth)?;
                Ok(Ok(Found::NotArray(kind(byte))))
            }
            _ => {
                self.scanner.skip_value(depth)?;
                Ok(Ok(Found::Value(start..self.scanner.pos())))
            }
        }
    }
}

/// Where a slice of `len` elements starts and ends, by Python's rules: negative bounds count
/// from the end, bounds past either end are clamped, a start past the end gives nothing.
pub fn slice_range((start, end): Bounds, len: usize) -> Range<usize> {
    let resolve = |bound: Option<i64>, open: usize| match bound {
        None => open,
        Some(back) if back < 0 => {
            len.saturating_sub(usize::try_from(back.unsigned_abs()).unwrap_or(usize::MAX))
        }
        Some(ahead) => usize::try_from(ahead).unwrap_or(usize::MAX).min(len),
    };
    let start = resolve(start, 0);
    start..resolve(end, len).max(start)
}

/// The bytes of the value `pointer` (RFC 6901) names in `document`, exactly as written there;
/// with `bounds`, that value must be an array, and the result is the array of the elements
/// the bounds choose, each as written, joined by commas.
pub fn select_bytes<'a>(
    document: &'a [u8],
    pointer: &str,
    bounds: Option<Bounds>,
) -> Result<Cow<'a, [u8]>, Error> {
    let parsed = Pointer::parse(pointer).map_err(Error::Select)?;
    utf8(document)?;
    let mut walk = Walk {
        scanner: Scanner::new(document),
        tokens: parsed.tokens(),
        elements: bounds.is_some(),
    };
    let not_json = |err: ScanError| Error::Json(err.to_string());
    walk.scanner.skip_space();
    let found = walk.find(0).map_err(not_json)?;
    walk.scanner.finish().map_err(not_json)?;
    match found {
        Ok(Found::Value(range)) => Ok(Cow::Borrowed(&document[range])),
        Ok(Found::Elements(elements, _)) => {
            let chosen = &elements[slice_range(bounds.unwrap_or_default(), elements.len())];
            let size = chosen.iter().map(|e| e.len() + 1).sum::<usize>() + 1;
            let mut out = Vec::with_capacity(size);
            out.push(b'[');
            for (at, element) in chosen.iter().enumerate() {
                if at > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&document[element.clone()]);
            }
            out.push(b']');
            Ok(Cow::Owned(out))
        }
        Ok(Found::NotArray(kind)) => Err(Error::Select(format!(
            "a slice needs an array, and {} is {kind}",
            place(&parsed, parsed.len())
        ))),
        Err(Missing { depth, why }) => Err(Error::Missing(format!(
            "nothing at {parsed}: {} {why}",
            place(&parsed, depth)
        ))),
    }
}

/// Where an array's closing bracket is, and its elements, as ranges of the document.
pub type ArrayAt = (usize, Vec<Range<usize>>);

/// The array the pointer `tokens` names in `document`, known to be JSON: where its closing
/// bracket is, and its elements; None when something else, or nothing, is there.
pub fn array_at(document: &[u8], tokens: &[String]) -> Result<Option<ArrayAt>, Error> {
    let mut walk = Walk {
        scanner: Scanner::new(document),
        tokens,
        elements: true,
    };
    walk.scanner.skip_space();
    let found = walk.find(0).map_err(|err| Error::Json(err.to_string()))?;
    Ok(match found {
        Ok(Found::Elements(elements, close)) => Some((close, elements)),
        _ => None,
    })
}

/// A slice bound as Python gives it: any int, ones beyond 64 bits clamped (they are past
/// either end of any array anyway).
fn bound(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<i64>> {
    let Some(value) = value else {
        return Ok(None);
    };
    match value.extract::<i64>() {
        Ok(bound) => Ok(Some(bound)),
        Err(err) if err.is_instance_of::<PyOverflowError>(value.py()) => {
            Ok(Some(if value.gt(0)? { i64::MAX } else { i64::MIN }))
        }
        Err(err) => Err(err),
    }
}

/// A slice as Python passes it: (start, end), each an int or None.
type PySlice<'py> = (Option<Bound<'py, PyAny>>, Option<Bound<'py, PyAny>>);

/// The value `pointer` names in `document`, as written there; with `slice`, part of the array
/// there.
#[pyfunction]
#[pyo3(signature = (document, pointer, slice=None))]
fn select<'py>(
    py: Python<'py>,
    document: &Bound<'py, PyAny>,
    pointer: &str,
    slice: Option<PySlice<'py>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let bounds = match &slice {
        None => None,
        Some((start, end)) => Some((bound(start.as_ref())?, bound(end.as_ref())?)),
    };
    if let Ok(rope) = document.cast::<Document>() {
        return Ok(PyBytes::new(py, &rope.get().select(py, pointer, bounds)?));
    }
    let document = document.cast::<PyBytes>()?.as_bytes();
    let out = maybe_detach(py, document.len(), || {
        select_bytes(document, pointer, bounds)
    })?;
    Ok(PyBytes::new(py, &out))
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(select, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(doc: &str, pointer: &str) -> Result<String, Error> {
        select_bytes(doc.as_bytes(), pointer, None).map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    fn cut(doc: &str, pointer: &str, bounds: Bounds) -> Result<String, Error> {
        let out = select_bytes(doc.as_bytes(), pointer, Some(bounds))?;
        Ok(String::from_utf8(out.to_vec()).unwrap())
    }

    fn ok(text: &str) -> Result<String, Error> {
        Ok(text.to_owned())
    }

    fn missing(result: Result<String, Error>) -> String {
        match result {
            Err(Error::Missing(msg)) => msg,
            other => panic!("expected Missing, got {other:?}"),
        }
    }

    const DOC: &str = r#" { "a" : { "b" : [ 1 , { "c" : "x y" } , 3.50 ] } , "n" : null } "#;

    #[test]
    fn cuts_values_as_written() {
        assert_eq!(sel(DOC, "/a/b/1"), ok(r#"{ "c" : "x y" }"#));
        assert_eq!(sel(DOC, "/a/b/1/c"), ok(r#""x y""#));
        assert_eq!(sel(DOC, "/a/b/2"), ok("3.50"));
        assert_eq!(sel(DOC, "/n"), ok("null"));
        assert_eq!(sel(DOC, "/a/b"), ok(r#"[ 1 , { "c" : "x y" } , 3.50 ]"#));
        // the whole document: the value, without the whitespace around it
        assert_eq!(sel(DOC, ""), ok(DOC.trim()));
        assert_eq!(sel("\t\n[]\r\n", ""), ok("[]"));
        assert_eq!(sel(r#"{"":{"":7}}"#, "//"), ok("7"));
        assert_eq!(sel(r#"{"":{"":7}}"#, "/"), ok(r#"{"":7}"#));
    }

    #[test]
    fn unescapes_pointers_and_keys() {
        let doc = r#"{"a/b": 1, "m~n": 2, "~1": 3, "caf\u00e9": 4, "café": 5, "\ud83d\ude00": 6, "q\"": 7}"#;
        assert_eq!(sel(doc, "/a~1b"), ok("1"));
        assert_eq!(sel(doc, "/m~0n"), ok("2"));
        assert_eq!(sel(doc, "/~01"), ok("3"));
        // the same key, escaped and not: the later one counts
        assert_eq!(sel(doc, "/café"), ok("5"));
        assert_eq!(sel(doc, "/\u{1f600}"), ok("6"));
        assert_eq!(sel(doc, "/q\""), ok("7"));
        missing(sel(doc, "/a/b"));
        missing(sel(doc, "/~1"));
    }

    #[test]
    fn repeated_keys_name_their_last_value() {
        assert_eq!(sel(r#"{"a": 1, "b": 0, "a": 2}"#, "/a"), ok("2"));
        // the last one decides, even when only an earlier one has the rest of the way
        let doc = r#"{"a": {"x": 1}, "a": {"y": 2}}"#;
        assert_eq!(sel(doc, "/a/y"), ok("2"));
        assert!(missing(sel(doc, "/a/x")).contains("has no member \"x\""));
        let doc = r#"{"a": {"x": 1}, "a": 5}"#;
        missing(sel(doc, "/a/x"));
    }

    #[test]
    fn array_tokens_follow_rfc_6901() {
        let doc = "[10, 11, 12]";
        assert_eq!(sel(doc, "/0"), ok("10"));
        assert_eq!(sel(doc, "/2"), ok("12"));
        for (pointer, why) in [
            ("/3", "the document has 3 elements, so no element 3"),
            ("/-", "'-' names no existing array element"),
            ("/01", "\"01\" is not an array index"),
            ("/-1", "\"-1\" is not an array index"),
            ("/+1", "\"+1\" is not an array index"),
            ("/", "\"\" is not an array index"),
            ("/1.0", "\"1.0\" is not an array index"),
            (
                "/99999999999999999999999",
                "3 elements, so no element 99999999999999999999999",
            ),
        ] {
            let msg = missing(sel(doc, pointer));
            assert!(msg.starts_with(&format!("nothing at {pointer}: ")), "{msg}");
            assert!(msg.contains(why), "{msg}");
        }
        assert_eq!(sel("[]", ""), ok("[]"));
        missing(sel("[]", "/0"));
        missing(sel("[ ]", "/-"));
    }

    #[test]
    fn says_where_the_way_ends() {
        let doc = r#"{"a": {"b": [1, "s"]}}"#;
        assert_eq!(
            missing(sel(doc, "/a/c/d")),
            "nothing at /a/c/d: /a has no member \"c\""
        );
        assert_eq!(
            missing(sel(doc, "/x")),
            "nothing at /x: the document has no member \"x\""
        );
        assert_eq!(
            missing(sel(doc, "/a/b/1/z")),
            "nothing at /a/b/1/z: /a/b/1 is a string, which has no members or elements"
        );
        assert_eq!(
            missing(sel(doc, "/a/b/0/0")),
            "nothing at /a/b/0/0: /a/b/0 is a number, which has no members or elements"
        );
        assert!(missing(sel("true", "/t")).contains("the document is a boolean"));
        assert!(missing(sel("null", "/t")).contains("the document is null"));
        assert!(
            missing(sel(r#"{"a~b": {}}"#, "/a~0b/c")).starts_with("nothing at /a~0b/c: /a~0b ")
        );
    }

    #[test]
    fn slices_by_python_rules() {
        let five = "[ 0 ,1, {\"two\" : 2},\n3 , [4] ]";
        let all = r#"[0,1,{"two" : 2},3,[4]]"#;
        assert_eq!(cut(five, "", (None, None)), ok(all));
        assert_eq!(cut(five, "", (Some(-20), None)), ok(all));
        assert_eq!(cut(five, "", (Some(-2), None)), ok("[3,[4]]"));
        assert_eq!(cut(five, "", (None, Some(2))), ok("[0,1]"));
        assert_eq!(
            cut(five, "", (Some(1), Some(-1))),
            ok(r#"[1,{"two" : 2},3]"#)
        );
        assert_eq!(cut(five, "", (Some(3), Some(1))), ok("[]"));
        assert_eq!(cut(five, "", (Some(5), None)), ok("[]"));
        assert_eq!(cut(five, "", (Some(99), Some(100))), ok("[]"));
        assert_eq!(cut(five, "", (Some(-99), Some(-98))), ok("[]"));
        assert_eq!(cut(five, "", (Some(i64::MIN), Some(i64::MAX))), ok(all));
        assert_eq!(cut(five, "", (Some(-1), Some(-1))), ok("[]"));
        assert_eq!(cut(five, "/4", (None, None)), ok("[4]"));
        assert_eq!(cut("[]", "", (Some(-3), Some(3))), ok("[]"));
        assert_eq!(cut(" [ ] ", "", (None, None)), ok("[]"));
        assert_eq!(
            cut(r#"{"m": [[1], [2]]}"#, "/m", (Some(-1), None)),
            ok("[[2]]")
        );
        for len in 0..6usize {
            let items: Vec<i64> = (0..len as i64).collect();
            for start in -7..7 {
                for end in -7..7 {
                    let py = |b: i64| {
                        let n = len as i64;
                        (if b < 0 { (n + b).max(0) } else { b.min(n) }) as usize
                    };
                    let (s, e) = (py(start), py(end));
                    let want = if s < e { items[s..e].to_vec() } else { vec![] };
                    let range = slice_range((Some(start), Some(end)), len);
                    assert_eq!(items[range].to_vec(), want, "{len} {start}:{end}");
                }
            }
        }
    }

    #[test]
    fn a_slice_needs_an_array() {
        for (doc, pointer, what) in [
            (r#"{"a": 1}"#, "", "the document is an object"),
            (r#"{"a": 1}"#, "/a", "/a is a number"),
            (r#"{"a": "[1]"}"#, "/a", "/a is a string"),
            (r#"{"a": null}"#, "/a", "/a is null"),
        ] {
            match cut(doc, pointer, (None, None)) {
                Err(Error::Select(msg)) => {
                    assert!(msg.starts_with("a slice needs an array"), "{msg}");
                    assert!(msg.ends_with(what), "{msg}");
                }
                other => panic!("{other:?}"),
            }
        }
        missing(cut(r#"{"a": 1}"#, "/b", (None, None)));
    }

    #[test]
    fn malformed_pointers() {
        for bad in ["a", "a/b", "/a~", "/a~2", "/~x"] {
            match sel("{}", bad) {
                Err(Error::Select(_)) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
        // a malformed pointer is told before a document that is not JSON
        assert!(matches!(sel("{", "x"), Err(Error::Select(_))));
    }

    #[test]
    fn checks_the_whole_document() {
        for bad in [
            r#"{"a": 1, "b": }"#,
            r#"{"a": 1} x"#,
            r#"{"a": 1, "b": [1,]}"#,
            r#"{"b": [1,], "a": 1}"#,
            r#"{"a": [0, 1, 2,]}"#,
            r#"{"a": [0 1]}"#,
            r#"{"a": "\ud800"}"#,
            "",
            " ",
            "{",
        ] {
            match sel(bad, "/a/0") {
                Err(Error::Json(_)) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
            match cut(bad, "/a", (None, None)) {
                Err(Error::Json(_)) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(
            select_bytes(b"{\"a\": \"\xff\"}", "/a", None),
            Err(Error::Json(_))
        ));
        let deep = format!(
            "{{\"a\": 1, \"b\": {}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(matches!(sel(&deep, "/a"), Err(Error::Json(_))));
        let deep = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert_eq!(sel(&deep, "/0/0"), ok(&deep[2..deep.len() - 2]));
        let pointer = "/0".repeat(127);
        assert_eq!(
            sel(&deep, &pointer),
            Err(Error::Missing(format!(
                "nothing at {pointer}: {} has 0 elements, so no element 0",
                "/0".repeat(126)
            )))
        );
    }
}
