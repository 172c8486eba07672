//! Sealing bytes for storage: AES-256-GCM (RustCrypto's `aes-gcm`) under a ring of named keys.
//!
//! The first key of a ring seals; every key of it opens, so that a ring with a new key in
//! front still opens what the old ones sealed (key rotation). A sealed value names its key
//! and binds the associated data it was sealed with (a context's tenant and token): the same
//! bytes stored under another name do not open.
//!
//! Layout of a sealed value:
//!
//! ```text
//! offset  size  field
//!      0     2  magic b"FE"
//!      2     1  format = 1
//!      3     1  key id length k (1 to 255)
//!      4     k  key id, ASCII
//!    4+k    12  nonce, from the OS CSPRNG
//!   16+k     -  ciphertext, then the 16-byte tag
//! ```
//!
//! Nonces are random: a key should seal fewer than 2**32 values (NIST SP 800-38D's bound for
//! random 96-bit nonces) before a new key is put in front of it.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::Error;
use crate::gil::maybe_detach;

pub const MAGIC: &[u8; 2] = b"FE";
pub const FORMAT: u8 = 1;
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

/// Named AES-256-GCM keys; the first seals, all open.
pub struct Ring {
    keys: Vec<(String, Aes256Gcm)>,
}

impl Ring {
    pub fn new(keys: &[(String, Vec<u8>)]) -> Result<Self, Error> {
        if keys.is_empty() {
            return Err(Error::Argument(
                "a key ring needs at least one key".to_owned(),
            ));
        }
        let mut ring = Vec::with_capacity(keys.len());
        for (id, key) in keys {
            if id.is_empty() || id.len() > 255 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::Argument(format!(
                    "key id {id:?} must be 1 to 255 printable ASCII characters"
                )));
            }
            if key.len() != KEY_BYTES {
                return Err(Error::Argument(format!(
                    "key {id:?} is {} bytes; AES-256 takes {KEY_BYTES}",
                    key.len()
                )));
            }
            if ring
                .iter()
                .any(|(seen, _): &(String, Aes256Gcm)| seen == id)
            {
                return Err(Error::Argument(format!("key id {id:?} is given twice")));
            }
            let cipher = Aes256Gcm::new_from_slice(key).expect("the length is checked above");
            ring.push((id.clone(), cipher));
        }
        Ok(Ring { keys: ring })
    }

    /// The id of the key that seals.
    pub fn primary(&self) -> &str {
        &self.keys[0].0
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        let (id, cipher) = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce)
            .map_err(|err| Error::Os(format!("OS random source failed: {err}")))?;
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::Argument("the value is too large to seal".to_owned()))?;
        let mut out = Vec::with_capacity(4 + id.len() + NONCE_BYTES + sealed.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        let (id, rest) = split(sealed)?;
        let Some((_, cipher)) = self.keys.iter().find(|(known, _)| known == id) else {
            return Err(Error::Frame(format!(
                "sealed under key {id:?}, which is not in the key ring"
            )));
        };
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| {
                Error::Frame(format!(
                    "a value sealed under key {id:?} does not open: altered, or stored under \
                     another name"
                ))
            })
    }
}

/// Whether `value` is laid out as a sealed value (it may still fail to open).
pub fn is_sealed(value: &[u8]) -> bool {
    split(value).is_ok()
}

/// The key id a sealed value names, and what follows it (nonce, ciphertext and tag).
pub fn split(sealed: &[u8]) -> Result<(&str, &[u8]), Error> {
    let malformed = || Error::Frame("not a sealed value, or a truncated one".to_owned());
    if sealed.len() < 4 || &sealed[..2] != MAGIC || sealed[2] != FORMAT {
        return Err(malformed());
    }
    let id_len = sealed[3] as usize;
    let rest = &sealed[4..];
    if id_len == 0 || rest.len() < id_len + NONCE_BYTES + TAG_BYTES {
        return Err(malformed());
    }
    let id = std::str::from_utf8(&rest[..id_len]).map_err(|_| malformed())?;
    Ok((id, &rest[id_len..]))
}

/// A ring of named AES-256-GCM keys for Python: `Keyring([("k2", key2), ("k1", key1)])`.
#[pyclass(frozen, module = "fastctx._core", name = "Keyring")]
pub struct PyKeyring {
    ring: Ring,
}

impl PyKeyring {
    pub fn ring(&self) -> &Ring {
        &self.ring
    }
}

#[pymethods]
impl PyKeyring {
    #[new]
    fn new(keys: Vec<(String, Vec<u8>)>) -> PyResult<Self> {
        Ok(PyKeyring {
            ring: Ring::new(&keys)?,
        })
    }

    /// The id of the key that seals (the first).
    #[getter]
    fn primary(&self) -> &str {
        self.ring.primary()
    }

    /// `plaintext` sealed under the first key, bound to `aad`.
    fn seal<'py>(
        &self,
        py: Python<'py>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let sealed = maybe_detach(py, plaintext.len(), || self.ring.seal(plaintext, aad))?;
        Ok(PyBytes::new(py, &sealed))
    }

    /// What `sealed` holds, if it opens under the key it names with `aad`; FrameError if not.
    fn open<'py>(
        &self,
        py: Python<'py>,
        sealed: &[u8],
        aad: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let opened = maybe_detach(py, sealed.len(), || self.ring.open(sealed, aad))?;
        Ok(PyBytes::new(py, &opened))
    }
}

/// The key id a sealed value names; None for bytes that are not a sealed value.
#[pyfunction]
fn sealed_key_id(value: &[u8]) -> Option<&str> {
    split(value).ok().map(|(id, _)| id)
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyKeyring>()?;
    m.add_function(wrap_pyfunction!(sealed_key_id, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[(&str, u8)]) -> Ring {
        let keys: Vec<(String, Vec<u8>)> = ids
            .iter()
            .map(|(id, fill)| ((*id).to_owned(), vec![*fill; KEY_BYTES]))
            .collect();
        Ring::new(&keys).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_with_its_associated_data_only() {
        let keys = ring(&[("k1", 1)]);
        let sealed = keys.seal(b"{\"secret\":1}", b"acme/token").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(split(&sealed).unwrap().0, "k1");
        assert_eq!(
            keys.open(&sealed, b"acme/token").unwrap(),
            b"{\"secret\":1}"
        );
        assert!(matches!(
            keys.open(&sealed, b"globex/token"),
            Err(Error::Frame(_))
        ));
    }

    #[test]
    fn each_seal_has_a_nonce_of_its_own() {
        let keys = ring(&[("k1", 1)]);
        assert_ne!(
            keys.seal(b"same", b"a").unwrap(),
            keys.seal(b"same", b"a").unwrap()
        );
    }

    #[test]
    fn a_ring_with_a_new_key_in_front_opens_the_old_ones() {
        let old = ring(&[("k1", 1)]);
        let sealed = old.seal(b"kept", b"a").unwrap();
        let rotated = ring(&[("k2", 2), ("k1", 1)]);
        assert_eq!(rotated.open(&sealed, b"a").unwrap(), b"kept");
        let resealed = rotated.seal(b"kept", b"a").unwrap();
        assert_eq!(split(&resealed).unwrap().0, "k2");
        let Err(Error::Frame(why)) = old.open(&resealed, b"a") else {
            panic!("a key the ring does not hold opened a value")
        };
        assert!(why.contains("k2"));
    }

    #[test]
    fn an_altered_or_truncated_value_does_not_open() {
        let keys = ring(&[("k1", 1)]);
        let mut sealed = keys.seal(b"value", b"a").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(keys.open(&sealed, b"a").is_err());
        assert!(keys.open(&sealed[..10], b"a").is_err());
        assert!(keys.open(b"{\"plain\":true}", b"a").is_err());
        assert!(!is_sealed(b"{\"plain\":true}"));
    }

    #[test]
    fn bad_rings_are_refused() {
        assert!(Ring::new(&[]).is_err());
        assert!(Ring::new(&[("k1".to_owned(), vec![0; 16])]).is_err());
        assert!(Ring::new(&[("".to_owned(), vec![0; 32])]).is_err());
        let twice = [("k".to_owned(), vec![0; 32]), ("k".to_owned(), vec![1; 32])];
        assert!(Ring::new(&twice).is_err());
    }
}
