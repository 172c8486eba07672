//! Tokens: 128 bits from the OS CSPRNG, written as exactly 22 base62 characters.
//!
//! The bits are fetched from the OS in batches; a token never shares them with another, nor
//! with a process forked off after they were fetched.

use std::cell::RefCell;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;

use crate::errors::Error;

/// Length of every token: 62**22 is the first power of 62 above 2**128.
pub const TOKEN_LEN: usize = 22;

/// Digits in ASCII order, so that tokens sort like the numbers they encode.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// 62**10, the largest power of 62 below 2**64: digits come ten at a time from a u64, so that
/// only two of the divisions are of u128s (which cost tens of times as much).
const TEN_DIGITS: u128 = 62u128.pow(10);

/// Writes `value` in base62, left-padded with '0' to [`TOKEN_LEN`] characters.
pub fn encode(value: u128) -> String {
    let mut out = [b'0'; TOKEN_LEN];
    let (high, low) = (value / TEN_DIGITS, (value % TEN_DIGITS) as u64);
    let (top, middle) = ((high / TEN_DIGITS) as u64, (high % TEN_DIGITS) as u64);
    for (slots, mut part) in [(12..22, low), (2..12, middle), (0..2, top)] {
        for slot in out[slots].iter_mut().rev() {
            *slot = ALPHABET[(part % 62) as usize];
            part /= 62;
        }
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

/// Tokens' worth of OS randomness fetched at once: one `getrandom` call per 64 tokens rather
/// than one each (the call was most of a token's cost).
const BATCH: usize = 64 * 16;

/// Forks seen by this process (counted in the child): randomness fetched before a fork is
/// never used after it, or parent and child would hand out the same tokens.
static FORKS: AtomicU64 = AtomicU64::new(0);
static WATCH_FORKS: Once = Once::new();

extern "C" fn forked_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// OS randomness not handed out yet, one per thread; each 16 bytes go to one token only and
/// are wiped as they go.
struct Pool {
    bytes: [u8; BATCH],
    next: usize,
    forks: u64,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { bytes: [0; BATCH], next: BATCH, forks: 0 })
    };
}

/// 16 bytes from the OS CSPRNG that no other token has had.
fn random_bytes() -> Result<[u8; 16], Error> {
    WATCH_FORKS.call_once(|| {
        // SAFETY: the handler only bumps an atomic, which is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    });
    POOL.with_borrow_mut(|pool| {
        let forks = FORKS.load(Ordering::Relaxed);
        if pool.next == BATCH || pool.forks != forks {
            getrandom::fill(&mut pool.bytes)
                .map_err(|err| Error::Os(format!("OS random source failed: {err}")))?;
            pool.next = 0;
            pool.forks = forks;
        }
        let mut out = [0u8; 16];
        let taken = &mut pool.bytes[pool.next..pool.next + 16];
        out.copy_from_slice(taken);
        taken.fill(0);
        pool.next += 16;
        Ok(out)
    })
}

/// A fresh token from 128 bits of OS randomness.
pub fn generate() -> Result<String, Error> {
    Ok(encode(u128::from_le_bytes(random_bytes()?)))
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

    #[test]
    fn batches_hand_out_each_draw_once_and_wipe_it() {
        let tokens: std::collections::HashSet<String> =
            (0..3 * BATCH).map(|_| generate().unwrap()).collect();
        assert_eq!(tokens.len(), 3 * BATCH); // across several batches, no repeats
        POOL.with_borrow(|pool| assert!(pool.bytes[..pool.next].iter().all(|&b| b == 0)));
    }

    #[test]
    fn a_fork_makes_the_pool_draw_again() {
        generate().unwrap();
        let before = POOL.with_borrow(|pool| (pool.next, pool.bytes));
        forked_child(); // as the handler does in a child
        generate().unwrap();
        POOL.with_borrow(|pool| {
            assert_eq!(pool.next, 16); // a fresh batch, its first draw taken
            assert_ne!(pool.bytes[16..], before.1[16..]);
        });
    }

    #[test]
    fn encodes_as_repeated_division_does() {
        let plain = |mut value: u128| {
            let mut out = [b'0'; TOKEN_LEN];
            for slot in out.iter_mut().rev() {
                *slot = ALPHABET[(value % 62) as usize];
                value /= 62;
            }
            String::from_utf8(out.to_vec()).unwrap()
        };
        let mut value: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
        for _ in 0..10_000 {
            assert_eq!(encode(value), plain(value));
            value = value.rotate_left(7) ^ value.wrapping_mul(6_364_136_223_846_793_005);
        }
        for edge in [
            0,
            1,
            TEN_DIGITS - 1,
            TEN_DIGITS,
            TEN_DIGITS * TEN_DIGITS,
            u128::MAX,
        ] {
            assert_eq!(encode(edge), plain(edge));
        }
    }
}
