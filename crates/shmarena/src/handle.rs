//! Handles: a 64-byte `Copy` value that names an entry of an arena, travels to other processes
//! (serde, rkyv, or a compact string for argv and environment variables), and resolves there
//! through a per-process attach cache.
//!
//! ```
//! # fn main() -> shmarena::Result<()> {
//! use std::collections::HashMap;
//! use shmarena::{ArenaBuilder, Handle};
//!
//! let lexicon: HashMap<String, u32> = [("apple".to_string(), 7)].into();
//! let mut b = ArenaBuilder::new().create()?;
//! b.put("lexicon", &lexicon)?;
//! let arena = b.seal()?;
//!
//! let handle: Handle<HashMap<String, u32>> = arena.handle("lexicon")?;
//! let text = handle.to_string(); // for argv or an environment variable
//! let back: Handle<HashMap<String, u32>> = text.parse()?;
//! // In any process of this user: the first `get` attaches, later ones hit the cache.
//! assert_eq!(back.get()?.get("apple").map(|v| v.to_native()), Some(7));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};
use std::process::Command;
use std::str::FromStr;
use std::sync::{LazyLock, OnceLock, Weak};

use bytemuck::Pod;
use parking_lot::RwLock;
use rkyv::bytecheck::CheckBytes;
use rkyv::{Archive, Portable};

use crate::archive::ArenaValidator;
use crate::arena::{Arena, ArenaId, Shared};
use crate::error::{Error, Result};
use crate::format::Kind;
use crate::locator::Locator;
use crate::os;

/// The environment variable through which [`Arena::share_with`] tells a spawned child which
/// inherited descriptors hold which arenas: `ID=FD` pairs separated by `,`.
pub const INHERITED_FDS_ENV: &str = "SHMARENA_INHERITED_FDS";

/// Bytes of locator a handle carries inline: a memfd's pid and fd, a segment name (at most 30
/// bytes) or a file path of at most this many bytes.
const LOC_MAX: usize = 33;

const LOC_MEMFD: u8 = 1;
const LOC_SHM: u8 = 2;
const LOC_FILE: u8 = 3;
/// A file path too long to carry: the handle holds its hash, and resolves only in processes that
/// already opened the arena.
const LOC_FILE_HASH: u8 = 4;

const KIND_ARCHIVED: u8 = 1;
const KIND_POD: u8 = 2;

/// The untyped content of a handle: 64 bytes, `Copy`, with no pointers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct RawHandle {
    arena_id: [u8; 16],
    type_hash: u64,
    entry: u32,
    entry_kind: u8,
    loc_kind: u8,
    loc_len: u8,
    loc: [u8; LOC_MAX],
}

const _: () = assert!(size_of::<RawHandle>() == 64);

impl RawHandle {
    fn new(arena: &Arena, index: usize, type_hash: u64, kind: Kind) -> Result<RawHandle> {
        let mut loc = [0u8; LOC_MAX];
        let (loc_kind, loc_len) = match arena.locator() {
            Locator::Memfd { pid, fd } => {
                loc[..4].copy_from_slice(&pid.to_le_bytes());
                loc[4..8].copy_from_slice(&fd.to_le_bytes());
                (LOC_MEMFD, 8)
            }
            Locator::Shm { name } => {
                loc[..name.len()].copy_from_slice(name.as_bytes());
                (LOC_SHM, name.len())
            }
            Locator::File { path } => {
                let bytes = path.as_os_str().as_encoded_bytes();
                if bytes.len() <= LOC_MAX {
                    loc[..bytes.len()].copy_from_slice(bytes);
                    (LOC_FILE, bytes.len())
                } else {
                    loc[..8].copy_from_slice(&crate::format::checksum(bytes).to_le_bytes());
                    (LOC_FILE_HASH, 8)
                }
            }
        };
        Ok(RawHandle {
            arena_id: arena.id().to_bytes(),
            type_hash,
            entry: u32::try_from(index).map_err(|_| Error::TooLarge {
                what: "entry index".into(),
                size: index as u64,
            })?,
            entry_kind: match kind {
                Kind::Archived => KIND_ARCHIVED,
                _ => KIND_POD,
            },
            loc_kind,
            loc_len: loc_len as u8,
            loc,
        })
    }

    /// The id of the arena the handle names.
    pub fn arena_id(&self) -> ArenaId {
        ArenaId::from_bytes(self.arena_id)
    }

    /// The index of the entry in the arena's table of contents.
    pub fn entry_index(&self) -> u32 {
        self.entry
    }

    /// Where the arena was when the handle was made. `None` for a file whose path was too long
    /// to carry: such a handle resolves only where the arena is already open.
    pub fn locator(&self) -> Option<Locator> {
        let loc = &self.loc[..usize::from(self.loc_len).min(LOC_MAX)];
        match self.loc_kind {
            LOC_MEMFD if loc.len() == 8 => Some(Locator::Memfd {
                pid: u32::from_le_bytes(loc[..4].try_into().ok()?),
                fd: i32::from_le_bytes(loc[4..8].try_into().ok()?),
            }),
            LOC_SHM => Some(Locator::Shm {
                name: std::str::from_utf8(loc).ok()?.to_owned(),
            }),
            LOC_FILE => {
                // On Unix any bytes are a valid OsStr.
                use std::os::unix::ffi::OsStrExt;
                Some(Locator::File {
                    path: std::ffi::OsStr::from_bytes(loc).into(),
                })
            }
            _ => None,
        }
    }

    /// Resolves the arena through the attach cache, attaching on first use.
    pub fn arena(&self) -> Result<Arena> {
        let id = self.arena_id();
        if let Some(arena) = cache_get(id) {
            return Ok(arena);
        }
        attach(self)
    }
}

impl fmt::Debug for RawHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawHandle({self})")
    }
}

/// The string form: `shmarena1:<arena id>:<entry>:<kind>:<type hash>:<locator>`, where the
/// locator is `memfd/<pid>/<fd>`, `shm/<name>`, `file/<path>` or `filehash/<hash>`.
impl fmt::Display for RawHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.entry_kind == KIND_ARCHIVED {
            'a'
        } else {
            'p'
        };
        write!(
            f,
            "shmarena1:{}:{}:{kind}:{:016x}:",
            self.arena_id(),
            self.entry,
            self.type_hash
        )?;
        match (self.locator(), self.loc_kind) {
            (Some(Locator::Memfd { pid, fd }), _) => write!(f, "memfd/{pid}/{fd}"),
            (Some(Locator::Shm { name }), _) => write!(f, "shm/{name}"),
            (Some(Locator::File { path }), _) => write!(f, "file/{}", path.display()),
            (_, LOC_FILE_HASH) => write!(
                f,
                "filehash/{:016x}",
                u64::from_le_bytes(self.loc[..8].try_into().expect("8 bytes"))
            ),
            _ => write!(f, "invalid"),
        }
    }
}

impl FromStr for RawHandle {
    type Err = Error;

    fn from_str(s: &str) -> Result<RawHandle> {
        let bad = |reason: &str| Error::BadHandle {
            handle: s.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = s.splitn(6, ':');
        let mut next = |what: &str| {
            parts
                .next()
                .ok_or_else(|| bad(&format!("missing the {what}")))
        };
        if next("prefix")? != "shmarena1" {
            return Err(bad("does not start with `shmarena1:`"));
        }
        let arena_id: ArenaId = next("arena id")?
            .parse()
            .map_err(|_| bad("the arena id is not 32 hex digits"))?;
        let entry: u32 = next("entry index")?
            .parse()
            .map_err(|_| bad("the entry index is not a number"))?;
        let entry_kind = match next("kind")? {
            "a" => KIND_ARCHIVED,
            "p" => KIND_POD,
            _ => return Err(bad("the kind is not `a` or `p`")),
        };
        let type_hash = u64::from_str_radix(next("type hash")?, 16)
            .map_err(|_| bad("the type hash is not hex"))?;
        let loc_text = next("locator")?;
        let mut loc = [0u8; LOC_MAX];
        let (loc_kind, loc_len) = match loc_text.split_once('/') {
            Some(("memfd", rest)) => {
                let (pid, fd) = rest
                    .split_once('/')
                    .ok_or_else(|| bad("a memfd locator is memfd/<pid>/<fd>"))?;
                let pid: u32 = pid.parse().map_err(|_| bad("the pid is not a number"))?;
                let fd: i32 = fd.parse().map_err(|_| bad("the fd is not a number"))?;
                loc[..4].copy_from_slice(&pid.to_le_bytes());
                loc[4..8].copy_from_slice(&fd.to_le_bytes());
                (LOC_MEMFD, 8)
            }
            Some(("shm", name)) => {
                let name = crate::locator::validate_segment_name(name)?;
                loc[..name.len()].copy_from_slice(name.as_bytes());
                (LOC_SHM, name.len())
            }
            Some(("file", path)) => {
                if path.is_empty() || path.len() > LOC_MAX {
                    return Err(bad(&format!(
                        "a file path in a handle has 1 to {LOC_MAX} bytes"
                    )));
                }
                loc[..path.len()].copy_from_slice(path.as_bytes());
                (LOC_FILE, path.len())
            }
            Some(("filehash", hash)) => {
                let hash =
                    u64::from_str_radix(hash, 16).map_err(|_| bad("the file hash is not hex"))?;
                loc[..8].copy_from_slice(&hash.to_le_bytes());
                (LOC_FILE_HASH, 8)
            }
            _ => return Err(bad("the locator is not memfd/, shm/, file/ or filehash/")),
        };
        Ok(RawHandle {
            arena_id: arena_id.to_bytes(),
            type_hash,
            entry,
            entry_kind,
            loc_kind,
            loc_len: loc_len as u8,
            loc,
        })
    }
}

macro_rules! typed_handle {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
        #[repr(transparent)]
        pub struct $name<T: ?Sized> {
            raw: RawHandle,
            #[rkyv(with = rkyv::with::Skip)]
            _type: PhantomData<fn() -> T>,
        }

        impl<T: ?Sized> Clone for $name<T> {
            fn clone(&self) -> Self {
                *self
            }
        }

        impl<T: ?Sized> Copy for $name<T> {}

        impl<T: ?Sized> PartialEq for $name<T> {
            fn eq(&self, other: &Self) -> bool {
                self.raw == other.raw
            }
        }

        impl<T: ?Sized> Eq for $name<T> {}

        impl<T: ?Sized> std::hash::Hash for $name<T> {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.raw.hash(state)
            }
        }

        impl<T: ?Sized> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}<{}>({})", stringify!($name), std::any::type_name::<T>(), self.raw)
            }
        }

        impl<T: ?Sized> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.raw, f)
            }
        }

        impl<T: ?Sized> FromStr for $name<T> {
            type Err = Error;

            /// Parses the string form. The entry's type is checked on [`get`](Self::get).
            fn from_str(s: &str) -> Result<Self> {
                let raw: RawHandle = s.parse()?;
                if raw.entry_kind != $kind {
                    return Err(Error::BadHandle {
                        handle: s.to_owned(),
                        reason: format!("it names a {} entry", if raw.entry_kind == KIND_ARCHIVED { "archived" } else { "POD" }),
                    });
                }
                Ok($name { raw, _type: PhantomData })
            }
        }

        impl<T: ?Sized> $name<T> {
            /// The untyped handle.
            pub fn raw(&self) -> RawHandle {
                self.raw
            }

            /// The arena, through the attach cache (attaching on first use in this process).
            pub fn arena(&self) -> Result<Arena> {
                self.raw.arena()
            }

            /// Prepares `cmd` so the child it spawns can resolve this handle: shares the arena
            /// (see [`Arena::share_with`]) and puts the handle's string form in environment
            /// variable `var`. The child calls [`from_env`](Self::from_env) with the same name.
            pub fn share_with(&self, cmd: &mut Command, var: &str) -> Result<()> {
                self.arena()?.share_with(cmd);
                cmd.env(var, self.to_string());
                Ok(())
            }

            /// Reads a handle that [`share_with`](Self::share_with) put in environment variable
            /// `var`.
            pub fn from_env(var: &str) -> Result<Self> {
                let text = std::env::var(var).map_err(|e| Error::BadHandle {
                    handle: format!("${var}"),
                    reason: format!("environment variable: {e}"),
                })?;
                text.parse()
            }
        }

        #[cfg(feature = "serde")]
        impl<T: ?Sized> serde::Serialize for $name<T> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        #[cfg(feature = "serde")]
        impl<'de, T: ?Sized> serde::Deserialize<'de> for $name<T> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_handle!(
    /// A handle to an archived entry of type `T`: 64 bytes, `Copy`, no pointers. Make one with
    /// [`Arena::handle`]; resolve it with [`get`](Handle::get) in any process of the same user.
    Handle,
    KIND_ARCHIVED
);

typed_handle!(
    /// A handle to a POD entry of element type `T`. Make one with [`Arena::slice_handle`];
    /// resolve it with [`get`](SliceHandle::get).
    SliceHandle,
    KIND_POD
);

impl<T> Handle<T>
where
    T: Archive,
    T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
{
    /// The entry, read in place. The first call in a process attaches the arena (opening it by
    /// its locator, or by a descriptor inherited through [`Arena::share_with`]) and caches it;
    /// later calls reuse the mapping. A handle whose arena is gone, or whose pid or fd now holds
    /// another arena, is [`Error::StaleHandle`].
    pub fn get(&self) -> Result<crate::View<T>> {
        let arena = self.raw.arena()?;
        check_type_hash(&arena, &self.raw)?;
        arena.view_at(self.raw.entry as usize)
    }
}

impl<T: Pod> SliceHandle<T> {
    /// The entry, read in place; see [`Handle::get`].
    pub fn get(&self) -> Result<crate::SliceView<T>> {
        let arena = self.raw.arena()?;
        check_type_hash(&arena, &self.raw)?;
        arena.slice_at(self.raw.entry as usize)
    }
}

fn check_type_hash(arena: &Arena, raw: &RawHandle) -> Result<()> {
    match arena.layout().entries.get(raw.entry as usize) {
        Some(e) if e.type_hash == raw.type_hash => Ok(()),
        Some(e) => Err(Error::BadHandle {
            handle: raw.to_string(),
            reason: format!(
                "entry #{} is {:?} of type {}, not the type the handle was made for",
                raw.entry, e.name, e.type_name
            ),
        }),
        None => Err(Error::BadHandle {
            handle: raw.to_string(),
            reason: format!(
                "the arena has only {} entries",
                arena.layout().entries.len()
            ),
        }),
    }
}

impl Arena {
    /// A handle to archived entry `name`, checked now to hold a `T`.
    pub fn handle<T: Archive>(&self, name: &str) -> Result<Handle<T>> {
        let (index, type_hash, kind) = self.locate_archived::<T>(name)?;
        register(self);
        Ok(Handle {
            raw: RawHandle::new(self, index, type_hash, kind)?,
            _type: PhantomData,
        })
    }

    /// A handle to POD entry `name`, checked now to hold elements of type `T`.
    pub fn slice_handle<T: Pod>(&self, name: &str) -> Result<SliceHandle<T>> {
        let (index, type_hash, kind) = self.locate_slice::<T>(name)?;
        register(self);
        Ok(SliceHandle {
            raw: RawHandle::new(self, index, type_hash, kind)?,
            _type: PhantomData,
        })
    }

    /// Prepares `cmd` so the child it spawns can attach to this arena with no `/proc` lookup:
    /// for a memfd, the descriptor is inherited by that child only (close-on-exec is cleared
    /// between fork and exec, in the child) and listed in [`INHERITED_FDS_ENV`]. Named and file
    /// arenas need nothing; the child opens them by name or path.
    ///
    /// Keep this arena alive until the child has started.
    pub fn share_with<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        register(self);
        if !matches!(self.locator(), Locator::Memfd { .. }) {
            return cmd;
        }
        let fd = std::os::fd::AsFd::as_fd(self).as_raw_fd();
        os::inherit_fd_in(cmd, fd);
        let pair = format!("{}={fd}", self.id());
        let existing = cmd
            .get_envs()
            .find(|(k, _)| *k == INHERITED_FDS_ENV)
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()));
        let value = match existing {
            Some(list) if !list.is_empty() => format!("{list},{pair}"),
            _ => pair,
        };
        cmd.env(INHERITED_FDS_ENV, value)
    }
}

/// A hasher for arena ids, which are already uniformly random: it keeps the first 8 bytes.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
}

struct Slot {
    weak: Weak<Shared>,
    /// Arenas this process attached through a handle stay attached (that is the point of the
    /// cache); arenas the process opened or built itself are held weakly, so their owner's drop
    /// still unlinks or unmaps them.
    strong: Option<Arena>,
}

type Cache = RwLock<HashMap<ArenaId, Slot, BuildHasherDefault<IdHasher>>>;

static CACHE: LazyLock<Cache> = LazyLock::new(|| RwLock::new(HashMap::default()));

fn cache_get(id: ArenaId) -> Option<Arena> {
    CACHE
        .read()
        .get(&id)
        .and_then(|slot| slot.weak.upgrade())
        .map(Arena::from_shared)
}

/// Makes `arena` findable by handles in this process, without keeping it alive.
fn register(arena: &Arena) {
    let id = arena.id();
    if cache_get(id).is_some() {
        return;
    }
    let mut cache = CACHE.write();
    cache.retain(|_, slot| slot.weak.strong_count() > 0);
    cache.insert(
        id,
        Slot {
            weak: arena.downgrade(),
            strong: None,
        },
    );
}

/// Detaches every arena this process attached through handles (arenas are unmapped once no view
/// holds them). Mostly for long-lived processes that move on to newer arenas.
pub fn detach_all() {
    CACHE.write().retain(|_, slot| {
        slot.strong = None;
        slot.weak.strong_count() > 0
    });
}

/// Descriptors inherited from a parent through [`Arena::share_with`], read once.
fn inherited_fds() -> &'static [(ArenaId, RawFd)] {
    static FDS: OnceLock<Vec<(ArenaId, RawFd)>> = OnceLock::new();
    FDS.get_or_init(|| {
        let Ok(list) = std::env::var(INHERITED_FDS_ENV) else {
            return Vec::new();
        };
        list.split(',')
            .filter_map(|pair| {
                let (id, fd) = pair.split_once('=')?;
                Some((id.parse().ok()?, fd.parse().ok()?))
            })
            .collect()
    })
}

fn attach(raw: &RawHandle) -> Result<Arena> {
    let id = raw.arena_id();
    let mut cache = CACHE.write();
    // Another thread may have attached while we waited for the lock.
    if let Some(arena) = cache.get(&id).and_then(|s| s.weak.upgrade()) {
        return Ok(Arena::from_shared(arena));
    }
    let stale = |reason: String| Error::StaleHandle {
        handle: raw.to_string(),
        reason,
    };
    let opened = match raw.locator() {
        None => {
            return Err(stale(format!(
                "arena {id} is a file whose path was too long to carry in the handle, and it is \
                 not open in this process: open it with Arena::open_file first"
            )))
        }
        Some(Locator::Memfd { pid, fd }) => match inherited_fds().iter().find(|(i, _)| *i == id) {
            Some((_, inherited)) => os::adopt_inherited_fd(*inherited)
                .map_err(|e| Error::Io {
                    context: format!("adopting inherited descriptor {inherited} of arena {id}"),
                    source: e,
                })
                .and_then(|file| Arena::open_fd(file.into())),
            None => Arena::open_memfd(pid, fd),
        },
        Some(locator) => Arena::open(&locator),
    };
    let arena = opened.map_err(|e| match e {
        Error::PermissionDenied { .. } | Error::Io { .. } => e,
        other => stale(format!("arena {id} is gone: {other}")),
    })?;
    if arena.id() != id {
        return Err(stale(format!(
            "{} now holds arena {}, not {id} (the pid, fd or name was reused)",
            arena.locator(),
            arena.id()
        )));
    }
    cache.retain(|_, slot| slot.weak.strong_count() > 0);
    cache.insert(
        id,
        Slot {
            weak: arena.downgrade(),
            strong: Some(arena.clone()),
        },
    );
    Ok(arena)
}
