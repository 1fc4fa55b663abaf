//! A sealed arena: mapping it from a file in any backing, and checked access to its entries.
//! Opening one by locator, descriptor or name is `open.rs`.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytemuck::Pod;
use rkyv::bytecheck::CheckBytes;
use rkyv::{Archive, Portable};

use crate::archive::ArenaValidator;
use crate::error::{Error, Result};
use crate::format::{self, Entry, FormatError, Kind, Layout};
use crate::locator::Locator;
use crate::os;
use crate::trust::{self, Row, TrustTable, TypeKey};

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

/// What mapping an arena takes from [`OpenOptions`](crate::OpenOptions): the owner rules and
/// whether archived entries are always validated.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OpenRules {
    pub(crate) allow_foreign_owner: bool,
    pub(crate) always_validate: bool,
}

impl OpenRules {
    /// The owner and mode rules of
    /// [`OpenOptions::allow_foreign_owner`](crate::OpenOptions::allow_foreign_owner) for a file
    /// described by `info` (`immutable`: it carries the write, grow and shrink seals).
    pub(crate) fn check_owner(
        &self,
        what: &str,
        info: &os::FileInfo,
        immutable: bool,
    ) -> Result<()> {
        if self.allow_foreign_owner {
            return Ok(());
        }
        let me = os::euid();
        if info.uid != me {
            return Err(Error::PermissionDenied {
                what: what.to_owned(),
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
                what: what.to_owned(),
                reason: format!(
                    "it is writable by group or others (mode {:o}); \
                     use OpenOptions::allow_foreign_owner to accept it",
                    info.mode
                ),
                source: None,
            });
        }
        Ok(())
    }
}

/// How [`Arena::open_mapped`] may map a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mapping {
    /// Only a memfd with the write, grow and shrink seals (the safe opens); anything else is
    /// [`Error::NotSealed`].
    SealedOnly,
    /// Anything: the caller of an `unsafe` open promised that nobody writes or truncates the
    /// file while it is mapped.
    InPlace,
}

/// A sealed, read-only arena. Cheap to clone (an `Arc`); views keep it alive.
///
/// Open one with [`Arena::open`], [`Arena::open_memfd`] or [`Arena::open_fd`] (sealed memfds,
/// mapped in place), copy a named segment or file into a sealed memfd with
/// [`Arena::load_named`] or [`Arena::load_file`], map one in place with the `unsafe`
/// [`Arena::open_named`] or [`Arena::open_file`], or get one from
/// [`ArenaWriter::seal`](crate::ArenaWriter::seal).
#[derive(Clone)]
pub struct Arena {
    pub(crate) shared: Arc<Shared>,
}

/// The per-process state of one mapped arena.
///
/// INVARIANTS: `layout` was parsed and bounds-checked from `map.bytes()`, so every entry's
/// range lies inside the mapping; `map` is read-only and is never remapped while `Shared` lives;
/// `sealed` is true only for a memfd owned by this user whose descriptor (the one mapped)
/// carries the write, grow and shrink seals; `trust` holds a row (entry, type) only if reading
/// that entry as that archived type is known valid: validated in this process, or, for a
/// `sealed` arena opened without `always_validate`, by the writer in this process's memory or
/// a fork ancestor's, or by a process of the same build that handed the arena over through a
/// trusted channel (see trust.rs).
pub(crate) struct Shared {
    map: os::MapRo,
    file: File,
    layout: Layout,
    locator: Locator,
    what: String,
    sealed: bool,
    always_validate: bool,
    backing: Backing,
    persist: AtomicBool,
    /// Which entries are known valid as which archived type (the only evidence that lets a
    /// typed read skip bytecheck).
    trust: TrustTable,
    /// The file's inode number, read once on first need (trust tokens name it; a file's inode
    /// never changes while a descriptor holds it).
    inode: OnceLock<Option<u64>>,
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
}

impl Want<'static> {
    pub(crate) fn archived<T: Archive>() -> Want<'static> {
        Want {
            kind: Kind::Archived,
            type_name: std::any::type_name::<T>().into(),
            size: size_of::<T::Archived>(),
            align: align_of::<T::Archived>(),
        }
    }

    /// An archived `T` matched by the stable type name `type_name` instead of the Rust path.
    pub(crate) fn archived_stable<T: Archive>(type_name: String) -> Want<'static> {
        Want {
            type_name: type_name.into(),
            ..Want::archived::<T>()
        }
    }

    fn pod<T: Pod>() -> Want<'static> {
        Want {
            kind: Kind::Pod,
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

/// Why a safe open refuses `file`, which is not a sealed memfd: the header's own complaint if it
/// is not a sealed arena (read with `pread`, never mapped), else [`Error::NotSealed`].
fn refuse_unsealed(file: &File, what: &str) -> Error {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; format::HEADER_LEN];
    let mut got = 0;
    while got < head.len() {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let sealed = format::Header::parse(&head[..got]).and_then(|h| h.require_sealed());
    match sealed {
        Err(e) => Error::format(what, e),
        Ok(()) => Error::NotSealed {
            what: what.to_owned(),
        },
    }
}

impl Arena {
    /// Maps the sealed memfd its builder has just made; `locator` is where the builder made the
    /// arena (the memfd, or the named segment or file it wrote out to), and `validated` the
    /// (entry, archived type) pairs the builder validated at `put`: they become the arena's
    /// trust rows.
    pub(crate) fn from_sealed_segment(
        file: File,
        backing: Backing,
        locator: Locator,
        validated: &[(usize, TypeKey, crate::archive::Recheck)],
    ) -> Result<Arena> {
        // The builder of this process wrote every byte and sealed `file`, the memfd it built in
        // (for any target: a named segment or file got a copy written out); `backing` says
        // which target, for the unlink on drop, and `locator` names it. The rows in `validated`
        // were recorded only if the memfd carried `F_SEAL_FUTURE_WRITE` from before the first
        // `put`, so no process but the writer could change the bytes they speak of.
        let arena = Arena::open_mapped(
            file,
            locator,
            backing,
            OpenRules::default(),
            Mapping::SealedOnly,
        );
        debug_assert!(
            arena.is_ok(),
            "a freshly sealed arena does not open: {arena:?}"
        );
        let arena = arena?;
        if arena.shared.sealed {
            // Each row is confirmed on the sealed bytes before it is kept: until `seal` another
            // process of the user could have held a writable mapping of the memfd, made in the
            // few system calls between `memfd_create` and `F_SEAL_FUTURE_WRITE` (the owner can
            // `chmod` it through `/proc/PID/fd/N`) and dropped before the write seal, and
            // changed an entry after `put` validated it. The seals now forbid any change, so
            // this check is the one the row rests on; an entry that fails it gets no row, and
            // its readers validate it (and find it corrupted).
            for &(index, key, recheck) in validated {
                let Some(entry) = arena.shared.layout.entries.get(index) else {
                    continue;
                };
                let payload = &arena.shared.map.bytes()[entry.range()];
                if recheck(payload, entry.root_pos as usize) {
                    arena.shared.trust.insert(index, key);
                }
            }
        }
        Ok(arena)
    }

    /// Accepts trust rows received through a trusted channel (the environment at exec, the
    /// service handshake, a Python pickle) whose build identity the caller has checked is this
    /// process's own. Ignored unless the arena is a kernel-sealed memfd opened without
    /// `always_validate`. Returns whether the rows were taken.
    pub(crate) fn accept_rows(&self, rows: &[Row]) -> bool {
        if !self.shared.sealed || self.shared.always_validate {
            return false;
        }
        for &row in rows {
            self.shared.trust.insert_digest(row);
        }
        true
    }

    /// The inode number of the arena's file (`None` if `fstat` failed), read once.
    fn inode(&self) -> Option<u64> {
        *self
            .shared
            .inode
            .get_or_init(|| os::inode(self.shared.file.as_fd()).ok())
    }

    /// A number that changes whenever this arena gains a trust row: equal values mean that
    /// [`trust_rows`](Arena::trust_rows) returns the same rows.
    pub(crate) fn trust_rows_version(&self) -> u64 {
        self.shared.trust.changes()
    }

    /// Every trust row of this arena, for a trusted channel (empty unless sealed).
    pub(crate) fn trust_rows(&self) -> Vec<Row> {
        if !self.shared.sealed {
            return Vec::new();
        }
        self.shared.trust.rows()
    }

    /// This process's build identity and this arena's trust rows (only those of entry `entry`
    /// if given), as bytes, for a trusted channel that is not the library's own (the Python
    /// bindings' pickles): 16 bytes of build identity, the memfd's inode number (u64), then 20
    /// bytes per row (entry index u32, type digest u128), little-endian. The inode binds the
    /// rows to this very memfd: another one that holds an arena of the same id (a copy loaded
    /// from a saved image, whose bytes may have been changed on disk) does not take them. Empty
    /// when there is nothing to hand over, and for an arena whose locator names a segment or
    /// file (its receiver copies whatever that holds by then). Read back with
    /// [`Arena::accept_trust_token`].
    #[doc(hidden)]
    pub fn trust_token(&self, entry: Option<&str>) -> Vec<u8> {
        // The rows speak of this memfd's bytes. A receiver reaches a named segment or file by
        // name, as a copy of whatever the segment or file holds by then: no rows go with it.
        if !matches!(self.shared.locator, Locator::Memfd { .. }) {
            return Vec::new();
        }
        let only = entry.map(|name| self.shared.layout.find(name).map(|(i, _)| i as u32));
        let mut rows = self.trust_rows();
        if let Some(only) = only {
            rows.retain(|(i, _)| Some(*i) == only);
        }
        if rows.is_empty() || !os::build_id_known() {
            return Vec::new();
        }
        let Some(inode) = self.inode() else {
            return Vec::new();
        };
        let mut out = os::build_id().to_vec();
        out.extend_from_slice(&inode.to_le_bytes());
        for (i, d) in rows {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&d.to_le_bytes());
        }
        out
    }

    /// Accepts a [`trust_token`](Arena::trust_token) made by a process of the same build for
    /// this very memfd (same inode; anything else is ignored), if this arena is a kernel-sealed
    /// memfd opened without `always_validate`. Returns whether rows were taken.
    ///
    /// # Safety
    ///
    /// The token must come, unchanged, from [`Arena::trust_token`] of this same arena (same
    /// id, same bytes) in a process of the same build, through a channel that the caller's
    /// own safe code cannot forge. The Python bindings take it from a pickle: loading a pickle
    /// already runs arbitrary code, so whoever can forge one can do anything.
    #[doc(hidden)]
    pub unsafe fn accept_trust_token(&self, token: &[u8]) -> bool {
        let Some((id, rest)) = token.split_first_chunk::<16>() else {
            return false;
        };
        let Some((inode, rest)) = rest.split_first_chunk::<8>() else {
            return false;
        };
        if !os::build_id_known() || *id != os::build_id() || rest.len() % 20 != 0 {
            return false;
        }
        if self.inode() != Some(u64::from_le_bytes(*inode)) {
            return false;
        }
        let rows: Vec<Row> = rest
            .chunks_exact(20)
            .map(|r| {
                let (i, d) = r.split_at(4);
                (
                    u32::from_le_bytes(i.try_into().expect("4 bytes")),
                    u128::from_le_bytes(d.try_into().expect("16 bytes")),
                )
            })
            .collect();
        os::service::is_memfd(self.as_fd()) && self.accept_rows(&rows)
    }

    /// Whether [`get::<T>(name)`](Arena::get) reads entry `name` without bytecheck validation:
    /// this process knows, from its own memory, that the entry is a valid archived `T`. That is
    /// so when this process (or a fork ancestor) built the arena, validated the entry as `T`
    /// already, or received the arena through a trusted channel from a process of the same
    /// build and opted into that channel's rows ([`Arena::share_with`]'s environment at exec
    /// after [`trust_inherited_rows`](crate::trust_inherited_rows),
    /// [`connect`](crate::connect) with
    /// [`trust_publisher_rows`](crate::ConnectOptions::trust_publisher_rows), a Python pickle
    /// after `shmarena.trust_pickled_rows()`). An arena opened by descriptor, `/proc` path,
    /// name, file or a handle parsed from text, or reached through a channel without the
    /// opt-in, starts with nothing trusted and validates each entry on its first read.
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// let mut b = shmarena::ArenaOptions::new().create()?;
    /// b.put("v", &vec![1u32, 2, 3])?;
    /// let arena = b.seal()?;
    /// assert!(arena.trusts::<Vec<u32>>("v")); // validated by the writer, in this process
    /// assert!(!arena.trusts::<Vec<u64>>("v"));
    /// # Ok(()) }
    /// ```
    pub fn trusts<T: Archive>(&self, name: &str) -> bool {
        self.shared.layout.find(name).is_some_and(|(index, _)| {
            self.shared
                .trust
                .contains(index, trust::key_of::<T::Archived>())
        })
    }

    /// Maps `file` as the sealed arena `locator` names, under `rules` and `mapping`, after the
    /// owner, seal and header checks.
    pub(crate) fn open_mapped(
        file: File,
        locator: Locator,
        backing: Backing,
        rules: OpenRules,
        mapping: Mapping,
    ) -> Result<Arena> {
        let what = locator.describe();
        let info =
            os::file_info(&file).map_err(|e| Error::os(format!("inspecting {what}"), &what, e))?;
        let seals = os::seals(&file);
        Arena::open_mapped_with(file, locator, backing, rules, mapping, info, seals)
    }

    /// [`open_mapped`](Self::open_mapped) with the file's `fstat` and seals already read (by
    /// the service client, which checks them before it opens the arena).
    pub(crate) fn open_mapped_with(
        file: File,
        locator: Locator,
        backing: Backing,
        rules: OpenRules,
        mapping: Mapping,
        info: os::FileInfo,
        seals: Option<os::Seals>,
    ) -> Result<Arena> {
        let what = locator.describe();
        // A named segment opened here by a reader must never be unlinked by us; build the
        // `Shared` only once all checks pass, so an error drops nothing that unlinks.
        if !info.is_regular {
            return Err(Error::format(&what, FormatError::BadMagic));
        }
        let me = os::euid();
        let immutable = seals.is_some_and(|s| s.immutable());
        rules.check_owner(&what, &info, immutable)?;
        if info.size == 0 {
            return Err(Error::format(&what, FormatError::BadMagic));
        }
        if !immutable && mapping == Mapping::SealedOnly {
            return Err(refuse_unsealed(&file, &what));
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
        let sealed = immutable && info.uid == me;
        let trust = TrustTable::new(layout.entries.len());
        Ok(Arena {
            shared: Arc::new(Shared {
                map,
                file,
                layout,
                locator,
                what,
                sealed,
                always_validate: rules.always_validate,
                backing,
                persist: AtomicBool::new(false),
                trust,
                inode: OnceLock::new(),
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

    /// Whether the kernel guarantees the bytes cannot change: a memfd owned by this user whose
    /// descriptor carries the write, grow and shrink seals. That alone does not skip validation:
    /// see [`Arena::trusts`] for which reads do.
    pub fn is_kernel_sealed(&self) -> bool {
        self.shared.sealed
    }

    /// Keeps a named segment after this arena is dropped (by default the process that built it
    /// unlinks it on drop). No effect on memfd and file arenas.
    ///
    /// The segment is also marked persisted (its owner-execute mode bit, `0o500`), so that
    /// [`inspect::gc`](crate::inspect::gc) leaves it alone once its builder has exited; remove
    /// it with [`Arena::remove_named`]. The mark is best effort and only informs gc: it grants
    /// nothing to readers.
    ///
    /// It cannot fail (keeping the segment only changes what the drop does), so it returns
    /// nothing, and `arena.persist()?` does not compile: call it as a statement.
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// # let name = format!("doc-persist-{}", std::process::id());
    /// let arena = shmarena::ArenaOptions::new().named(name.as_str()).create()?.seal()?;
    /// arena.persist();
    /// drop(arena);
    /// // SAFETY: this process built the segment and nothing writes it.
    /// let again = unsafe { shmarena::Arena::open_named(&name)? };
    /// assert_eq!(again.entry_count(), 0);
    /// shmarena::Arena::remove_named(&name)?;
    /// # Ok(()) }
    /// ```
    pub fn persist(&self) {
        self.shared.persist.store(true, Ordering::Relaxed);
        if let Backing::Shm { name, owner_pid } = &self.shared.backing {
            if *owner_pid == os::pid() {
                // The arena maps a sealed copy (see `ArenaWriter::seal`): mark the segment
                // itself, if the name still holds this arena.
                let _ = mark_persisted(name, self.id());
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

    /// Entry `index` as a checked archived `T`: its fingerprint matches, and either the trust
    /// table has the row (entry, `T::Archived`) or it validates with bytecheck now (and the row
    /// is recorded). The typed reads of view.rs wrap it in a [`View`](crate::View).
    pub(crate) fn archived_at<T>(&self, index: usize) -> Result<&T::Archived>
    where
        T: Archive,
        T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
    {
        self.archived_as::<T>(index, Want::archived::<T>())
    }

    /// [`archived_at`](Self::archived_at) with the fingerprint given (a Rust path or a stable
    /// name: either only selects the entry; skipping bytecheck needs a trust row for `T`).
    pub(crate) fn archived_as<T>(&self, index: usize, want: Want<'_>) -> Result<&T::Archived>
    where
        T: Archive,
        T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
    {
        let entry = self.entry_at(index, &want)?;
        let name = entry.name.as_str();
        let payload = &self.shared.map.bytes()[entry.range()];
        let root_pos = entry.root_pos as usize;
        let key = trust::key_of::<T::Archived>();
        let root: &T::Archived = if self.shared.trust.contains(index, key) {
            // SAFETY:
            // - `payload` lies inside the mapping (Layout::parse_with checked every range) and
            //   the mapping lives as long as `self.shared`; the returned borrow is tied to `&self`.
            // - `root_pos + size_of::<T::Archived>() <= payload.len()` and the root is aligned
            //   to `align_of::<T::Archived>()`: the layout checks `root_pos + elem_size <= len`
            //   and `offset + root_pos` aligned to `align`, and `entry_at` matched `elem_size`
            //   and `align` to this type.
            // - The bytes are a valid `T::Archived`: the trust table has the row (index, the
            //   real type identity of `T::Archived`), which exists only if (b) this process
            //   validated exactly this entry as exactly this type (the bytes cannot have changed
            //   since: a sealed memfd, or a backing whose open was `unsafe` with that promise),
            //   or, on a memfd whose descriptor carries the write/grow/shrink seals (so the
            //   bytes cannot have changed since), (a) the writer validated it as this type in
            //   this process's memory (or a fork ancestor's), or (c) a process of the same build
            //   that had such a row handed it over a trusted channel. Nothing read from the
            //   arena's bytes is taken as evidence.
            unsafe { rkyv::api::access_pos_unchecked::<T::Archived>(payload, root_pos) }
        } else {
            let root =
                crate::archive::validate_at::<T::Archived>(payload, root_pos).map_err(|e| {
                    self.corrupted(format!("entry {name:?} does not validate as {want}: {e}"))
                })?;
            self.shared.trust.insert(index, key);
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
            .ok_or_else(|| Error::NoSuchEntry {
                arena: self.shared.what.clone(),
                entry: format!("#{index}"),
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

/// Gives named segment `name` the mode that tells gc its builder persisted it, if the name still
/// holds arena `id` (its header's id, read with `pread`; the segment is never mapped here).
fn mark_persisted(name: &str, id: ArenaId) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = os::shm_open_ro(name)?;
    let at = format::header_offsets::ARENA_ID;
    let mut stored = [0u8; 16];
    file.read_exact_at(&mut stored, at as u64)?;
    if stored != id.to_bytes() {
        return Err(std::io::Error::other("the name now holds another arena"));
    }
    os::chmod(&file, os::PERSISTED_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_index_past_the_table_is_no_such_entry() {
        let mut b = crate::ArenaOptions::new().create().unwrap();
        b.put_slice("only", &[1u32]).unwrap();
        let arena = b.seal().unwrap();
        assert_eq!(&*arena.slice_at::<u32>(0).unwrap(), &[1]);
        match arena.slice_at::<u32>(1) {
            Err(Error::NoSuchEntry { entry, .. }) => assert_eq!(entry, "#1"),
            Err(other) => panic!("expected NoSuchEntry, got {other}"),
            Ok(_) => panic!("read past the table of contents"),
        }
        assert!(matches!(
            arena.view_at::<Vec<u32>>(7),
            Err(Error::NoSuchEntry { .. })
        ));
    }
}
