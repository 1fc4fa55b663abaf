//! Handles: a 64-byte `Copy` value that names an entry of an arena, travels to other processes
//! (serde, rkyv, or a compact string for argv and environment variables), and resolves there
//! through a per-process attach cache.
//!
//! ```
//! # fn main() -> shmarena::Result<()> {
//! use std::collections::HashMap;
//! use shmarena::{ArenaOptions, Handle};
//!
//! let lexicon: HashMap<String, u32> = [("apple".to_string(), 7)].into();
//! let mut b = ArenaOptions::new().create()?;
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

use std::fmt;
use std::hash::Hasher;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::str::FromStr;

use bytemuck::Pod;
use rkyv::bytecheck::CheckBytes;
use rkyv::{Archive, Portable};

use crate::archive::ArenaValidator;
use crate::arena::{Arena, ArenaId};
use crate::attach::{attach_at, register};
use crate::error::{Error, Result};
use crate::format::Kind;
use crate::locator::{inline_kind, Locator, INLINE_MAX as LOC_MAX};
use crate::os;

pub use crate::attach::{detach_all, INHERITED_FDS_ENV};

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
        let (loc_kind, loc_len, loc) = arena.locator().encode_inline();
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
            loc_len,
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

    /// Where the arena was when the handle was made. For a file whose path is longer than
    /// the 33 bytes the 64-byte value holds, the value carries the path's checksum only: the
    /// path is then known in a process that has the arena open or has parsed a handle string
    /// naming it (the string and serde forms carry the full path); elsewhere `None`.
    pub fn locator(&self) -> Option<Locator> {
        if self.loc_kind == inline_kind::FILE_HASH {
            let hash = u64::from_le_bytes(self.loc[..8].try_into().expect("8 bytes"));
            return crate::attach::long_path(self.arena_id(), hash)
                .map(|path| Locator::File { path });
        }
        Locator::decode_inline(self.loc_kind, self.inline_locator())
    }

    /// Whether this 64-byte value resolves in any process of the user by itself. False only for
    /// a file arena whose path is longer than 33 bytes: the value (and so its rkyv form, as a
    /// pool task carries it) holds the path's checksum, and resolves only in processes that
    /// have the arena open or have parsed a string form of a handle to it. The string form
    /// ([`Display`](fmt::Display), `to_string`, [`Handle::share_with`]) and the serde form
    /// always carry the full path, so send one of those to unrelated processes.
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// # let dir = std::env::temp_dir().join(format!("shmarena-doc-{}-a-rather-long-directory", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("lexicon-of-the-long-path.arena");
    /// let mut b = shmarena::ArenaOptions::new().file(&path).create()?;
    /// b.put_slice("xs", &[1u32])?;
    /// let arena = b.seal()?;
    /// let h = arena.slice_handle::<u32>("xs")?;
    /// assert!(!h.raw().resolves_anywhere()); // the path is over 33 bytes
    /// assert!(h.to_string().ends_with("lexicon-of-the-long-path.arena")); // the string has it all
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn resolves_anywhere(&self) -> bool {
        self.loc_kind != inline_kind::FILE_HASH
    }

    fn inline_locator(&self) -> &[u8] {
        &self.loc[..usize::from(self.loc_len).min(LOC_MAX)]
    }

    /// Resolves the arena through [`attach`](fn@crate::attach): from the cache, or
    /// attached on first use. A stale arena is [`Error::StaleHandle`] naming this handle.
    pub fn arena(&self) -> Result<Arena> {
        attach_at(self.arena_id(), self.locator().as_ref()).map_err(|e| match e {
            Error::StaleHandle { reason, .. } => Error::StaleHandle {
                handle: self.to_string(),
                reason,
            },
            other => other,
        })
    }
}

impl fmt::Debug for RawHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawHandle({self})")
    }
}

/// The string form: `shmarena1:<arena id>:<entry>:<kind>:<type hash>:<locator>`, where the
/// locator is written as [`Locator`]'s `Display` (`memfd:<pid>:<fd>`, `shm:<name>` or
/// `file:<path>`), or `filehash:<hash>` for a file path too long to carry. Parsing also takes
/// the locator spellings of version 0.1 (`memfd/<pid>/<fd>`, `shm/<name>`, `file/<path>`,
/// `filehash/<hash>`).
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
            (Some(locator), _) => write!(f, "{locator}"),
            (None, inline_kind::FILE_HASH) => write!(
                f,
                "filehash:{:016x}",
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
        let (loc_kind, loc_len, loc) = match handle_locator(loc_text) {
            Some(Ok(Located::At(locator))) => {
                let encoded = locator.encode_inline();
                if let (Locator::File { path }, inline_kind::FILE_HASH) = (&locator, encoded.0) {
                    // Too long for the value: remember it for this process's resolution.
                    let hash = u64::from_le_bytes(encoded.2[..8].try_into().expect("8 bytes"));
                    crate::attach::remember_long_path(arena_id, hash, path.clone());
                }
                encoded
            }
            Some(Ok(Located::FileHash(hash))) => {
                let mut loc = [0u8; LOC_MAX];
                loc[..8].copy_from_slice(&hash.to_le_bytes());
                (inline_kind::FILE_HASH, 8, loc)
            }
            Some(Err(e)) => return Err(e),
            None => return Err(bad("the locator is not memfd:, shm:, file: or filehash:")),
        };
        Ok(RawHandle {
            arena_id: arena_id.to_bytes(),
            type_hash,
            entry,
            entry_kind,
            loc_kind,
            loc_len,
            loc,
        })
    }
}

/// What a handle string's locator part names.
enum Located {
    At(Locator),
    FileHash(u64),
}

/// Parses a handle string's locator part: an explicit [`Locator`] or `filehash:<hex>`, or the
/// same in 0.1's spelling with `/` for `:`. `None` if it is none of these.
fn handle_locator(text: &str) -> Option<Result<Located>> {
    let bad = |reason: &str| Error::BadHandle {
        handle: text.to_owned(),
        reason: reason.to_owned(),
    };
    let hash = |hex: &str| {
        u64::from_str_radix(hex, 16)
            .map(Located::FileHash)
            .map_err(|_| bad("the file hash is not hex"))
    };
    if let Some(hex) = text.strip_prefix("filehash:") {
        return Some(hash(hex));
    }
    if let Some(explicit) = Locator::parse_explicit(text) {
        return Some(explicit.map(Located::At));
    }
    // 0.1's spelling.
    let (kind, rest) = text.split_once('/')?;
    Some(match kind {
        "memfd" => match rest.split_once('/') {
            Some((pid, fd)) => match (pid.parse(), fd.parse()) {
                (Ok(pid), Ok(fd)) => Ok(Located::At(Locator::Memfd { pid, fd })),
                _ => Err(bad("the pid or fd is not a number")),
            },
            None => Err(bad("a memfd locator is memfd/<pid>/<fd>")),
        },
        "shm" => crate::locator::validate_segment_name(rest).map(|name| {
            Located::At(Locator::Shm {
                name: name.to_owned(),
            })
        }),
        "file" if !rest.is_empty() => Ok(Located::At(Locator::File { path: rest.into() })),
        "filehash" => hash(rest),
        _ => return None,
    })
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
            /// Returns `cmd` for chaining, as [`Arena::share_with`] does.
            pub fn share_with<'c>(&self, cmd: &'c mut Command, var: &str) -> Result<&'c mut Command> {
                self.arena()?.share_with(cmd)?;
                Ok(cmd.env(var, self.to_string()))
            }

            /// Reads a handle that [`share_with`](Self::share_with) put in environment variable
            /// `var`. [`Error::EnvNotSet`] if the variable is not set; [`Error::BadHandle`] if
            /// it does not hold a handle of this kind.
            pub fn from_env(var: &str) -> Result<Self> {
                let text = match std::env::var(var) {
                    Ok(text) => text,
                    Err(std::env::VarError::NotPresent) => {
                        return Err(Error::EnvNotSet { var: var.to_owned() })
                    }
                    Err(std::env::VarError::NotUnicode(raw)) => {
                        return Err(Error::BadHandle {
                            handle: raw.to_string_lossy().into_owned(),
                            reason: format!("environment variable {var} is not valid UTF-8"),
                        })
                    }
                };
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

impl<T: ?Sized> Handle<T> {
    /// A handle to entry `index` whose fingerprint was checked by the caller.
    pub(crate) fn from_parts(
        arena: &Arena,
        index: usize,
        type_hash: u64,
        kind: Kind,
    ) -> Result<Handle<T>> {
        register(arena);
        Ok(Handle {
            raw: RawHandle::new(arena, index, type_hash, kind)?,
            _type: PhantomData,
        })
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
    /// `cmd` holds a clone of this arena until it is dropped, so the descriptor it passes stays
    /// open (and names this arena) even if the caller drops its own arena before spawning.
    ///
    /// This is a trusted channel: with the descriptor go this process's build identity and the
    /// arena's trust rows, so a child running the same binary that opted in with
    /// [`trust_inherited_rows`](crate::trust_inherited_rows) reads the entries this process
    /// knows valid without bytecheck (see [`Arena::trusts`]); the child reads them from its
    /// environment as it was at exec, which its own safe code cannot change. A child that did
    /// not opt in still attaches the descriptor, and validates each entry on its first read.
    ///
    /// Returns `cmd` for chaining, as [`Handle::share_with`] does.
    pub fn share_with<'c>(&self, cmd: &'c mut Command) -> Result<&'c mut Command> {
        register(self);
        if !matches!(self.locator(), Locator::Memfd { .. }) {
            return Ok(cmd);
        }
        let fd = std::os::fd::AsFd::as_fd(self).as_raw_fd();
        os::inherit_fd_in(cmd, self.clone());
        let pair = crate::attach::inherited_entry(self, fd);
        let existing = cmd
            .get_envs()
            .find(|(k, _)| *k == INHERITED_FDS_ENV)
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()));
        let value = match existing {
            Some(list) if !list.is_empty() => format!("{list},{pair}"),
            _ => pair,
        };
        Ok(cmd.env(INHERITED_FDS_ENV, value))
    }
}
