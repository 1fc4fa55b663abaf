//! A sealed arena: opening it in any backing, and checked access to its entries.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytemuck::Pod;
use parking_lot::Mutex;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::{Archive, Portable};

use crate::archive::ArenaValidator;
use crate::error::{Error, Result};
use crate::format::{self, Entry, FormatError, Kind, Layout};
use crate::locator::{validate_segment_name, Locator};
use crate::os;

/// The random 128-bit id every arena gets at creation. Two arenas never share one, so a handle
/// that names an id can tell its arena from a newer one at the same place.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArenaId(pub(crate) [u8; 16]);

impl ArenaId {
    /// The raw bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> ArenaId {
        ArenaId(bytes)
    }
}

impl fmt::Display for ArenaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ArenaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArenaId({self})")
    }
}

impl FromStr for ArenaId {
    type Err = Error;

    fn from_str(s: &str) -> Result<ArenaId> {
        let bad = || Error::InvalidName {
            name: s.to_owned(),
            reason: "an arena id is 32 hexadecimal digits".into(),
        };
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(ArenaId(id))
    }
}

/// How a sealed arena is backed, and what its drop must do.
#[derive(Debug)]
pub(crate) enum Backing {
    Memfd,
    /// `owner_pid` is the builder's pid for the arena its `seal` returned: that arena unlinks
    /// the name on drop in that process, unless persisted.
    Shm {
        name: String,
        owner_pid: u32,
    },
    /// A named segment opened by a reader: never unlinked.
    ShmReader,
    /// A file (never removed; its path is in the arena's locator).
    File,
}

/// Options for opening an existing arena.
///
/// ```no_run
/// # fn main() -> shmarena::Result<()> {
/// let arena = shmarena::OpenOptions::new().always_validate(true).open_named("lexicon")?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct OpenOptions {
    allow_foreign_owner: bool,
    always_validate: bool,
}

impl OpenOptions {
    /// Default options: refuse segments of other users, trust sealed memfds.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Accept a segment or file owned by another user, or writable by group or others.
    /// Its archived entries are always validated. Off by default.
    pub fn allow_foreign_owner(mut self, yes: bool) -> OpenOptions {
        self.allow_foreign_owner = yes;
        self
    }

    /// Validate archived entries with bytecheck on first access even in a sealed memfd that
    /// the builder validated. Off by default.
    pub fn always_validate(mut self, yes: bool) -> OpenOptions {
        self.always_validate = yes;
        self
    }

    /// Opens the arena a locator names.
    pub fn open(&self, locator: &Locator) -> Result<Arena> {
        match locator {
            Locator::Memfd { pid, fd } => self.open_memfd(*pid, *fd),
            Locator::Shm { name } => self.open_named(name),
            Locator::File { path } => self.open_file(path),
        }
    }

    /// Opens a named segment read-only (`O_RDONLY`, `PROT_READ`, symlinks not followed).
    pub fn open_named(&self, name: &str) -> Result<Arena> {
        let name = validate_segment_name(name)?;
        let locator = Locator::Shm {
            name: name.to_owned(),
        };
        let what = locator.describe();
        let file =
            os::shm_open_ro(name).map_err(|e| Error::os(format!("opening {what}"), &what, e))?;
        Arena::open_mapped(file, locator, Backing::ShmReader, self)
    }

    /// Opens an arena file read-only (symlinks in the last component are not followed).
    pub fn open_file(&self, path: impl AsRef<Path>) -> Result<Arena> {
        let path = path.as_ref();
        let locator = Locator::File {
            path: path.to_owned(),
        };
        let what = locator.describe();
        let file = os::open_ro(path).map_err(|e| Error::os(format!("opening {what}"), &what, e))?;
        Arena::open_mapped(file, locator, Backing::File, self)
    }

    /// Opens the memfd arena that process `pid` holds as descriptor `fd`, through
    /// `/proc/<pid>/fd/<fd>`. Works for processes of the same user.
    pub fn open_memfd(&self, pid: u32, fd: i32) -> Result<Arena> {
        let locator = Locator::Memfd { pid, fd };
        let what = locator.describe();
        if fd < 0 {
            return Err(Error::InvalidName {
                name: fd.to_string(),
                reason: "descriptor numbers are not negative".into(),
            });
        }
        let path = format!("/proc/{pid}/fd/{fd}");
        let file = os::open_ro_follow(Path::new(&path))
            .map_err(|e| Error::os(format!("opening {what} ({path})"), &what, e))?;
        Arena::open_mapped(file, locator, Backing::Memfd, self)
    }

    /// Opens an arena from a descriptor this process already holds, such as a memfd inherited
    /// from a parent. The arena takes ownership of the descriptor.
    pub fn open_fd(&self, fd: OwnedFd) -> Result<Arena> {
        let locator = Locator::Memfd {
            pid: os::pid(),
            fd: fd.as_raw_fd(),
        };
        Arena::open_mapped(File::from(fd), locator, Backing::Memfd, self)
    }
}

/// A sealed, read-only arena. Cheap to clone (an `Arc`); views keep it alive.
///
/// Open one with [`Arena::open`], [`Arena::open_named`], [`Arena::open_file`] or
/// [`Arena::open_memfd`], or get one from [`ArenaWriter::seal`](crate::ArenaWriter::seal).
#[derive(Clone)]
pub struct Arena {
    pub(crate) shared: Arc<Shared>,
}

/// The per-process state of one mapped arena.
///
/// INVARIANTS: `layout` was parsed and bounds-checked from `map.bytes()`, so every entry's
/// range lies inside the mapping; `map` is read-only and is never remapped while `Shared` lives;
/// `trusted` is true only for a memfd owned by this user that carries the write, grow and
/// shrink seals.
pub(crate) struct Shared {
    map: os::MapRo,
    file: File,
    layout: Layout,
    locator: Locator,
    what: String,
    trusted: bool,
    always_validate: bool,
    backing: Backing,
    persist: AtomicBool,
    /// Archived entries validated in this process: (entry index, archived type name, size).
    checked: Mutex<Vec<(usize, &'static str, usize)>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Backing::Shm { name, owner_pid } = &self.backing {
            if *owner_pid == os::pid() && !self.persist.load(Ordering::Relaxed) {
                let _ = os::shm_unlink(name);
            }
        }
    }
}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("locator", &self.shared.locator)
            .field("id", &self.id())
            .field("byte_len", &self.byte_len())
            .field("entries", &self.shared.layout.entries.len())
            .finish()
    }
}

impl AsFd for Arena {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.file.as_fd()
    }
}

/// What a typed read asks for, to compare with an entry's stored fingerprint.
pub(crate) struct Want<'a> {
    kind: Kind,
    type_name: std::borrow::Cow<'a, str>,
    size: usize,
    align: usize,
    /// Matched by a user-chosen [`StableName`](crate::StableName): always validated.
    stable: bool,
}

impl Want<'static> {
    pub(crate) fn archived<T: Archive>() -> Want<'static> {
        Want {
            kind: Kind::Archived,
            type_name: std::any::type_name::<T>().into(),
            size: size_of::<T::Archived>(),
            align: align_of::<T::Archived>(),
            stable: false,
        }
    }

    /// An archived `T` matched by the stable type name `type_name` instead of the Rust path.
    pub(crate) fn archived_stable<T: Archive>(type_name: String) -> Want<'static> {
        Want {
            type_name: type_name.into(),
            stable: true,
            ..Want::archived::<T>()
        }
    }

    fn pod<T: Pod>() -> Want<'static> {
        Want {
            kind: Kind::Pod,
            stable: false,
            type_name: std::any::type_name::<T>().into(),
            size: size_of::<T>(),
            align: align_of::<T>(),
        }
    }
}

impl fmt::Display for Want<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (size {}, align {})",
            self.kind, self.type_name, self.size, self.align
        )
    }
}

/// An entry's stored fingerprint, for messages.
pub(crate) fn describe_entry(e: &Entry) -> String {
    format!(
        "{} {} (size {}, align {})",
        e.kind, e.type_name, e.elem_size, e.align
    )
}

impl Arena {
    /// Opens the arena a locator names, with default [`OpenOptions`].
    pub fn open(locator: &Locator) -> Result<Arena> {
        OpenOptions::new().open(locator)
    }

    /// Opens a named segment read-only. See [`OpenOptions::open_named`].
    pub fn open_named(name: &str) -> Result<Arena> {
        OpenOptions::new().open_named(name)
    }

    /// Opens an arena file read-only. See [`OpenOptions::open_file`].
    pub fn open_file(path: impl AsRef<Path>) -> Result<Arena> {
        OpenOptions::new().open_file(path)
    }

    /// Opens another process's memfd arena. See [`OpenOptions::open_memfd`].
    pub fn open_memfd(pid: u32, fd: i32) -> Result<Arena> {
        OpenOptions::new().open_memfd(pid, fd)
    }

    /// Opens an arena from an owned descriptor. See [`OpenOptions::open_fd`].
    pub fn open_fd(fd: OwnedFd) -> Result<Arena> {
        OpenOptions::new().open_fd(fd)
    }

    /// Maps a segment its builder has just sealed; `locator` is where the builder made it.
    pub(crate) fn from_sealed_segment(
        file: File,
        backing: Backing,
        locator: Locator,
    ) -> Result<Arena> {
        let arena = Arena::open_mapped(file, locator, backing, &OpenOptions::new());
        debug_assert!(
            arena.is_ok(),
            "a freshly sealed arena does not open: {arena:?}"
        );
        arena
    }

    fn open_mapped(
        file: File,
        locator: Locator,
        backing: Backing,
        opts: &OpenOptions,
    ) -> Result<Arena> {
        let what = locator.describe();
        let info =
            os::file_info(&file).map_err(|e| Error::os(format!("inspecting {what}"), &what, e))?;
        // A named segment opened here by a reader must never be unlinked by us; build the
        // `Shared` only once all checks pass, so an error drops nothing that unlinks.
        if !info.is_regular {
            return Err(Error::format(&what, FormatError::BadMagic));
        }
        let me = os::euid();
        let seals = os::seals(&file);
        let immutable = seals.is_some_and(|s| s.immutable());
        if !opts.allow_foreign_owner {
            if info.uid != me {
                return Err(Error::PermissionDenied {
                    what,
                    reason: format!(
                        "it is owned by uid {}, not by this user (uid {me}); \
                         use OpenOptions::allow_foreign_owner to accept it",
                        info.uid
                    ),
                    source: None,
                });
            }
            // A sealed memfd cannot change whatever its mode says.
            if info.mode & 0o022 != 0 && !immutable {
                return Err(Error::PermissionDenied {
                    what,
                    reason: format!(
                        "it is writable by group or others (mode {:o}); \
                         use OpenOptions::allow_foreign_owner to accept it",
                        info.mode
                    ),
                    source: None,
                });
            }
        }
        if info.size == 0 {
            return Err(Error::format(&what, FormatError::BadMagic));
        }
        let size = usize::try_from(info.size).map_err(|_| Error::TooLarge {
            what: what.clone(),
            size: info.size,
        })?;
        let map = os::MapRo::new(&file, size).map_err(|e| Error::Io {
            context: format!("mapping {what}"),
            source: e,
        })?;
        let bytes = map.bytes();
        let header = format::Header::parse(bytes).map_err(|e| Error::format(&what, e))?;
        header
            .require_sealed()
            .map_err(|e| Error::format(&what, e))?;
        let layout = Layout::parse_with(bytes, header).map_err(|e| Error::format(&what, e))?;
        let trusted = immutable && info.uid == me;
        Ok(Arena {
            shared: Arc::new(Shared {
                map,
                file,
                layout,
                locator,
                what,
                trusted,
                always_validate: opts.always_validate,
                backing,
                persist: AtomicBool::new(false),
                checked: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Where the arena lives.
    pub fn locator(&self) -> &Locator {
        &self.shared.locator
    }

    /// The arena's random id.
    pub fn id(&self) -> ArenaId {
        ArenaId(self.shared.layout.header.arena_id)
    }

    /// Total length in bytes: header, payloads and table of contents. (Renamed from `len`,
    /// which read as a count of entries beside [`is_empty`](Self::is_empty).)
    pub fn byte_len(&self) -> u64 {
        self.shared.layout.header.total_len
    }

    /// The number of entries.
    pub fn entry_count(&self) -> usize {
        self.shared.layout.entries.len()
    }

    /// Whether the arena has no entries (`entry_count() == 0`).
    pub fn is_empty(&self) -> bool {
        self.shared.layout.entries.is_empty()
    }

    /// The parsed header and table of contents.
    pub fn layout(&self) -> &Layout {
        &self.shared.layout
    }

    /// The whole arena as bytes (read-only).
    pub fn as_bytes(&self) -> &[u8] {
        &self.shared.map.bytes()[..self.shared.layout.header.total_len as usize]
    }

    /// Whether archived entries are read without bytecheck validation because the kernel
    /// guarantees the bytes cannot change: a memfd owned by this user that carries the write,
    /// grow and shrink seals, and whose builder validated each entry before sealing.
    pub fn is_kernel_sealed(&self) -> bool {
        self.shared.trusted
    }

    /// Whether this arena validates archived entries on first access even when kernel-sealed
    /// (opened with [`OpenOptions::always_validate`]). The service uses it to tell readers
    /// whether the builder's validation can be relied on.
    pub(crate) fn validates_always(&self) -> bool {
        self.shared.always_validate
    }

    /// Keeps a named segment after this arena is dropped (by default the process that built it
    /// unlinks it on drop). No effect on memfd and file arenas.
    ///
    /// The segment is also marked persisted (its owner-execute mode bit, `0o500`), so that
    /// [`inspect::gc`](crate::inspect::gc) leaves it alone once its builder has exited; remove
    /// it with [`Arena::remove_named`]. The mark is best effort and only informs gc: it grants
    /// nothing to readers.
    pub fn persist(&self) {
        self.shared.persist.store(true, Ordering::Relaxed);
        if let Backing::Shm { owner_pid, .. } = &self.shared.backing {
            if *owner_pid == os::pid() {
                let _ = os::chmod(&self.shared.file, os::PERSISTED_MODE);
            }
        }
    }

    /// Removes a named segment's name now, in the process that built it; mappings that exist
    /// stay valid, but no process can open the name any more, and the drop of the last clone
    /// then unlinks nothing.
    ///
    /// Outcomes: `Ok(true)` when the name was removed; `Ok(false)` when there is nothing to
    /// remove (a memfd or file arena, or a segment this arena already unlinked or persisted);
    /// [`Error::NotBuilder`] for a named segment this process opened rather than built. To
    /// remove a segment by name from any process of its user, use [`Arena::remove_named`].
    pub fn unlink(&self) -> Result<bool> {
        match &self.shared.backing {
            Backing::Shm { name, owner_pid } if *owner_pid == os::pid() => {
                if self.shared.persist.swap(true, Ordering::Relaxed) {
                    return Ok(false);
                }
                let what = self.shared.what.as_str();
                os::shm_unlink(name)
                    .map_err(|e| Error::os(format!("unlinking {what}"), what, e))?;
                Ok(true)
            }
            Backing::Shm { .. } | Backing::ShmReader => Err(Error::NotBuilder {
                what: self.shared.what.clone(),
            }),
            Backing::Memfd | Backing::File => Ok(false),
        }
    }

    /// Checks every payload against its checksum. O(arena size).
    pub fn verify(&self) -> Result<()> {
        let bytes = self.shared.map.bytes();
        for e in &self.shared.layout.entries {
            format::verify_payload(bytes, e)
                .map_err(|err| Error::format(&self.shared.what, err))?;
        }
        Ok(())
    }

    /// Entry `index` as a checked archived `T`: its fingerprint matches, and it was validated
    /// with bytecheck (once per process) unless the arena is kernel-sealed. The typed reads of
    /// view.rs wrap it in a [`View`](crate::View).
    pub(crate) fn archived_at<T>(&self, index: usize) -> Result<&T::Archived>
    where
        T: Archive,
        T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
    {
        self.archived_as::<T>(index, Want::archived::<T>())
    }

    /// [`archived_at`](Self::archived_at) with the fingerprint given; a stable-name match is
    /// always validated.
    pub(crate) fn archived_as<T>(&self, index: usize, want: Want<'_>) -> Result<&T::Archived>
    where
        T: Archive,
        T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
    {
        let entry = self.entry_at(index, &want)?;
        let name = entry.name.as_str();
        let payload = &self.shared.map.bytes()[entry.range()];
        let root_pos = entry.root_pos as usize;
        let skip = self.shared.trusted
            && entry.validated_at_build()
            && !self.shared.always_validate
            && !want.stable;
        let key = (
            index,
            std::any::type_name::<T::Archived>(),
            size_of::<T::Archived>(),
        );
        let root: &T::Archived = if skip || self.shared.checked.lock().contains(&key) {
            // SAFETY:
            // - `payload` lies inside the mapping (Layout::parse_with checked every range) and
            //   the mapping lives as long as `self.shared`; the returned borrow is tied to `&self`.
            // - `root_pos + size_of::<T::Archived>() <= payload.len()` and the root is aligned
            //   to `align_of::<T::Archived>()`: the layout checks `root_pos + elem_size <= len`
            //   and `offset + root_pos` aligned to `align`, and `entry_at` matched `elem_size`
            //   and `align` to this type.
            // - The bytes are a valid `T::Archived`: either this process validated exactly this
            //   entry as this archived type (`checked`), or the arena is a memfd owned by this
            //   user with the write/grow/shrink seals (the kernel forbids any change since the
            //   builder validated it as a type with the same name, size and alignment, as the
            //   FLAG_VALIDATED bit and the fingerprint record).
            unsafe { rkyv::api::access_pos_unchecked::<T::Archived>(payload, root_pos) }
        } else {
            let root = rkyv::api::high::access_pos::<T::Archived, rancor::Error>(payload, root_pos)
                .map_err(|e| {
                    self.corrupted(format!("entry {name:?} does not validate as {want}: {e}"))
                })?;
            self.shared.checked.lock().push(key);
            root
        };
        Ok(root)
    }

    /// Entry `index` as `[T]`, if its fingerprint matches.
    pub(crate) fn pod_at<T: Pod>(&self, index: usize) -> Result<&[T]> {
        let want = Want::pod::<T>();
        let entry = self.entry_at(index, &want)?;
        let name = entry.name.as_str();
        let payload = &self.shared.map.bytes()[entry.range()];
        bytemuck::try_cast_slice(payload).map_err(|e| {
            self.corrupted(format!(
                "entry {name:?} cannot be read as [{}]: {e:?}",
                want.type_name
            ))
        })
    }

    /// The payload of bytes entry `name`.
    pub(crate) fn bytes_of(&self, name: &str) -> Result<&[u8]> {
        let want = Want {
            kind: Kind::Bytes,
            type_name: "u8".into(),
            size: 1,
            align: 1,
            stable: false,
        };
        let (_, entry) = self.entry_as(name, &want)?;
        Ok(&self.shared.map.bytes()[entry.range()])
    }

    /// A [`FormatError::Corrupted`] naming this arena.
    fn corrupted(&self, detail: String) -> Error {
        Error::format(&self.shared.what, FormatError::Corrupted { detail })
    }

    /// The index of the entry called `name`.
    pub(crate) fn index_of(&self, name: &str) -> Result<usize> {
        let (index, _) = self
            .shared
            .layout
            .find(name)
            .ok_or_else(|| Error::NoSuchEntry {
                arena: self.shared.what.clone(),
                entry: name.to_owned(),
            })?;
        Ok(index)
    }

    /// The entry called `name`, if its fingerprint matches what is asked for.
    fn entry_as(&self, name: &str, want: &Want<'_>) -> Result<(usize, &Entry)> {
        let index = self.index_of(name)?;
        Ok((index, self.entry_at(index, want)?))
    }

    /// Entry `index`, if it exists and its fingerprint matches what is asked for.
    fn entry_at(&self, index: usize, want: &Want<'_>) -> Result<&Entry> {
        let entry = self
            .shared
            .layout
            .entries
            .get(index)
            .ok_or_else(|| Error::BadHandle {
                handle: format!("entry #{index} of {}", self.shared.what),
                reason: format!("the arena has {} entries", self.shared.layout.entries.len()),
            })?;
        let matches = entry.kind == want.kind
            && entry.type_hash == format::checksum(want.type_name.as_bytes())
            && entry.elem_size == want.size as u64
            && entry.align as usize == want.align;
        if !matches {
            let mut found = describe_entry(entry);
            let last = |path: &str| path.rsplit("::").next().unwrap_or("").to_owned();
            if entry.kind == want.kind
                && entry.elem_size == want.size as u64
                && entry.align as usize == want.align
                && entry.type_name != want.type_name
                && last(&entry.type_name) == last(&want.type_name)
            {
                found.push_str(
                    "; if it is the same type under another module path or in another \
                     binary, give it a stable name (shmarena::StableName)",
                );
            }
            return Err(Error::TypeMismatch {
                entry: entry.name.clone(),
                expected: want.to_string(),
                found,
            });
        }
        Ok(entry)
    }

    /// The index and type hash of entry `name` read as archived `T` (for handles).
    pub(crate) fn locate_archived<T: Archive>(&self, name: &str) -> Result<(usize, u64, Kind)> {
        self.locate_as(name, &Want::archived::<T>())
    }

    /// The index and type hash of entry `name`, if it matches `want` (for handles).
    pub(crate) fn locate_as(&self, name: &str, want: &Want<'_>) -> Result<(usize, u64, Kind)> {
        let (index, entry) = self.entry_as(name, want)?;
        Ok((index, entry.type_hash, entry.kind))
    }

    /// The index and type hash of entry `name` read as `[T]` (for handles).
    pub(crate) fn locate_slice<T: Pod>(&self, name: &str) -> Result<(usize, u64, Kind)> {
        let want = Want::pod::<T>();
        let (index, entry) = self.entry_as(name, &want)?;
        Ok((index, entry.type_hash, entry.kind))
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<Shared> {
        Arc::downgrade(&self.shared)
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Arena {
        Arena { shared }
    }
}
