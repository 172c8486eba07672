//! RFC 6901 JSON Pointer: parsing, and finding the value a pointer names.

use std::fmt;

use serde_json::Value;

/// A parsed JSON Pointer: its reference tokens, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer(Vec<String>);

impl Pointer {
    /// Parses `text`: empty (the whole document) or '/'-separated tokens with ~0 and ~1 escapes.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Self(Vec::new()));
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "JSON Pointer {text:?} must be empty or start with '/'"
            ));
        };
        rest.split('/')
            .map(|token| unescape(token).ok_or_else(|| format!("bad '~' escape in {text:?}")))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The reference tokens, unescaped.
    pub fn tokens(&self) -> &[String] {
        &self.0
    }

    /// How many reference tokens: the nesting of the location it names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pointer to the place its first `len` tokens lead to.
    /// The pointer of these reference tokens.
    pub fn from_tokens(tokens: &[String]) -> Self {
        Self(tokens.to_vec())
    }

    pub fn prefix(&self, len: usize) -> Self {
        Self(self.0[..len.min(self.0.len())].to_vec())
    }

    pub fn is_proper_prefix_of(&self, other: &Self) -> bool {
        self.0.len() < other.0.len() && other.0.starts_with(&self.0)
    }

    pub fn split_last(&self) -> Option<(&[String], &str)> {
        self.0
            .split_last()
            .map(|(last, parent)| (parent, last.as_str()))
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for token in &self.0 {
            write!(f, "/{}", token.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

/// Undoes RFC 6901's escapes (~1 is '/', ~0 is '~'); `None` for any other '~'.
fn unescape(token: &str) -> Option<String> {
    if !token.contains('~') {
        return Some(token.to_owned());
    }
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// An array index token: "0" or digits without a leading zero; `-` means "past the end".
pub fn array_index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if token == "-" {
        return match allow_end {
            true => Ok(len),
            false => Err("'-' names no existing array element".to_owned()),
        };
    }
    let digits_only = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (token.len() > 1 && token.starts_with('0')) {
        return Err(format!("{token:?} is not an array index"));
    }
    match token.parse::<usize>() {
        Ok(index) if index < len || (allow_end && index == len) => Ok(index),
        _ => Err(format!(
            "array index {token} is out of bounds (length {len})"
        )),
    }
}

/// The value `tokens` names inside `value`.
pub fn get<'v>(mut value: &'v Value, tokens: &[String]) -> Result<&'v Value, String> {
    for token in tokens {
        value = match value {
            Value::Object(map) => map
                .get(token)
                .ok_or_else(|| format!("no member {token:?}"))?,
            Value::Array(items) => &items[array_index(token, items.len(), false)?],
            _ => return Err(format!("cannot look up {token:?} in a scalar")),
        };
    }
    Ok(value)
}

/// The value `tokens` names inside `value`, mutably.
pub fn get_mut<'v>(mut value: &'v mut Value, tokens: &[String]) -> Result<&'v mut Value, String> {
    for token in tokens {
        value = match value {
            Value::Object(map) => map
                .get_mut(token)
                .ok_or_else(|| format!("no member {token:?}"))?,
            Value::Array(items) => {
                let index = array_index(token, items.len(), false)?;
                &mut items[index]
            }
            _ => return Err(format!("cannot look up {token:?} in a scalar")),
        };
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers() {
        assert_eq!(Pointer::parse("").unwrap().0, Vec::<String>::new());
        assert_eq!(Pointer::parse("/").unwrap().0, vec![String::new()]);
        assert_eq!(
            Pointer::parse("/a~1b/m~0n/~01").unwrap().0,
            vec!["a/b", "m~n", "~1"]
        );
        assert!(Pointer::parse("a").is_err());
        assert!(Pointer::parse("/a~").is_err());
        assert!(Pointer::parse("/a~2").is_err());
        assert_eq!(
            Pointer::parse("/a~1b/m~0n").unwrap().to_string(),
            "/a~1b/m~0n"
        );
        assert_eq!(array_index("0", 1, false), Ok(0));
        assert_eq!(array_index("1", 1, true), Ok(1));
        for bad in [
            "01",
            "-1",
            "+1",
            "1.0",
            "",
            " 1",
            "1",
            "99999999999999999999999",
        ] {
            assert!(array_index(bad, 1, false).is_err(), "{bad}");
        }
    }
}
