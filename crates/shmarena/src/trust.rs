//! The trust table: which entries of a mapped arena are known, in this process's memory, to be
//! valid as which archived type. Only a row here lets a typed read skip bytecheck; nothing read
//! from the arena's bytes (its `validated` flag, its type names) counts.
//!
//! Rows come from (a) the writer's own validation at `put` (moved into the arena at `seal`, and
//! inherited by fork with the rest of the process's memory), (b) a successful bytecheck in this
//! process, and (c) a trusted channel ([`Arena::share_with`](crate::Arena::share_with)'s
//! environment at exec, the service handshake, a Python pickle) from a process of the same build
//! ([`build_id`](crate::os::build_id)) on a kernel-sealed memfd, taken only where the program
//! opted in (`trust_inherited_rows`, `ConnectOptions::trust_publisher_rows`,
//! `shmarena.trust_pickled_rows()`). docs/DESIGN.md, "Trust model", has the table.

use std::any::TypeId;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use parking_lot::Mutex;

/// A real type identity: the archived type's `TypeId` (through the `typeid` crate, which also
/// covers types that are not `'static`).
pub(crate) type TypeKey = TypeId;

/// The identity of `T`.
pub(crate) fn key_of<T: ?Sized>() -> TypeKey {
    typeid::of::<T>()
}

/// A stable 128-bit digest of a type identity, for the channels: the same binary gives the
/// same value in every process (the `TypeId` is hashed with a fixed hasher).
pub(crate) fn digest(key: TypeKey) -> u128 {
    struct Collect(Vec<u8>);
    impl Hasher for Collect {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.extend_from_slice(bytes);
        }
    }
    let mut c = Collect(Vec::with_capacity(16));
    key.hash(&mut c);
    xxhash_rust::xxh3::xxh3_128(&c.0)
}

/// A row as the channels carry it: (entry index, type digest).
pub(crate) type Row = (u32, u128);

/// One entry's known-valid types.
#[derive(Default)]
struct EntryTrust {
    /// The first type recorded: the common case is one type per entry, checked with one load.
    first: OnceLock<TypeKey>,
    /// Further types, and digests received from a channel (promoted to `first` on a match).
    more: Mutex<Vec<Known>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    Key(TypeKey),
    Digest(u128),
}

/// The rows of one mapped arena (part of its per-process state).
pub(crate) struct TrustTable {
    entries: Box<[EntryTrust]>,
    /// How many times a row was added: a publisher reuses the rows it encoded while this
    /// has not moved.
    changes: std::sync::atomic::AtomicU64,
}

impl TrustTable {
    /// An empty table for an arena of `entries` entries.
    pub(crate) fn new(entries: usize) -> TrustTable {
        TrustTable {
            entries: (0..entries).map(|_| EntryTrust::default()).collect(),
            changes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The number of rows added so far (see [`TrustTable::rows`]): equal values mean equal rows.
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Acquire)
    }

    fn changed(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Whether entry `index` is known valid as the type `key`.
    #[inline]
    pub(crate) fn contains(&self, index: usize, key: TypeKey) -> bool {
        let Some(e) = self.entries.get(index) else {
            return false;
        };
        if e.first.get() == Some(&key) {
            return true;
        }
        self.contains_slow(e, key)
    }

    #[cold]
    fn contains_slow(&self, e: &EntryTrust, key: TypeKey) -> bool {
        let mut more = e.more.lock();
        if more.contains(&Known::Key(key)) {
            return true;
        }
        let d = Known::Digest(digest(key));
        if let Some(i) = more.iter().position(|k| *k == d) {
            // A channel row matched: from now on the key itself is known.
            more[i] = Known::Key(key);
            if let Err(key) = e.first.set(key) {
                more.push(Known::Key(key));
            }
            return true;
        }
        false
    }

    /// Records that entry `index` is valid as the type `key`.
    pub(crate) fn insert(&self, index: usize, key: TypeKey) {
        let Some(e) = self.entries.get(index) else {
            return;
        };
        if e.first.get() == Some(&key) {
            return;
        }
        match e.first.set(key) {
            Ok(()) => self.changed(),
            Err(key) => {
                let mut more = e.more.lock();
                if !more.contains(&Known::Key(key)) {
                    more.push(Known::Key(key));
                    self.changed();
                }
            }
        }
    }

    /// Records a row received from a trusted channel (rows naming no entry are ignored).
    pub(crate) fn insert_digest(&self, (index, d): Row) {
        if let Some(e) = self.entries.get(index as usize) {
            let mut more = e.more.lock();
            if !more.contains(&Known::Digest(d)) {
                more.push(Known::Digest(d));
                self.changed();
            }
        }
    }

    /// Every row, as the channels carry them.
    pub(crate) fn rows(&self) -> Vec<Row> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let i = i as u32;
            if let Some(k) = e.first.get() {
                out.push((i, digest(*k)));
            }
            for k in e.more.lock().iter() {
                let d = match *k {
                    Known::Key(k) => digest(k),
                    Known::Digest(d) => d,
                };
                if !out.contains(&(i, d)) {
                    out.push((i, d));
                }
            }
        }
        out
    }
}

/// Encodes a channel payload as text: `<build id hex>` then `.<entry>-<digest hex>` per row.
pub(crate) fn encode_rows_text(rows: &[Row]) -> String {
    let mut s = hex(&crate::os::build_id());
    for (i, d) in rows {
        s.push_str(&format!(".{i}-{d:032x}"));
    }
    s
}

/// Decodes [`encode_rows_text`]: the rows, if the build identity is this process's own and
/// known; `None` otherwise (the rows are then ignored and the entries validate).
pub(crate) fn decode_rows_text(s: &str) -> Option<Vec<Row>> {
    let mut parts = s.split('.');
    let id = parts.next()?;
    if !crate::os::build_id_known() || id != hex(&crate::os::build_id()) {
        return None;
    }
    parts
        .map(|p| {
            let (i, d) = p.split_once('-')?;
            Some((i.parse().ok()?, u128::from_str_radix(d, 16).ok()?))
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_different_types_have_different_keys() {
        let a = {
            #[allow(dead_code)]
            struct Rec(u32);
            key_of::<Rec>()
        };
        let b = {
            #[allow(dead_code)]
            struct Rec(u32);
            key_of::<Rec>()
        };
        assert_ne!(a, b);
        assert_ne!(digest(a), digest(b));
        assert_eq!(digest(a), digest(a));
    }

    #[test]
    fn table_rows_and_channel_digests() {
        let t = TrustTable::new(3);
        let k = key_of::<u32>();
        assert!(!t.contains(0, k));
        t.insert(0, k);
        t.insert(0, key_of::<u64>());
        assert!(t.contains(0, k) && t.contains(0, key_of::<u64>()));
        assert!(!t.contains(1, k) && !t.contains(7, k));
        t.insert_digest((2, digest(k)));
        assert!(!t.contains(2, key_of::<u64>()));
        assert!(t.contains(2, k));
        let rows = t.rows();
        assert_eq!(rows.len(), 3);
        let text = encode_rows_text(&rows);
        assert_eq!(decode_rows_text(&text), Some(rows));
        assert_eq!(decode_rows_text(&format!("00{}", &text[2..])), None);
    }
}
