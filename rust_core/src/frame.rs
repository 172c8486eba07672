//! The stored frame: a versioned, checksummed header followed by the (maybe compressed) payload.
//!
//! Layout, format version 2, all integers little endian:
//!
//! ```text
//! offset  size  field
//!      0     2  magic b"FX"
//!      2     1  format version = 2 (1 is read too)
//!      3     1  flags: bits 0-1 codec (0 none, 1 lz4; 2 zstd is reserved), bit 2 sealed,
//!                 other bits 0
//!      4     8  context version                      (VERSION_OFFSET)
//!     12     8  created_at, ms since the Unix epoch
//!     20     8  updated_at, ms
//!     28     8  expires_at, ms (0 = never)
//!     36     4  raw payload length (at most MAX_PAYLOAD_LEN)
//!     40     4  stored payload length (equals the bytes left after the header)
//!     44     1  session length s (0 = no session)
//!     45     s  session id, ASCII
//!   45+s     4  crc32 of bytes [0, 45+s), less the version and updated_at, then the
//!                 stored payload
//!   49+s     -  stored payload
//! ```
//!
//! A sealed frame (bit 2) stores the codec's output sealed with AES-256-GCM (`crate::seal`):
//! the key id, a nonce, the ciphertext and its tag, bound to associated data the caller names
//! (a context's tenant and token). The header stays in the clear, so that Redis's scripts
//! read and move the version as they do in any frame; the raw length is the payload's.
//!
//! The version and updated_at are left out of the checksum from format 2 on: a patch that
//! Redis appends to the context's log (see `fastctx.backends.scripts`) moves them forward in
//! place, without rewriting the frame. The payload is then the log's base document, and the
//! version the newest one. Format 1 frames (checksummed whole) are read as they are.
//!
//! Codec choice. The writer uses lz4: every cache miss decodes a frame, and lz4 decodes and
//! encodes faster than zstd at every size, which matters more for a store that promises
//! microsecond reads than zstd's better ratio. It is also pure Rust, so the crate needs no C
//! toolchain. Codec id 2 stays reserved for zstd; reading it is refused. The `codec-*` groups of
//! `benches/test_core_bench.py` measure both codecs (ratio, encode and decode time) on
//! chat-history JSON.
//!
//! COMPRESS_THRESHOLD is 1 KiB: below it lz4 can save only a few hundred bytes, while from there
//! on it already saves a good part of the payload for little time; a payload that does not
//! shrink is stored raw.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::Error;
use crate::gil::maybe_detach;
use crate::seal::{PyKeyring, Ring, split};

pub const MAGIC: &[u8; 2] = b"FX";
pub const FORMAT_VERSION: u8 = 2;
/// Byte offset of the 8-byte little-endian context version.
pub const VERSION_OFFSET: usize = 4;
/// Byte offset of the 8-byte updated_at; it follows the version and created_at.
pub const UPDATED_AT_OFFSET: usize = 20;
/// Bytes before the session id.
const FIXED_LEN: usize = 45;
const CRC_LEN: usize = 4;
/// Header size of a frame without a session; a session adds its length.
pub const FRAME_HEADER_SIZE: usize = FIXED_LEN + CRC_LEN;
/// Payloads of at least this many bytes are compressed (when that makes them smaller).
pub const COMPRESS_THRESHOLD: usize = 1024;
/// Largest payload a frame carries, so a forged header cannot make a reader allocate more.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024 * 1024;
pub const MAX_SESSION_LEN: usize = u8::MAX as usize;

const CODEC_MASK: u8 = 0b11;
const SEALED: u8 = 0b100;
const CODEC_NONE: u8 = 0;
const CODEC_LZ4: u8 = 1;
/// An lz4 block expands at most about 255-fold; a larger claimed raw length is a forgery.
const LZ4_MAX_RATIO: usize = 255;

/// The metadata a frame carries besides the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta<'a> {
    pub version: u64,
    pub created_at: u64,
    pub updated_at: u64,
    pub expires_at: u64,
    pub session: Option<&'a str>,
}

/// A header read and checked against the frame length, before the checksum is verified.
#[derive(Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub meta: Meta<'a>,
    pub codec: u8,
    /// The stored payload is sealed (see `crate::seal`).
    pub sealed: bool,
    pub raw_len: usize,
    /// Offset of the stored payload (the header size).
    pub payload_offset: usize,
}

/// Builds a frame; compresses the payload when it is long enough and compression pays off.
pub fn encode(payload: &[u8], meta: &Meta<'_>) -> Result<Vec<u8>, Error> {
    encode_sealed(payload, meta, None)
}

/// As `encode`, and with `seal` (a key ring and the associated data) the stored payload is
/// sealed under the ring's first key.
pub fn encode_sealed(
    payload: &[u8],
    meta: &Meta<'_>,
    seal: Option<(&Ring, &[u8])>,
) -> Result<Vec<u8>, Error> {
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(Error::Argument(format!(
            "payload of {} bytes exceeds the {MAX_PAYLOAD_LEN}-byte frame limit",
            payload.len()
        )));
    }
    let session = meta.session.map(str::as_bytes).unwrap_or_default();
    let bad_session = |why: &str| Err(Error::Argument(format!("session id {why}")));
    match meta.session {
        Some("") => return bad_session("must not be empty"),
        Some(s) if !s.is_ascii() => return bad_session("must be ASCII"),
        _ if session.len() > MAX_SESSION_LEN => return bad_session("must be at most 255 bytes"),
        _ => {}
    }
    let crc_at = FIXED_LEN + session.len();
    let offset = crc_at + CRC_LEN;

    let mut frame = Vec::with_capacity(offset + payload.len());
    frame.extend_from_slice(MAGIC);
    frame.push(FORMAT_VERSION);
    frame.push(CODEC_NONE);
    for field in [
        meta.version,
        meta.created_at,
        meta.updated_at,
        meta.expires_at,
    ] {
        frame.extend_from_slice(&field.to_le_bytes());
    }
    frame.extend_from_slice(&len_u32(payload.len()).to_le_bytes());
    frame.extend_from_slice(&[0; 4]); // stored length, known once the codec has run
    frame.push(session.len() as u8);
    frame.extend_from_slice(session);
    frame.extend_from_slice(&[0; CRC_LEN]);

    let mut codec = CODEC_NONE;
    if payload.len() >= COMPRESS_THRESHOLD {
        frame.resize(
            offset + lz4_flex::block::get_maximum_output_size(payload.len()),
            0,
        );
        // The buffer is sized by lz4's own bound, so compression cannot run out of room.
        if let Ok(n) = lz4_flex::block::compress_into(payload, &mut frame[offset..])
            && n < payload.len()
        {
            codec = CODEC_LZ4;
            frame.truncate(offset + n);
        }
    }
    if codec == CODEC_NONE {
        frame.truncate(offset);
        frame.extend_from_slice(payload);
    }
    frame[3] = codec;
    if let Some((ring, aad)) = seal {
        let sealed = ring.seal(&frame[offset..], aad)?;
        frame.truncate(offset);
        frame.extend_from_slice(&sealed);
        frame[3] |= SEALED;
    }
    let stored_len = len_u32(frame.len() - offset);
    frame[40..44].copy_from_slice(&stored_len.to_le_bytes());
    let crc = checksum(FORMAT_VERSION, &frame[..crc_at], &frame[offset..]);
    frame[crc_at..offset].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("lengths are checked against MAX_PAYLOAD_LEN")
}

fn checksum(format: u8, header: &[u8], stored: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    if format == 1 {
        hasher.update(header);
    } else {
        hasher.update(&header[..VERSION_OFFSET]);
        hasher.update(&header[VERSION_OFFSET + 8..UPDATED_AT_OFFSET]);
        hasher.update(&header[UPDATED_AT_OFFSET + 8..]);
    }
    hasher.update(stored);
    hasher.finalize()
}

fn u64_at(frame: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&frame[at..at + 8]);
    u64::from_le_bytes(bytes)
}

fn u32_at(frame: &[u8], at: usize) -> usize {
    let mut bytes = [0; 4];
    bytes.copy_from_slice(&frame[at..at + 4]);
    u32::from_le_bytes(bytes) as usize
}

/// Reads the header and checks it against the frame's length; does not verify the checksum.
pub fn parse_header(frame: &[u8]) -> Result<Header<'_>, Error> {
    if frame.len() < FRAME_HEADER_SIZE {
        return Err(Error::Frame(format!(
            "truncated frame: {} bytes, a header needs at least {FRAME_HEADER_SIZE}",
            frame.len()
        )));
    }
    if &frame[..2] != MAGIC {
        return Err(Error::Frame("not a fastctx frame (bad magic)".to_owned()));
    }
    if frame[2] != FORMAT_VERSION && frame[2] != 1 {
        return Err(Error::Frame(format!(
            "unknown frame format version {}",
            frame[2]
        )));
    }
    let flags = frame[3];
    if flags & !(CODEC_MASK | SEALED) != 0 {
        return Err(Error::Frame(format!("unknown frame flags {flags:#04x}")));
    }
    let codec = flags & CODEC_MASK;
    if codec != CODEC_NONE && codec != CODEC_LZ4 {
        return Err(Error::Frame(format!("unsupported frame codec {codec}")));
    }
    let raw_len = u32_at(frame, 36);
    let stored_len = u32_at(frame, 40);
    let session_len = frame[44] as usize;
    let payload_offset = FRAME_HEADER_SIZE + session_len;
    if frame.len() < payload_offset || frame.len() - payload_offset != stored_len {
        return Err(Error::Frame(format!(
            "truncated or overlong frame: {} bytes, header says {}",
            frame.len(),
            payload_offset as u64 + stored_len as u64
        )));
    }
    if raw_len > MAX_PAYLOAD_LEN {
        return Err(Error::Frame(format!(
            "payload length {raw_len} exceeds the {MAX_PAYLOAD_LEN}-byte limit"
        )));
    }
    let sealed = flags & SEALED != 0;
    let plausible = match codec {
        // A sealed payload is its codec's output and the seal's own bytes (checked on open).
        _ if sealed => raw_len <= stored_len.saturating_mul(LZ4_MAX_RATIO),
        CODEC_NONE => stored_len == raw_len,
        _ => raw_len <= stored_len.saturating_mul(LZ4_MAX_RATIO),
    };
    if !plausible {
        return Err(Error::Frame(format!(
            "payload length {raw_len} impossible for {stored_len} stored bytes"
        )));
    }
    let session = match session_len {
        0 => None,
        _ => match std::str::from_utf8(&frame[FIXED_LEN..FIXED_LEN + session_len]) {
            Ok(s) if s.is_ascii() => Some(s),
            _ => return Err(Error::Frame("session id is not ASCII".to_owned())),
        },
    };
    let meta = Meta {
        version: u64_at(frame, VERSION_OFFSET),
        created_at: u64_at(frame, 12),
        updated_at: u64_at(frame, 20),
        expires_at: u64_at(frame, 28),
        session,
    };
    Ok(Header {
        meta,
        codec,
        sealed,
        raw_len,
        payload_offset,
    })
}

/// Checks the whole frame and returns its header and the stored payload bytes.
pub fn verify(frame: &[u8]) -> Result<(Header<'_>, &[u8]), Error> {
    let header = parse_header(frame)?;
    let crc_at = header.payload_offset - CRC_LEN;
    let stored = &frame[header.payload_offset..];
    let expected = u32_at(frame, crc_at) as u32;
    if checksum(frame[2], &frame[..crc_at], stored) != expected {
        return Err(Error::Frame("frame checksum mismatch".to_owned()));
    }
    Ok((header, stored))
}

/// Decompresses `stored` into `out`, which has exactly the header's raw length.
pub fn decompress_into(codec: u8, stored: &[u8], out: &mut [u8]) -> Result<(), Error> {
    match codec {
        CODEC_NONE => out.copy_from_slice(stored),
        _ => {
            let n = lz4_flex::block::decompress_into(stored, out)
                .map_err(|err| Error::Frame(format!("corrupted compressed payload: {err}")))?;
            if n != out.len() {
                return Err(Error::Frame(format!(
                    "payload decompressed to {n} bytes, header says {}",
                    out.len()
                )));
            }
        }
    }
    Ok(())
}

/// Decodes a frame into its metadata and payload (pure Rust; the Python path avoids the copy).
pub fn decode(frame: &[u8]) -> Result<(Meta<'_>, Vec<u8>), Error> {
    decode_sealed(frame, None)
}

/// As `decode`, opening a sealed frame with `seal` (its key ring and associated data).
pub fn decode_sealed<'a>(
    frame: &'a [u8],
    seal: Option<(&Ring, &[u8])>,
) -> Result<(Meta<'a>, Vec<u8>), Error> {
    let (header, stored) = verify(frame)?;
    let mut payload = vec![0; header.raw_len];
    let opened = open_stored(&header, stored, seal)?;
    decompress_into(
        header.codec,
        opened.as_deref().unwrap_or(stored),
        &mut payload,
    )?;
    Ok((header.meta, payload))
}

/// The codec's output of a sealed frame, opened (None: the frame is not sealed).
fn open_stored(
    header: &Header<'_>,
    stored: &[u8],
    seal: Option<(&Ring, &[u8])>,
) -> Result<Option<Vec<u8>>, Error> {
    if !header.sealed {
        return Ok(None);
    }
    let Some((ring, aad)) = seal else {
        return Err(Error::Frame(
            "the frame is sealed, and no key ring was given to open it".to_owned(),
        ));
    };
    let opened = ring.open(stored, aad)?;
    let plausible = match header.codec {
        CODEC_NONE => opened.len() == header.raw_len,
        _ => header.raw_len <= opened.len().saturating_mul(LZ4_MAX_RATIO),
    };
    if !plausible {
        return Err(Error::Frame(format!(
            "payload length {} impossible for {} opened bytes",
            header.raw_len,
            opened.len()
        )));
    }
    Ok(Some(opened))
}

/// A decoded frame: the context's metadata and its JSON payload.
#[pyclass(frozen, get_all, module = "fastctx._core")]
pub struct Frame {
    version: u64,
    created_at: u64,
    updated_at: u64,
    expires_at: u64,
    session: Option<String>,
    payload: Py<PyBytes>,
    size: usize,
    stored_size: usize,
    compressed: bool,
    /// The id of the key a sealed frame was sealed with; None for a frame in the clear.
    key_id: Option<String>,
}

#[pymethods]
impl Frame {
    fn __repr__(&self) -> String {
        let session = match &self.session {
            Some(session) => format!("'{session}'"),
            None => "None".to_owned(),
        };
        let compressed = if self.compressed { "True" } else { "False" };
        format!(
            "Frame(version={}, size={}, stored_size={}, compressed={compressed}, session={session})",
            self.version, self.size, self.stored_size,
        )
    }
}

/// Build a frame: header, crc32, and the payload (lz4-compressed from COMPRESS_THRESHOLD bytes),
/// sealed with `keyring` and `aad` when a key ring is given.
#[pyfunction]
#[pyo3(signature = (
    payload, version, created_at, updated_at, expires_at, session = None, keyring = None,
    aad = None
))]
#[allow(clippy::too_many_arguments)]
fn encode_frame<'py>(
    py: Python<'py>,
    payload: &[u8],
    version: u64,
    created_at: u64,
    updated_at: u64,
    expires_at: u64,
    session: Option<&str>,
    keyring: Option<&PyKeyring>,
    aad: Option<&[u8]>,
) -> PyResult<Bound<'py, PyBytes>> {
    let meta = Meta {
        version,
        created_at,
        updated_at,
        expires_at,
        session,
    };
    let seal = keyring.map(|ring| (ring.ring(), aad.unwrap_or_default()));
    let frame = maybe_detach(py, payload.len(), || encode_sealed(payload, &meta, seal))?;
    Ok(PyBytes::new(py, &frame))
}

/// Decode and verify a frame, opening a sealed one with `keyring` and `aad`; FrameError on
/// anything wrong.
#[pyfunction]
#[pyo3(signature = (frame, keyring = None, aad = None))]
fn decode_frame(
    py: Python<'_>,
    frame: &[u8],
    keyring: Option<&PyKeyring>,
    aad: Option<&[u8]>,
) -> PyResult<Frame> {
    let (header, stored) = verify(frame)?;
    let raw_len = header.raw_len;
    let seal = keyring.map(|ring| (ring.ring(), aad.unwrap_or_default()));
    let opened = maybe_detach(py, raw_len, || open_stored(&header, stored, seal))?;
    let source = opened.as_deref().unwrap_or(stored);
    let payload = PyBytes::new_with(py, raw_len, |out| {
        Ok(maybe_detach(py, raw_len, || {
            decompress_into(header.codec, source, out)
        })?)
    })?;
    Ok(Frame {
        version: header.meta.version,
        created_at: header.meta.created_at,
        updated_at: header.meta.updated_at,
        expires_at: header.meta.expires_at,
        session: header.meta.session.map(str::to_owned),
        payload: payload.unbind(),
        size: raw_len,
        stored_size: frame.len(),
        compressed: header.codec != CODEC_NONE,
        key_id: header
            .sealed
            .then(|| split(stored).ok().map(|(id, _)| id.to_owned()))
            .flatten(),
    })
}

/// The context version of a frame, from its header alone (the checksum is not verified).
#[pyfunction]
fn frame_version(frame: &[u8]) -> PyResult<u64> {
    Ok(parse_header(frame)?.meta.version)
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("FRAME_HEADER_SIZE", FRAME_HEADER_SIZE)?;
    m.add("VERSION_OFFSET", VERSION_OFFSET)?;
    m.add("UPDATED_AT_OFFSET", UPDATED_AT_OFFSET)?;
    m.add("COMPRESS_THRESHOLD", COMPRESS_THRESHOLD)?;
    m.add_class::<Frame>()?;
    m.add_function(wrap_pyfunction!(encode_frame, m)?)?;
    m.add_function(wrap_pyfunction!(decode_frame, m)?)?;
    m.add_function(wrap_pyfunction!(frame_version, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: Meta<'static> = Meta {
        version: 7,
        created_at: 1_764_000_000_000,
        updated_at: 1_764_000_000_123,
        expires_at: 0,
        session: Some("0123456789ABCDEFGHIJKL"),
    };

    fn document(len: usize) -> Vec<u8> {
        let mut doc = b"[".to_vec();
        let mut i = 0u64;
        while doc.len() < len {
            doc.extend_from_slice(
                format!("{{\"n\":{i},\"name\":\"item {}\"}},", i * 31).as_bytes(),
            );
            i += 1;
        }
        doc.extend_from_slice(b"0]");
        doc
    }

    #[test]
    fn round_trips_small_and_large() {
        for len in [
            0,
            1,
            100,
            COMPRESS_THRESHOLD - 1,
            COMPRESS_THRESHOLD,
            300_000,
        ] {
            let payload = document(len);
            for session in [None, Some("s"), META.session] {
                let meta = Meta { session, ..META };
                let frame = encode(&payload, &meta).unwrap();
                let (back, decoded) = decode(&frame).unwrap();
                assert_eq!(back, meta);
                assert_eq!(decoded, payload);
                assert_eq!(u64_at(&frame, VERSION_OFFSET), 7);
            }
        }
    }

    #[test]
    fn compresses_only_from_threshold() {
        let small = document(COMPRESS_THRESHOLD);
        let large = document(COMPRESS_THRESHOLD * 4);
        let small_frame = encode(&small[..COMPRESS_THRESHOLD - 1], &META).unwrap();
        assert_eq!(small_frame[3], CODEC_NONE);
        let large_frame = encode(&large, &META).unwrap();
        assert_eq!(large_frame[3], CODEC_LZ4);
        assert!(large_frame.len() < large.len());
    }

    #[test]
    fn stores_incompressible_payloads_raw() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let frame = encode(&noise, &META).unwrap();
        assert_eq!(frame[3], CODEC_NONE);
        assert_eq!(decode(&frame).unwrap().1, noise);
    }

    #[test]
    fn rejects_bad_arguments() {
        let bad = |session: &str| {
            encode(
                b"{}",
                &Meta {
                    session: Some(session),
                    ..META
                },
            )
        };
        for session in ["", "é", &"x".repeat(256)] {
            assert!(
                matches!(bad(session), Err(Error::Argument(ref msg)) if msg.starts_with("session id")),
                "{session:?}"
            );
        }
        assert!(bad(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn rejects_every_truncation_and_extension() {
        for payload in [document(10), document(5000)] {
            let frame = encode(&payload, &META).unwrap();
            for len in 0..frame.len() {
                assert!(decode(&frame[..len]).is_err(), "truncated to {len}");
                assert!(parse_header(&frame[..len]).is_err(), "truncated to {len}");
            }
            let mut longer = frame.clone();
            longer.push(0);
            assert!(decode(&longer).is_err());
        }
    }

    #[test]
    fn rejects_every_single_byte_flip() {
        for payload in [document(10), document(3000)] {
            let frame = encode(&payload, &META).unwrap();
            let in_place = VERSION_OFFSET..VERSION_OFFSET + 8;
            let updated = UPDATED_AT_OFFSET..UPDATED_AT_OFFSET + 8;
            for at in (0..frame.len()).filter(|at| !in_place.contains(at) && !updated.contains(at))
            {
                for flip in [0x01, 0x80, 0xff] {
                    let mut bad = frame.clone();
                    bad[at] ^= flip;
                    assert!(decode(&bad).is_err(), "byte {at} ^ {flip:#x}");
                }
            }
        }
    }

    /// Re-checksums a frame after a header edit, as a forger would.
    fn forge(mut frame: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        edit(&mut frame);
        let crc_at = FRAME_HEADER_SIZE - CRC_LEN + frame[44] as usize;
        let crc = checksum(frame[2], &frame[..crc_at], &frame[crc_at + CRC_LEN..]);
        frame[crc_at..crc_at + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
        frame
    }

    fn ring(ids: &[(&str, u8)]) -> Ring {
        let keys: Vec<(String, Vec<u8>)> = ids
            .iter()
            .map(|(id, fill)| ((*id).to_owned(), vec![*fill; 32]))
            .collect();
        Ring::new(&keys).unwrap()
    }

    #[test]
    fn sealed_frames_round_trip_and_open_only_as_sealed() {
        let keys = ring(&[("k1", 7)]);
        for len in [0, 100, COMPRESS_THRESHOLD, 300_000] {
            let payload = document(len);
            let frame = encode_sealed(&payload, &META, Some((&keys, b"acme/tok"))).unwrap();
            assert_eq!(frame[3] & SEALED, SEALED);
            let needle = &payload[..payload.len().min(12)];
            if len > 0 {
                assert!(!frame.windows(needle.len()).any(|w| w == needle));
            }
            let (meta, opened) = decode_sealed(&frame, Some((&keys, b"acme/tok"))).unwrap();
            assert_eq!((meta, opened), (META, payload.clone()));
            // Neither without the ring, nor bound to another name, nor with another ring.
            assert!(matches!(decode(&frame), Err(Error::Frame(_))));
            assert!(decode_sealed(&frame, Some((&keys, b"acme/other"))).is_err());
            assert!(decode_sealed(&frame, Some((&ring(&[("k2", 8)]), b"acme/tok"))).is_err());
        }
    }

    #[test]
    fn a_ring_reads_frames_in_the_clear_and_the_header_stays_readable() {
        let keys = ring(&[("k1", 7)]);
        let clear = encode(b"{\"a\":1}", &META).unwrap();
        assert_eq!(
            decode_sealed(&clear, Some((&keys, b"x"))).unwrap().1,
            b"{\"a\":1}"
        );
        let mut sealed = encode_sealed(b"{\"a\":1}", &META, Some((&keys, b"x"))).unwrap();
        assert_eq!(parse_header(&sealed).unwrap().meta, META);
        // The version and updated_at move in place, as Redis's scripts move them.
        sealed[VERSION_OFFSET..VERSION_OFFSET + 8].copy_from_slice(&9u64.to_le_bytes());
        let (meta, _) = decode_sealed(&sealed, Some((&keys, b"x"))).unwrap();
        assert_eq!(meta.version, 9);
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(decode_sealed(&sealed, Some((&keys, b"x"))).is_err());
    }

    #[test]
    fn reads_format_1_frames() {
        for payload in [document(10), document(3000)] {
            let old = forge(encode(&payload, &META).unwrap(), |f| f[2] = 1);
            let (meta, decoded) = decode(&old).unwrap();
            assert_eq!((meta, decoded), (META, payload.clone()));
            // format 1 checksums the version too
            let mut moved = old.clone();
            moved[VERSION_OFFSET] ^= 1;
            assert!(decode(&moved).is_err());
        }
    }

    #[test]
    fn version_and_updated_at_move_in_place() {
        let frame = encode(&document(3000), &META).unwrap();
        let mut moved = frame.clone();
        moved[VERSION_OFFSET..VERSION_OFFSET + 8].copy_from_slice(&9u64.to_le_bytes());
        moved[UPDATED_AT_OFFSET..UPDATED_AT_OFFSET + 8].copy_from_slice(&77u64.to_le_bytes());
        let (meta, payload) = decode(&moved).unwrap();
        assert_eq!((meta.version, meta.updated_at), (9, 77));
        assert_eq!(payload, document(3000));
    }

    #[test]
    fn rejects_forged_headers() {
        let frame = encode(&document(5000), &META).unwrap();
        type Edit = fn(&mut Vec<u8>);
        let cases: [(&str, Edit); 10] = [
            ("magic", |f| f[0] = b'X'),
            ("format", |f| f[2] = 3),
            ("flags", |f| f[3] |= 0x04),
            ("zstd codec", |f| f[3] = 2),
            ("codec 3", |f| f[3] = 3),
            ("codec none", |f| f[3] = CODEC_NONE),
            ("raw length huge", |f| {
                f[36..40].copy_from_slice(&u32::MAX.to_le_bytes())
            }),
            ("raw length +1", |f| f[36] = f[36].wrapping_add(1)),
            ("raw length -1", |f| f[36] = f[36].wrapping_sub(1)),
            ("session not ASCII", |f| f[FIXED_LEN] = 0xc3),
        ];
        for (name, edit) in cases {
            let forged = forge(frame.clone(), edit);
            assert!(decode(&forged).is_err(), "{name}");
        }
        // a forged 64 MiB claim backed by a few bytes is refused before any allocation
        let tiny = encode(&document(COMPRESS_THRESHOLD), &META).unwrap();
        let forged = forge(tiny, |f| {
            f[36..40].copy_from_slice(&(64u32 << 20).to_le_bytes())
        });
        let err = parse_header(&forged).unwrap_err();
        assert!(
            matches!(err, Error::Frame(ref msg) if msg.contains("impossible")),
            "{err:?}"
        );
    }

    #[test]
    fn survives_garbage_after_a_valid_header() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..2000 {
            let len = 1 + round % 700;
            let garbage: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let raw = 1 + (state as usize % (len * 8));
            let mut frame = encode(b"", &META).unwrap();
            frame.extend_from_slice(&garbage);
            let forged = forge(frame, |f| {
                f[3] = CODEC_LZ4;
                f[36..40].copy_from_slice(&(raw as u32).to_le_bytes());
                f[40..44].copy_from_slice(&(len as u32).to_le_bytes());
            });
            // must return, never panic; a lucky garbage block may even decode to `raw` bytes
            let _ = decode(&forged);
        }
    }
}
