//! A validating JSON scanner: walks and skips values over raw bytes without building them.
//!
//! Given input already checked to be UTF-8, it accepts exactly what parsing into a
//! `serde_json::Value` accepts: the RFC 8259 grammar, strings fully checked (escapes, control
//! characters, lone surrogates), any number the grammar allows (as with `arbitrary_precision`),
//! and at most `MAX_DEPTH` nested arrays and objects.

use std::fmt;

/// Deepest nesting accepted: what serde_json (and so every later read) accepts.
pub const MAX_DEPTH: usize = 127;

/// Where the input stops being JSON, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub at: usize,
    pub msg: &'static str,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.msg, self.at)
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Marks the bytes of `word` (little-endian) that are a quote, a backslash or a control
/// character. Bytes past the first marked one may be marked wrongly (the subtraction borrows),
/// but the lowest mark is exact, and there is one whenever any byte is special.
#[inline]
fn special_bytes(word: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = zero(word ^ (ONES * u64::from(b'"')));
    let backslash = zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control
}

#[inline]
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// A cursor over JSON bytes; every method validates what it moves over.
pub struct Scanner<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The input from `start` to the current position.
    pub fn since(&self, start: usize) -> &'a [u8] {
        &self.data[start..self.pos]
    }

    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn error(&self, msg: &'static str) -> ScanError {
        ScanError { at: self.pos, msg }
    }

    /// Skips whitespace; tells whether there was any.
    #[inline]
    pub fn skip_space(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_space) {
            self.pos += 1;
        }
        self.pos != start
    }

    fn expect(&mut self, byte: u8, msg: &'static str) -> Result<(), ScanError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(msg))
        }
    }

    /// Checks that only whitespace is left.
    pub fn finish(&mut self) -> Result<(), ScanError> {
        self.skip_space();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    /// Scans the string that starts here; tells whether it has escapes.
    #[inline]
    fn string(&mut self) -> Result<bool, ScanError> {
        self.expect(b'"', "expected a string")?;
        let mut escaped = false;
        loop {
            // Jump to the next quote, backslash or control character, 8 bytes at a time.
            while let Some(chunk) = self.data.get(self.pos..).and_then(<[u8]>::first_chunk) {
                let special = special_bytes(u64::from_le_bytes(*chunk));
                if special != 0 {
                    self.pos += special.trailing_zeros() as usize / 8;
                    break;
                }
                self.pos += 8;
            }
            match self.peek() {
                None => return Err(self.error("EOF while parsing a string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape()?;
                    escaped = true;
                }
                Some(0..0x20) => return Err(self.error("control character in a string")),
                Some(_) => self.pos += 1,
            }
        }
    }

    /// The escape after a backslash; surrogates must come in pairs, as serde_json requires.
    fn escape(&mut self) -> Result<(), ScanError> {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                self.pos += 1;
                match self.hex4()? {
                    0xDC00..=0xDFFF => Err(self.error("lone trailing surrogate")),
                    0xD800..=0xDBFF => {
                        let lone = |s: &Self| s.error("lone leading surrogate");
                        if self.data.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(lone(self));
                        }
                        self.pos += 2;
                        match self.hex4()? {
                            0xDC00..=0xDFFF => Ok(()),
                            _ => Err(lone(self)),
                        }
                    }
                    _ => Ok(()),
                }
            }
            _ => Err(self.error("invalid escape")),
        }
    }

    fn hex4(&mut self) -> Result<u16, ScanError> {
        let mut n = 0u16;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|b| char::from(b).to_digit(16))
                .ok_or_else(|| self.error("invalid \\u escape"))?;
            n = n << 4 | digit as u16;
            self.pos += 1;
        }
        Ok(n)
    }

    fn digits(&mut self) -> Result<(), ScanError> {
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(self.error("invalid number"));
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        Ok(())
    }

    #[inline]
    fn number(&mut self) -> Result<(), ScanError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        if self.peek() == Some(b'0') {
            self.pos += 1;
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.error("invalid number: leading zero"));
            }
        } else {
            self.digits()?;
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits()?;
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), ScanError> {
        if self.data[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("expected a JSON value"))
        }
    }

    /// Enters the object that starts here, inside `depth` enclosing containers; tells whether
    /// it has a member (an empty object is consumed whole).
    pub fn enter_object(&mut self, depth: usize) -> Result<bool, ScanError> {
        if depth >= MAX_DEPTH {
            return Err(self.error("nesting deeper than 127 levels"));
        }
        self.expect(b'{', "expected an object")?;
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// The member key that starts here, quotes included, and whether it has escapes; moves
    /// past the colon and the whitespace after it.
    pub fn key(&mut self) -> Result<(&'a [u8], bool), ScanError> {
        let start = self.pos;
        let escaped = self.string()?;
        let key = self.since(start);
        self.skip_space();
        self.expect(b':', "expected ':'")?;
        self.skip_space();
        Ok((key, escaped))
    }

    /// After a member's value: tells whether another member follows (and moves to its key),
    /// or moves past the closing brace.
    pub fn next_member(&mut self) -> Result<bool, ScanError> {
        self.skip_space();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                self.skip_space();
                Ok(true)
            }
            Some(b'}') => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(self.error("expected ',' or '}'")),
        }
    }

    /// Enters the array that starts here, inside `depth` enclosing containers; tells whether
    /// it has an element (an empty array is consumed whole).
    pub fn enter_array(&mut self, depth: usize) -> Result<bool, ScanError> {
        if depth >= MAX_DEPTH {
            return Err(self.error("nesting deeper than 127 levels"));
        }
        self.expect(b'[', "expected an array")?;
        self.skip_space();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// After an element: tells whether another follows (and moves to it), or moves past the
    /// closing bracket.
    pub fn next_element(&mut self) -> Result<bool, ScanError> {
        self.skip_space();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                self.skip_space();
                Ok(true)
            }
            Some(b']') => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(self.error("expected ',' or ']'")),
        }
    }

    /// Skips the value that starts here, inside `depth` enclosing containers; tells whether it
    /// contains insignificant whitespace. Iterative: a bit per open container says if it is
    /// an object.
    pub fn skip_value(&mut self, depth: usize) -> Result<bool, ScanError> {
        let mut spaced = false;
        let mut objects: u128 = 0;
        let mut open = 0usize;
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.string()?;
                }
                Some(open_byte @ (b'{' | b'[')) => {
                    if depth + open >= MAX_DEPTH {
                        return Err(self.error("nesting deeper than 127 levels"));
                    }
                    self.pos += 1;
                    spaced |= self.skip_space();
                    let object = open_byte == b'{';
                    if self.peek() == Some(if object { b'}' } else { b']' }) {
                        self.pos += 1;
                    } else {
                        objects = objects << 1 | u128::from(object);
                        open += 1;
                        if object {
                            spaced |= self.member_key()?;
                        }
                        continue;
                    }
                }
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(self.error("expected a JSON value")),
            }
            // A value ended: close containers until one has a next element.
            loop {
                if open == 0 {
                    return Ok(spaced);
                }
                spaced |= self.skip_space();
                let object = objects & 1 == 1;
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        spaced |= self.skip_space();
                        if object {
                            spaced |= self.member_key()?;
                        }
                        break;
                    }
                    Some(b'}') if object => {}
                    Some(b']') if !object => {}
                    _ if object => return Err(self.error("expected ',' or '}'")),
                    _ => return Err(self.error("expected ',' or ']'")),
                }
                self.pos += 1;
                objects >>= 1;
                open -= 1;
            }
        }
    }

    /// A key and its colon inside `skip_value`; tells whether there was whitespace.
    #[inline]
    fn member_key(&mut self) -> Result<bool, ScanError> {
        self.string()?;
        let before = self.skip_space();
        self.expect(b':', "expected ':'")?;
        Ok(self.skip_space() | before)
    }
}

/// Writes a scanned value without its insignificant whitespace (when `spaced` says it has any).
pub fn write_compact(value: &[u8], spaced: bool, out: &mut Vec<u8>) {
    if !spaced {
        out.extend_from_slice(value);
        return;
    }
    let mut in_string = false;
    let mut escaped = false;
    let mut run = 0;
    for (i, &byte) in value.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if is_space(byte) {
            out.extend_from_slice(&value[run..i]);
            run = i + 1;
        } else if byte == b'"' {
            in_string = true;
        }
    }
    out.extend_from_slice(&value[run..]);
}

/// The text of a scanned string (quotes included) with its escapes decoded.
pub fn unescape(raw: &[u8]) -> Vec<u8> {
    let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter().copied();
    let hex = |bytes: &mut dyn Iterator<Item = u8>| {
        (0..4).fold(0u32, |n, _| {
            let digit = bytes.next().and_then(|b| char::from(b).to_digit(16));
            n << 4 | digit.unwrap_or(0)
        })
    };
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        let decoded = match bytes.next() {
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let mut n = hex(&mut bytes);
                if (0xD800..0xDC00).contains(&n) {
                    bytes.nth(1); // the scanner checked that `\u` and a trailing surrogate follow
                    n = 0x10000 + ((n - 0xD800) << 10) + (hex(&mut bytes).wrapping_sub(0xDC00));
                }
                char::from_u32(n).unwrap_or(char::REPLACEMENT_CHARACTER)
            }
            Some(other) => char::from(other),
            None => break,
        };
        out.extend_from_slice(decoded.encode_utf8(&mut [0; 4]).as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::validate;

    /// One JSON value with only whitespace around it, as `merge_patch` checks a document.
    fn scan(data: &[u8]) -> Result<bool, ScanError> {
        let mut scanner = Scanner::new(data);
        scanner.skip_space();
        let spaced = scanner.skip_value(0)?;
        scanner.finish()?;
        Ok(spaced)
    }

    fn accepts(data: &[u8]) -> bool {
        std::str::from_utf8(data).is_ok() && scan(data).is_ok()
    }

    const SAMPLE: &[u8] = br#"{"a": [1, -2.5e+3, 0, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"], "b": {"": {}, "c": [[], [{}]]}, "d\u0041": "caf\u00e9 ok"}"#;

    #[test]
    fn accepts_what_serde_json_accepts() {
        for ok in [
            SAMPLE,
            b"0",
            b"-0",
            b"-0.0e-0",
            b"1E400",
            b"123456789012345678901234567890.5",
            b" \t\r\n[ ] ",
            b"\"\x7f\xc3\xa9\"",
            b"{\"a\":1,\"a\":2}",
        ] {
            assert!(validate(ok).is_ok(), "{:?}", String::from_utf8_lossy(ok));
            assert!(accepts(ok), "{:?}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn rejects_invalid_bytes() {
        for bad in [
            &b""[..],
            b" ",
            b"{} {}",
            b"[1,]",
            b"[,1]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{a:1}",
            b"{'a': 1}",
            b"{1:1}",
            b"[1 2]",
            b"NaN",
            b"nul",
            b"truee",
            b"01",
            b"-",
            b"-01",
            b"1.",
            b".5",
            b"+1",
            b"1e",
            b"1e+",
            b"\"a\x01\"",
            b"\"a\nb\"",
            b"\"\x1f\"",
            b"[\x00]",
            b"\xef\xbb\xbf{}",
            b"{]",
            b"[}",
        ] {
            assert!(validate(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
            assert!(!accepts(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn checks_escapes() {
        for (escape, ok) in [
            (r#"\""#, true),
            (r"\\", true),
            (r"\/", true),
            (r"\b\f\n\r\t", true),
            (r"\u00E9\u00e9", true),
            (r"\ud83d\ude00", true),
            (r"\uDBFF\uDFFF", true),
            (r"\x", false),
            (r"\U0041", false),
            (r"\u12", false),
            (r"\u12g4", false),
            (r"\ud800", false),
            (r"\udc00", false),
            (r"\ud800x", false),
            (r"\ud800\n", false),
            (r"\ud800\u0041", false),
            (r"\ud800\ud800", false),
            ("\\", false),
        ] {
            let text = format!("\"{escape}\"");
            assert_eq!(validate(text.as_bytes()).is_ok(), ok, "{text}");
            assert_eq!(accepts(text.as_bytes()), ok, "{text}");
        }
    }

    #[test]
    fn rejects_every_truncation() {
        for end in 0..SAMPLE.len() {
            let prefix = &SAMPLE[..end];
            // a prefix can be a whole value only where it ends in a number ("{"... never does)
            assert!(!accepts(prefix), "{:?}", String::from_utf8_lossy(prefix));
        }
        for end in 0..6 {
            assert!(!accepts(&b"\"\\ud83d\\ude00\""[..end + 8]));
        }
    }

    #[test]
    fn limits_depth() {
        let arrays = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        let mixed = |n: usize| format!("{}1{}", r#"[{"a":"#.repeat(n / 2), "}]".repeat(n / 2));
        for make in [arrays, objects, mixed] {
            assert!(accepts(make(126).as_bytes()));
            assert!(validate(make(126).as_bytes()).is_ok());
            assert!(!accepts(make(128).as_bytes()));
            assert!(validate(make(128).as_bytes()).is_err());
            assert!(!accepts(make(100_000).as_bytes()));
        }
        assert!(accepts(arrays(127).as_bytes()));
        assert!(validate(objects(127).as_bytes()).is_ok());
        assert!(accepts(objects(127).as_bytes()));
        // inside 10 enclosing containers, 117 more levels fit and 118 do not
        for (n, ok) in [(117, true), (118, false)] {
            let data = arrays(n);
            let mut scanner = Scanner::new(data.as_bytes());
            assert_eq!(scanner.skip_value(10).is_ok(), ok);
        }
    }

    #[test]
    fn agrees_with_serde_json_on_mutations() {
        // Every single-byte change of the sample to a byte JSON gives meaning to, and more.
        let bytes = b" {}[],:\"\\/-+.0123456789eEaflnrstu\x00\x1f\x7f\xc3\xa9";
        for at in 0..SAMPLE.len() {
            for &byte in bytes {
                let mut data = SAMPLE.to_vec();
                data[at] = byte;
                assert_eq!(
                    accepts(&data),
                    validate(&data).is_ok(),
                    "{:?}",
                    String::from_utf8_lossy(&data)
                );
                data.insert(at, byte);
                assert_eq!(accepts(&data), validate(&data).is_ok());
            }
        }
    }

    #[test]
    fn tracks_and_strips_whitespace() {
        let pretty = b"{ \"a b\" : [ 1 ,\n\t2 ] ,\r\n \"c\":\"  \\\" x \"}";
        assert_eq!(scan(pretty), Ok(true));
        let mut out = Vec::new();
        write_compact(pretty, true, &mut out);
        assert_eq!(out, b"{\"a b\":[1,2],\"c\":\"  \\\" x \"}");
        assert_eq!(scan(&out), Ok(false));
        assert_eq!(scan(b"  \"a b\"  "), Ok(false));
        assert_eq!(scan(b"[[[[]]]]"), Ok(false));
        assert_eq!(scan(b"[[[[] ]]]"), Ok(true));
        assert_eq!(scan(b"{\"\\\\\":{ }}"), Ok(true));
    }

    #[test]
    fn walks_objects() {
        let mut scanner = Scanner::new(br#"{ "a\u0062" : 1 , "c":{} }"#);
        assert_eq!(scanner.enter_object(0), Ok(true));
        let (key, escaped) = scanner.key().unwrap();
        assert_eq!((key, escaped), (&br#""a\u0062""#[..], true));
        assert_eq!(unescape(key), b"ab");
        assert_eq!(scanner.skip_value(1), Ok(false));
        assert_eq!(scanner.next_member(), Ok(true));
        assert_eq!(scanner.key().unwrap(), (&br#""c""#[..], false));
        assert_eq!(scanner.enter_object(1), Ok(false));
        assert_eq!(scanner.next_member(), Ok(false));
        assert_eq!(scanner.finish(), Ok(()));
        assert!(Scanner::new(b"{}").enter_object(MAX_DEPTH).is_err());
    }

    #[test]
    fn walks_arrays() {
        let mut scanner = Scanner::new(b"[ 1 ,[ ] ,\n{}]");
        assert_eq!(scanner.enter_array(0), Ok(true));
        assert_eq!(scanner.skip_value(1), Ok(false));
        assert_eq!(scanner.next_element(), Ok(true));
        assert_eq!(scanner.enter_array(1), Ok(false));
        assert_eq!(scanner.next_element(), Ok(true));
        assert_eq!(scanner.skip_value(1), Ok(false));
        assert_eq!(scanner.next_element(), Ok(false));
        assert_eq!(scanner.finish(), Ok(()));
        assert!(Scanner::new(b"[]").enter_array(MAX_DEPTH).is_err());
        assert!(Scanner::new(b"{}").enter_array(0).is_err());
        for bad in [&b"[1 2]"[..], b"[1,]", b"[1"] {
            let mut scanner = Scanner::new(bad);
            assert_eq!(scanner.enter_array(0), Ok(true));
            let walked = scanner.skip_value(1).and_then(|_| {
                while scanner.next_element()? {
                    scanner.skip_value(1)?;
                }
                Ok(())
            });
            assert!(walked.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn unescapes_strings() {
        let raw = r#""\"\\\/\b\f\n\r\t\u00e9\u20AC\ud83d\ude00é""#.as_bytes();
        assert!(accepts(raw));
        assert_eq!(
            String::from_utf8(unescape(raw)).unwrap(),
            "\"\\/\u{8}\u{c}\n\r\t\u{e9}\u{20ac}\u{1f600}é"
        );
    }
}
