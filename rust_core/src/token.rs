//! Tokens: 128 bits from the OS CSPRNG, written as exactly 22 base62 characters.

use pyo3::prelude::*;

use crate::errors::Error;

/// Length of every token: 62**22 is the first power of 62 above 2**128.
pub const TOKEN_LEN: usize = 22;

/// Digits in ASCII order, so that tokens sort like the numbers they encode.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Writes `value` in base62, left-padded with '0' to [`TOKEN_LEN`] characters.
pub fn encode(mut value: u128) -> String {
    let mut out = [b'0'; TOKEN_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// The number a token encodes, or `None` when `text` is not a token.
pub fn decode(text: &str) -> Option<u128> {
    if text.len() != TOKEN_LEN {
        return None;
    }
    text.bytes().try_fold(0u128, |acc, byte| {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'A'..=b'Z' => byte - b'A' + 10,
            b'a'..=b'z' => byte - b'a' + 36,
            _ => return None,
        };
        acc.checked_mul(62)?.checked_add(u128::from(digit))
    })
}

/// A fresh token from 128 bits of OS randomness.
pub fn generate() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|err| Error::Os(format!("OS random source failed: {err}")))?;
    Ok(encode(u128::from_le_bytes(bytes)))
}

/// Return a new token: 128 bits from the OS CSPRNG, base62, always 22 characters.
#[pyfunction]
fn new_token() -> PyResult<String> {
    Ok(generate()?)
}

/// Tell whether `value` is exactly 22 characters of [0-9A-Za-z] encoding a number < 2**128.
#[pyfunction]
fn is_token(value: &str) -> bool {
    decode(value).is_some()
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(new_token, m)?)?;
    m.add_function(wrap_pyfunction!(is_token, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_bounds() {
        assert_eq!(encode(0), "0000000000000000000000");
        assert_eq!(encode(61), "000000000000000000000z");
        assert_eq!(encode(62), "0000000000000000000010");
        assert_eq!(encode(u128::MAX), "7n42DGM5Tflk9n8mt7Fhc7");
    }

    #[test]
    fn round_trips() {
        for value in [0, 1, 61, 62, 12345678901234567890, u128::MAX / 3, u128::MAX] {
            let text = encode(value);
            assert_eq!(text.len(), TOKEN_LEN);
            assert_eq!(decode(&text), Some(value));
        }
    }

    #[test]
    fn rejects_non_tokens() {
        assert_eq!(decode(""), None);
        assert_eq!(decode("000000000000000000000"), None);
        assert_eq!(decode("00000000000000000000000"), None);
        assert_eq!(decode("000000000000000000000-"), None);
        assert_eq!(decode("00000000000000000000é"), None);
        // one past u128::MAX, and the largest 22-character string
        assert_eq!(decode("7n42DGM5Tflk9n8mt7Fhc8"), None);
        assert_eq!(decode("zzzzzzzzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn generates_distinct_tokens() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(decode(&a).is_some());
        assert_ne!(a, b);
    }
}
