//! The pickled form of arenas and views, and the per-process cache of attached arenas.
//!
//! A handle is a few dozen bytes:
//!
//! | field | bytes |
//! |---|---|
//! | format version (2; 1 is still read) | 1 |
//! | arena id | 16 |
//! | locator: tag 3 + length (LEB128) + the locator's shortest spelling in its one grammar (`Locator::shorthand`: `PID:FD`, `NAME`, `file:PATH`; read back with `FromStr`); tags 0 (memfd + pid u32 + fd i32), 1 (shm + u8 length + name) and 2 (file + u16 length + path) of earlier versions are still read | 2 + n |
//! | entry name (empty for the arena itself) | 1 + n |
//! | trust token (version 2 only): length (LEB128), then the pickling process's build identity (16 bytes), the memfd's inode number (8 bytes) and the trust rows of the entry (of every entry for the arena itself), 20 bytes each (`Arena::trust_token`); length 0 when there are none | 1 or 45 + … |
//! | path: count, then positions inside the value (LEB128 each) | 1 + … |
//! | list slice: 0, or 1 + start + zigzag step + length (LEB128 each) | 1 or 4 + … |
//!
//! A pickle is a trusted channel (loading one already runs arbitrary code): the unpickling
//! process takes the trust rows only if its build identity is the same and the arena it attached
//! is a kernel-sealed memfd; then the entries are read without bytecheck, as in the pickling
//! process. Only the pickle that first attaches the arena in this process hands its rows over
//! (a token carries the rows of the pickled entry); an entry that no such token named, and
//! every entry of a version-1 pickle, is validated on its first read.
//!
//! Why not the library's `shmarena::handle::RawHandle`: it is a fixed 64 bytes naming one entry by
//! index, so a pickled view would take about 110 bytes with the path and slice added (the
//! target is under 100), and it cannot name the arena itself. Switching over needs changes only
//! here: `encode`/`decode` for the bytes; the rest of the crate sees [`Handle`]. Attaching goes
//! through the library's [`shmarena::attach`] (its cache, inherited descriptors and stale-handle
//! rule); this module's cache only keeps one `ArenaState` per arena.

use std::collections::HashMap;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use pyo3::prelude::*;
use shmarena::{ArenaId, Locator};

use crate::errors::{lib_err, BadHandleError};
use crate::registry::ArenaState;

const VERSION: u8 = 2;

/// The locator tag: the locator's string form follows.
const TAG_LOCATOR: u8 = 3;

/// A slice of a list: elements `start, start + step, …`, `len` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slice {
    pub(crate) start: usize,
    pub(crate) step: isize,
    pub(crate) len: usize,
}

/// What a pickled arena or view names.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    pub(crate) id: ArenaId,
    pub(crate) locator: Locator,
    /// Empty for the arena itself.
    pub(crate) entry: String,
    /// Positions of nested containers inside the entry's value.
    pub(crate) path: Vec<u32>,
    pub(crate) slice: Option<Slice>,
    /// The trust token (version 2), empty if none.
    pub(crate) trust: Vec<u8>,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

impl Handle {
    /// The bytes a pickle carries.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.entry.len());
        out.push(VERSION);
        out.extend_from_slice(&self.id.to_bytes());
        let locator = self.locator.shorthand();
        out.push(TAG_LOCATOR);
        put_varint(&mut out, locator.len() as u64);
        out.extend_from_slice(locator.as_bytes());
        // Entry names are at most 255 bytes (validated by the library).
        out.push(self.entry.len() as u8);
        out.extend_from_slice(self.entry.as_bytes());
        put_varint(&mut out, self.trust.len() as u64);
        out.extend_from_slice(&self.trust);
        put_varint(&mut out, self.path.len() as u64);
        for &p in &self.path {
            put_varint(&mut out, u64::from(p));
        }
        match self.slice {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                put_varint(&mut out, s.start as u64);
                let step = s.step as i64;
                put_varint(&mut out, ((step << 1) ^ (step >> 63)) as u64);
                put_varint(&mut out, s.len as u64);
            }
        }
        out
    }

    /// Parses handle bytes; `None` if they are not a handle of this version.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Handle> {
        let mut r = Reader { bytes };
        let version = r.u8()?;
        if version != VERSION && version != 1 {
            return None;
        }
        let id = ArenaId::from_bytes(r.take(16)?.try_into().ok()?);
        let locator = match r.u8()? {
            0 => {
                let pid = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
                let fd = i32::from_le_bytes(r.take(4)?.try_into().ok()?);
                Locator::Memfd { pid, fd }
            }
            1 => {
                let n = r.u8()? as usize;
                let name = std::str::from_utf8(r.take(n)?).ok()?.to_owned();
                Locator::Shm { name }
            }
            2 => {
                let n = u16::from_le_bytes(r.take(2)?.try_into().ok()?) as usize;
                let path = PathBuf::from(std::ffi::OsString::from_vec(r.take(n)?.to_vec()));
                Locator::File { path }
            }
            TAG_LOCATOR => {
                let n = usize::try_from(r.varint()?).ok()?;
                std::str::from_utf8(r.take(n)?).ok()?.parse().ok()?
            }
            _ => return None,
        };
        let n = r.u8()? as usize;
        let entry = std::str::from_utf8(r.take(n)?).ok()?.to_owned();
        let trust = if version >= 2 {
            let n = usize::try_from(r.varint()?).ok()?;
            r.take(n)?.to_vec()
        } else {
            Vec::new()
        };
        let count = usize::try_from(r.varint()?).ok()?;
        if count > r.bytes.len() {
            return None;
        }
        let mut path = Vec::with_capacity(count);
        for _ in 0..count {
            path.push(u32::try_from(r.varint()?).ok()?);
        }
        let slice = match r.u8()? {
            0 => None,
            1 => {
                let start = usize::try_from(r.varint()?).ok()?;
                let z = r.varint()?;
                let step = ((z >> 1) as i64) ^ -((z & 1) as i64);
                let len = usize::try_from(r.varint()?).ok()?;
                Some(Slice {
                    start,
                    step: isize::try_from(step).ok()?,
                    len,
                })
            }
            _ => return None,
        };
        if !r.bytes.is_empty() {
            return None;
        }
        Some(Handle {
            id,
            locator,
            entry,
            path,
            slice,
            trust,
        })
    }
}

/// How the cache holds an arena.
enum Held {
    /// Attached from a handle: kept for the life of the process, so a worker attaches once
    /// however many tasks come and go.
    Attached(Arc<ArenaState>),
    /// Built or opened here: the cache does not keep it alive; when the last Python object
    /// using it goes, the memfd is freed (or the name unlinked) and handles to it go stale.
    Local(Weak<ArenaState>),
}

impl Held {
    fn get(&self) -> Option<Arc<ArenaState>> {
        match self {
            Held::Attached(s) => Some(s.clone()),
            Held::Local(w) => w.upgrade(),
        }
    }
}

/// Arenas attached (or built) in this process, by id and locator: an arena loaded from a file
/// whose id another arena here already has is its own entry, never answered with the other's
/// bytes. A fork child inherits the map together with the mappings it points to, so it
/// attaches nothing again.
type Cache = HashMap<(ArenaId, Locator), Held>;

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    // Every caller holds the GIL and never releases it inside `f`, so no thread can hold the
    // lock while another thread forks; a poisoned lock still holds a consistent map.
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = guard.get_or_insert_with(HashMap::new);
    cache.retain(|_, h| !matches!(h, Held::Local(w) if w.strong_count() == 0));
    f(cache)
}

/// Registers an arena this process built or opened by name or path (held weakly), and
/// returns the one to use: an arena already cached under the same id and locator wins.
pub(crate) fn remember(state: Arc<ArenaState>) -> Arc<ArenaState> {
    with_cache(|c| {
        let key = (state.arena.id(), state.arena.locator().clone());
        if let Some(s) = c.get(&key).and_then(Held::get) {
            return s;
        }
        c.insert(key, Held::Local(Arc::downgrade(&state)));
        state
    })
}

/// Forgets an arena (after `close`), here and in the library's attach cache.
pub(crate) fn forget(id: ArenaId) {
    with_cache(|c| {
        c.retain(|(cached, _), _| *cached != id);
    });
    shmarena::detach(id);
}

/// Every live arena in this process's cache.
pub(crate) fn cached() -> Vec<Arc<ArenaState>> {
    with_cache(|c| c.values().filter_map(Held::get).collect())
}

/// Whether `_restore` takes the trust token of pickles (set by `shmarena.trust_pickled_rows()`;
/// a fork child inherits it with the rest of memory).
static PICKLED_ROWS_TRUSTED: AtomicBool = AtomicBool::new(false);

/// Take, from now on in this process, the trust rows that pickles of arenas and views carry:
/// the entries the pickling process built or validated are then read here without
/// validation, in O(1). Without it each entry is validated on its first read in this process
/// (then cached; arrays need no validation).
///
/// Call it only if every pickle this process loads from now on that names a shmarena arena
/// was made by a shmarena process of this same build and reached here unchanged (a
/// `multiprocessing` or `concurrent.futures` worker of your own program: pass it as the pool's
/// `initializer`). Python code can call `shmarena._restore` with bytes of its own making (a
/// crafted sealed memfd and rows copied from a genuine pickle); in a process that called this,
/// such bytes make a read go out of bounds (a crash), as any code that reaches `ctypes` can.
#[pyfunction]
pub(crate) fn trust_pickled_rows() {
    PICKLED_ROWS_TRUSTED.store(true, Ordering::Release);
}

/// Whether `trust_pickled_rows` was called in this process.
#[pyfunction]
pub(crate) fn _pickled_rows_trusted() -> bool {
    PICKLED_ROWS_TRUSTED.load(Ordering::Acquire)
}

/// Connect options that take the publisher's trust rows (`connect(..., trusted=True)`).
pub(crate) fn trusting(opts: shmarena::ConnectOptions) -> shmarena::ConnectOptions {
    // SAFETY: `trust_publisher_rows` asks that every process of this user that can listen on
    // the name answer only through a genuine shmarena publisher of this build. Python has no
    // `unsafe`: the program made that promise by passing `trusted=True` to `connect` or
    // `subscribe`, whose documentation says it is exactly this promise; the default is False.
    unsafe { opts.trust_publisher_rows() }
}

/// The arena a handle names: from this cache, or attached through the library's attach path
/// ([`shmarena::attach`]: its cache, an inherited descriptor, or the locator; a place that now
/// holds another arena is a `StaleHandleError`) and cached here.
pub(crate) fn attach(h: &Handle) -> PyResult<Arc<ArenaState>> {
    with_cache(|c| {
        let key = (h.id, h.locator.clone());
        if let Some(s) = c.get(&key).and_then(Held::get) {
            return Ok(s);
        }
        let arena = shmarena::attach(h.id, &h.locator).map_err(lib_err)?;
        // The token speaks of the memfd the pickle names. `attach` may instead return an arena
        // this process already holds under the same id (ids are bytes of the arena, so a copy
        // loaded from a file has its original's id): rows are taken only for the arena opened
        // from that very locator.
        if !h.trust.is_empty()
            && arena.locator() == &h.locator
            && PICKLED_ROWS_TRUSTED.load(Ordering::Acquire)
        {
            // SAFETY: `accept_trust_token` asks that the token come unchanged from
            // `trust_token` of this same arena in a process of this build, through a channel the
            // caller's own code cannot forge. Python has no `unsafe`: the program made that
            // promise by calling `shmarena.trust_pickled_rows()` (checked just above), whose
            // documentation says it is exactly this promise, for every pickle this process
            // loads from then on; without that call the token is ignored, since a Python
            // program can call `_restore` with bytes of its own making. The token was made for
            // the memfd at `h.locator`, and `arena` is the one opened from that locator
            // (checked above). The library also checks the build identity, the memfd's inode,
            // the seals and that the descriptor is a memfd before taking any row.
            unsafe { arena.accept_trust_token(&h.trust) };
        }
        let state = Arc::new(ArenaState::new(arena, false));
        c.insert(key, Held::Attached(state.clone()));
        Ok(state)
    })
}

/// Decodes handle bytes or raises `BadHandleError`.
pub(crate) fn parse(bytes: &[u8]) -> PyResult<Handle> {
    Handle::decode(bytes).ok_or_else(|| {
        BadHandleError::new_err(format!(
            "not a shmarena handle (versions 1 to {VERSION}): {} bytes",
            bytes.len()
        ))
    })
}
