//! The in-process cache: an LRU bounded by bytes, with per-entry expiry, shared by threads.
//!
//! Entries live in a slab (`Vec`) linked into a recency list by index, and a `HashMap` maps keys
//! to slab slots, so get, put and eviction are O(1). The Python class stores the payload
//! `bytes` object itself: a hit hands back the very object that was put, with no copy.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::document::Document;
use pyo3::types::PyBytes;

/// Bytes charged per entry beside its payload and key: slot, map entry and `bytes` header.
pub const ENTRY_OVERHEAD: usize = 128;

const NIL: usize = usize::MAX;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

fn is_live(expires_at: u64, now: u64) -> bool {
    expires_at == 0 || now < expires_at
}

/// What a cache entry holds besides its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    pub version: u64,
    pub expires_at: u64,
    pub cached_at: u64,
}

struct Entry<V> {
    key: Box<str>,
    value: V,
    meta: EntryMeta,
    size: usize,
}

struct Node<V> {
    entry: Option<Entry<V>>,
    /// Toward the most recently used end.
    prev: usize,
    /// Toward the least recently used end.
    next: usize,
}

/// The outcome of a lookup.
pub enum Lookup<'a, V> {
    Hit(&'a V, EntryMeta),
    /// The entry had expired and was removed; its value is handed back to be dropped.
    Expired(V),
    Miss,
}

/// A byte-bounded LRU map from string keys to versioned values with an expiry time.
pub struct Lru<V> {
    index: HashMap<Box<str>, usize>,
    nodes: Vec<Node<V>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: the next to evict.
    tail: usize,
    max_bytes: usize,
    bytes_used: usize,
    hits: u64,
    misses: u64,
    evictions: u64,
}

impl<V> Lru<V> {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            index: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            max_bytes,
            bytes_used: 0,
            hits: 0,
            misses: 0,
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn unlink(&mut self, at: usize) {
        let (prev, next) = (self.nodes[at].prev, self.nodes[at].next);
        match prev {
            NIL => self.head = next,
            _ => self.nodes[prev].next = next,
        }
        match next {
            NIL => self.tail = prev,
            _ => self.nodes[next].prev = prev,
        }
    }

    fn push_front(&mut self, at: usize) {
        self.nodes[at].prev = NIL;
        self.nodes[at].next = self.head;
        match self.head {
            NIL => self.tail = at,
            head => self.nodes[head].prev = at,
        }
        self.head = at;
    }

    fn remove_at(&mut self, at: usize) -> V {
        self.unlink(at);
        let entry = self.nodes[at]
            .entry
            .take()
            .expect("linked nodes hold an entry");
        self.index.remove(&entry.key);
        self.free.push(at);
        self.bytes_used -= entry.size;
        entry.value
    }

    /// Looks `key` up at time `now`, counting a hit or a miss; a hit becomes most recent.
    pub fn get(&mut self, key: &str, now: u64) -> Lookup<'_, V> {
        let Some(&at) = self.index.get(key) else {
            self.misses += 1;
            return Lookup::Miss;
        };
        let meta = self.nodes[at]
            .entry
            .as_ref()
            .expect("indexed nodes hold an entry")
            .meta;
        if !is_live(meta.expires_at, now) {
            self.misses += 1;
            return Lookup::Expired(self.remove_at(at));
        }
        self.hits += 1;
        self.unlink(at);
        self.push_front(at);
        let entry = self.nodes[at]
            .entry
            .as_ref()
            .expect("indexed nodes hold an entry");
        Lookup::Hit(&entry.value, meta)
    }

    /// The live entry for `key` at time `now`, without counting a lookup or moving it.
    pub fn peek(&self, key: &str, now: u64) -> Option<(&V, EntryMeta)> {
        let &at = self.index.get(key)?;
        let entry = self.nodes[at]
            .entry
            .as_ref()
            .expect("indexed nodes hold an entry");
        is_live(entry.meta.expires_at, now).then_some((&entry.value, entry.meta))
    }

    /// Stores `value` (whose payload is `len` bytes) unless a live newer version is cached.
    /// Returns the values that left the cache (or the refused one), to be dropped by the caller.
    pub fn put(
        &mut self,
        key: &str,
        value: V,
        len: usize,
        version: u64,
        expires_at: u64,
        now: u64,
    ) -> Vec<V> {
        let mut gone = Vec::new();
        if let Some(&at) = self.index.get(key) {
            let meta = self.nodes[at]
                .entry
                .as_ref()
                .expect("indexed nodes hold an entry")
                .meta;
            if is_live(meta.expires_at, now) && meta.version > version {
                gone.push(value);
                return gone;
            }
            gone.push(self.remove_at(at));
        }
        let size = len.saturating_add(key.len()).saturating_add(ENTRY_OVERHEAD);
        if size > self.max_bytes || !is_live(expires_at, now) {
            gone.push(value);
            return gone;
        }
        while self.bytes_used + size > self.max_bytes {
            gone.push(self.remove_at(self.tail));
            self.evictions += 1;
        }
        let entry = Entry {
            key: key.into(),
            value,
            meta: EntryMeta {
                version,
                expires_at,
                cached_at: now,
            },
            size,
        };
        let at = match self.free.pop() {
            Some(at) => {
                self.nodes[at].entry = Some(entry);
                at
            }
            None => {
                self.nodes.push(Node {
                    entry: Some(entry),
                    prev: NIL,
                    next: NIL,
                });
                self.nodes.len() - 1
            }
        };
        self.index.insert(key.into(), at);
        self.push_front(at);
        self.bytes_used += size;
        gone
    }

    /// Marks the entry for `key` as cached at time 0, keeping it and its place; true if
    /// there was one.
    pub fn outdate(&mut self, key: &str) -> bool {
        let Some(&at) = self.index.get(key) else {
            return false;
        };
        let entry = self.nodes[at]
            .entry
            .as_mut()
            .expect("indexed nodes hold an entry");
        entry.meta.cached_at = 0;
        true
    }

    /// Removes `key`; returns its value if it was cached.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let at = *self.index.get(key)?;
        Some(self.remove_at(at))
    }

    /// Removes every entry (the counters stay); returns the values to be dropped.
    pub fn clear(&mut self) -> Vec<V> {
        self.index.clear();
        self.free.clear();
        self.head = NIL;
        self.tail = NIL;
        self.bytes_used = 0;
        self.nodes
            .drain(..)
            .filter_map(|node| node.entry.map(|e| e.value))
            .collect()
    }
}

/// What the Python cache keeps per key: the payload, and a small object of the caller's.
struct Cached {
    /// The document: its bytes, or a `Document` that makes them when asked.
    payload: Py<PyAny>,
    extra: Option<Py<PyAny>>,
}

/// In-process cache of context payloads, bounded by bytes, LRU eviction, thread-safe.
#[pyclass(frozen, module = "fastctx._core")]
pub struct Cache {
    lru: Mutex<Lru<Cached>>,
}

#[pymethods]
impl Cache {
    #[new]
    fn new(max_bytes: usize) -> Self {
        Self {
            lru: Mutex::new(Lru::new(max_bytes)),
        }
    }

    /// The most bytes the entries may take (payload + key + a fixed per-entry overhead).
    #[getter]
    fn max_bytes(&self) -> usize {
        self.lru.lock().max_bytes
    }

    /// The bytes the entries take now.
    #[getter]
    fn bytes_used(&self) -> usize {
        self.lru.lock().bytes_used
    }

    /// Lookups that found a live entry.
    #[getter]
    fn hits(&self) -> u64 {
        self.lru.lock().hits
    }

    /// Lookups that found nothing, or an expired entry.
    #[getter]
    fn misses(&self) -> u64 {
        self.lru.lock().misses
    }

    /// Entries removed to make room for others.
    #[getter]
    fn evictions(&self) -> u64 {
        self.lru.lock().evictions
    }

    fn __len__(&self) -> usize {
        self.lru.lock().len()
    }

    /// (payload, version, expires_at, cached_at) for a live entry, else None.
    fn get(&self, py: Python<'_>, key: &str) -> Option<(Py<PyAny>, u64, u64, u64)> {
        let now = now_ms();
        let mut lru = self.lru.lock();
        let found = match lru.get(key, now) {
            Lookup::Hit(cached, meta) => Ok((
                cached.payload.clone_ref(py),
                meta.version,
                meta.expires_at,
                meta.cached_at,
            )),
            Lookup::Expired(payload) => Err(Some(payload)),
            Lookup::Miss => Err(None),
        };
        // Payloads are released only once the lock is, so no decref ever runs under it.
        drop(lru);
        found.ok()
    }

    /// (payload, version, expires_at, cached_at, extra) for a live entry, else None; not
    /// counted as a lookup, and the entry keeps its place.
    #[allow(clippy::type_complexity)]
    fn peek(
        &self,
        py: Python<'_>,
        key: &str,
    ) -> Option<(Py<PyAny>, u64, u64, u64, Option<Py<PyAny>>)> {
        let lru = self.lru.lock();
        let (cached, meta) = lru.peek(key, now_ms())?;
        Some((
            cached.payload.clone_ref(py),
            meta.version,
            meta.expires_at,
            meta.cached_at,
            cached.extra.as_ref().map(|extra| extra.clone_ref(py)),
        ))
    }

    /// Cache `payload` for `key`, unless a newer version of it is cached; `extra` is kept
    /// with it (a small object: it is not counted in the entry's bytes).
    #[pyo3(signature = (key, payload, version, expires_at, extra = None))]
    fn put(
        &self,
        key: &str,
        payload: Bound<'_, PyAny>,
        version: u64,
        expires_at: u64,
        extra: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let len = match payload.cast::<PyBytes>() {
            Ok(bytes) => bytes.as_bytes().len(),
            Err(_) => payload.cast::<Document>()?.len()?,
        };
        let cached = Cached {
            payload: payload.unbind(),
            extra,
        };
        let gone = self
            .lru
            .lock()
            .put(key, cached, len, version, expires_at, now_ms());
        drop(gone);
        Ok(())
    }

    /// Keep the entry for `key` but mark it cached at time 0; True if there was one.
    fn outdate(&self, key: &str) -> bool {
        self.lru.lock().outdate(key)
    }

    /// Drop the entry for `key`; True if there was one.
    fn invalidate(&self, key: &str) -> bool {
        let gone = self.lru.lock().remove(key);
        gone.is_some()
    }

    /// Drop every entry; the counters keep counting.
    fn clear(&self) {
        let gone = self.lru.lock().clear();
        drop(gone);
    }
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Cache>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 100 + 1 + ENTRY_OVERHEAD; // a 100-byte payload under a 1-byte key

    fn put(lru: &mut Lru<u32>, key: &str, value: u32, version: u64) -> Vec<u32> {
        lru.put(key, value, 100, version, 0, 1000)
    }

    fn hit(lru: &mut Lru<u32>, key: &str) -> Option<u32> {
        match lru.get(key, 1000) {
            Lookup::Hit(value, _) => Some(*value),
            _ => None,
        }
    }

    fn check_links(lru: &Lru<u32>) {
        let mut seen = 0;
        let (mut at, mut prev) = (lru.head, NIL);
        while at != NIL {
            assert_eq!(lru.nodes[at].prev, prev);
            assert!(lru.nodes[at].entry.is_some());
            (prev, at) = (at, lru.nodes[at].next);
            seen += 1;
        }
        assert_eq!(lru.tail, prev);
        assert_eq!(seen, lru.len());
        let used: usize = lru
            .nodes
            .iter()
            .filter_map(|n| n.entry.as_ref())
            .map(|e| e.size)
            .sum();
        assert_eq!(used, lru.bytes_used);
        assert!(lru.bytes_used <= lru.max_bytes);
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let mut lru = Lru::new(3 * SIZE);
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            assert!(put(&mut lru, key, i as u32, 1).is_empty());
        }
        assert_eq!(lru.bytes_used, 3 * SIZE);
        assert_eq!(hit(&mut lru, "a"), Some(0)); // "b" is now the least recently used
        assert_eq!(put(&mut lru, "d", 3, 1), vec![1]);
        assert_eq!(hit(&mut lru, "b"), None);
        assert_eq!(
            (lru.len(), lru.evictions, lru.hits, lru.misses),
            (3, 1, 1, 1)
        );
        check_links(&lru);
        // a bigger entry pushes out as many as it needs
        let gone = lru.put("e", 9, 2 * SIZE - 1 - ENTRY_OVERHEAD, 1, 0, 1000);
        assert_eq!(gone, vec![2, 0]); // "c", then "a"
        assert_eq!(lru.len(), 2);
        check_links(&lru);
    }

    #[test]
    fn refuses_oversized_and_expired_entries() {
        let mut lru = Lru::new(SIZE);
        assert!(put(&mut lru, "a", 1, 1).is_empty());
        assert_eq!(lru.put("a", 2, 101, 2, 0, 1000), vec![1, 2]);
        assert!(lru.is_empty());
        assert_eq!(lru.put("b", 3, 100, 1, 1000, 1000), vec![3]);
        assert!(lru.is_empty());
        check_links(&lru);
    }

    #[test]
    fn peeks_without_counting_or_moving() {
        let mut lru = Lru::new(2 * SIZE);
        put(&mut lru, "a", 1, 1);
        put(&mut lru, "b", 2, 1);
        let (value, meta) = lru.peek("a", 1000).expect("a is cached");
        assert_eq!((*value, meta.version), (1, 1));
        assert_eq!((lru.hits, lru.misses), (0, 0));
        assert!(lru.peek("nothing", 1000).is_none());
        // "a" was peeked, not used: it is still the least recently used, and goes first.
        put(&mut lru, "c", 3, 1);
        assert!(lru.peek("a", 1000).is_none());
        assert!(lru.peek("b", 1000).is_some());
        lru.put("d", 4, 100, 1, 1500, 1000);
        assert!(lru.peek("d", 1499).is_some());
        assert!(lru.peek("d", 1500).is_none()); // expired: not live, though not yet removed
        check_links(&lru);
    }

    #[test]
    fn expires_entries() {
        let mut lru = Lru::new(10 * SIZE);
        lru.put("a", 1, 100, 1, 1500, 1000);
        assert!(matches!(lru.get("a", 1499), Lookup::Hit(1, meta) if meta.cached_at == 1000));
        assert!(matches!(lru.get("a", 1500), Lookup::Expired(1)));
        assert!(matches!(lru.get("a", 1500), Lookup::Miss));
        assert_eq!((lru.hits, lru.misses, lru.bytes_used), (1, 2, 0));
    }

    #[test]
    fn never_replaces_a_newer_version() {
        let mut lru = Lru::new(10 * SIZE);
        put(&mut lru, "a", 5, 5);
        assert_eq!(put(&mut lru, "a", 4, 4), vec![4]);
        assert_eq!(hit(&mut lru, "a"), Some(5));
        assert_eq!(put(&mut lru, "a", 6, 5), vec![5]); // the same version refreshes
        assert_eq!(put(&mut lru, "a", 7, 7), vec![6]);
        assert_eq!(hit(&mut lru, "a"), Some(7));
        // an expired newer entry does not count
        lru.put("b", 8, 100, 9, 1001, 1000);
        assert!(lru.put("b", 9, 100, 1, 0, 2000).contains(&8));
        assert!(matches!(lru.get("b", 2000), Lookup::Hit(9, _)));
        check_links(&lru);
    }

    #[test]
    fn outdates_in_place() {
        let mut lru = Lru::new(10_000);
        put(&mut lru, "a", 1, 3);
        assert!(lru.outdate("a"));
        assert!(!lru.outdate("b"));
        let (value, meta) = lru.peek("a", 1).unwrap();
        assert_eq!((*value, meta.version, meta.cached_at), (1, 3, 0));
        check_links(&lru);
    }

    #[test]
    fn removes_and_clears() {
        let mut lru = Lru::new(10 * SIZE);
        for i in 0..5 {
            put(&mut lru, &i.to_string(), i, 1);
        }
        assert_eq!(lru.remove("2"), Some(2));
        assert_eq!(lru.remove("2"), None);
        check_links(&lru);
        put(&mut lru, "x", 10, 1); // reuses the freed slot
        assert_eq!(lru.nodes.len(), 5);
        check_links(&lru);
        let mut gone = lru.clear();
        gone.sort_unstable();
        assert_eq!(gone, vec![0, 1, 3, 4, 10]);
        assert_eq!((lru.len(), lru.bytes_used), (0, 0));
        put(&mut lru, "y", 11, 1);
        assert_eq!(hit(&mut lru, "y"), Some(11));
        check_links(&lru);
    }

    #[test]
    fn stays_consistent_under_random_operations() {
        let mut lru = Lru::new(20 * SIZE);
        let mut state = 0x853c_49e6_748f_ea9bu64;
        for step in 0..20_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = (state % 50).to_string();
            let len = (state >> 8) as usize % (3 * SIZE);
            match (state >> 20) % 4 {
                0 | 1 => drop(lru.put(&key, step, len, u64::from(step), 0, 1000)),
                2 => drop(hit(&mut lru, &key)),
                _ => drop(lru.remove(&key)),
            }
            if step % 97 == 0 {
                check_links(&lru);
            }
        }
        check_links(&lru);
    }
}
