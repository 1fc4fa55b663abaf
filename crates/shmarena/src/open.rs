//! Reaching an arena by what names it: [`OpenOptions`] and the opens by locator, descriptor,
//! `/proc` path, segment name or file path ([`Arena::open`] and its siblings), and the loads
//! that copy a named segment or image file into a fresh sealed memfd ([`Arena::load_named`],
//! [`Arena::load_file`]).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::arena::{Arena, Backing, Mapping, OpenRules};
use crate::error::{Error, Result};
use crate::format::{self, FormatError};
use crate::locator::{validate_segment_name, Locator};
use crate::os;

/// Options for opening an existing arena.
///
/// ```no_run
/// # fn main() -> shmarena::Result<()> {
/// let loc: shmarena::Locator = "lexicon".parse()?;
/// let arena = shmarena::OpenOptions::new().always_validate(true).open(&loc)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct OpenOptions {
    allow_foreign_owner: bool,
    always_validate: bool,
}

impl OpenOptions {
    /// Default options: refuse segments of other users; take the trust rows a trusted channel
    /// the program opted into brings with a sealed memfd (see [`Arena::trusts`]).
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// The part of these options that mapping an arena takes.
    pub(crate) fn rules(&self) -> OpenRules {
        OpenRules {
            allow_foreign_owner: self.allow_foreign_owner,
            always_validate: self.always_validate,
        }
    }

    /// Accept a segment or file owned by another user, or writable by group or others.
    /// Its archived entries are always validated. Off by default.
    pub fn allow_foreign_owner(mut self, yes: bool) -> OpenOptions {
        self.allow_foreign_owner = yes;
        self
    }

    /// Validate archived entries with bytecheck on first access as each type, ignoring the
    /// trust rows of the writer and of trusted channels (a validation in this process is still
    /// cached). Off by default.
    pub fn always_validate(mut self, yes: bool) -> OpenOptions {
        self.always_validate = yes;
        self
    }

    /// Opens the arena a locator names, never mapping bytes that could change under it:
    ///
    /// - `memfd:PID:FD`: [`open_memfd`](Self::open_memfd) (a sealed memfd, mapped in place);
    /// - `shm:NAME` and `file:PATH`: the segment or file is copied into a fresh sealed memfd of
    ///   this process with `pread`, as [`Arena::load_named`] and [`Arena::load_file`] do (O(size)
    ///   time and memory, once per call), after the owner check of
    ///   [`allow_foreign_owner`](Self::allow_foreign_owner). Unlike those, it does not check
    ///   payload checksums up front (call [`Arena::verify`]); archived entries are validated on
    ///   first access either way. The arena's [`locator`](Arena::locator) is then the copy's.
    ///
    /// To map a named segment or file in place, see the `unsafe`
    /// [`open_named`](Self::open_named) and [`open_file`](Self::open_file).
    pub fn open(&self, locator: &Locator) -> Result<Arena> {
        match locator {
            Locator::Memfd { pid, fd } => self.open_memfd(*pid, *fd),
            Locator::Shm { name } => load_named(name, Some(self)),
            Locator::File { path } => load_file(path, Some(self)),
        }
    }

    /// Maps a named segment read-only in place (`O_RDONLY`, `PROT_READ`, symlinks not
    /// followed, `O_NONBLOCK`: a FIFO is refused, never waited on). Archived entries are
    /// validated on first access in this process and the result is cached.
    ///
    /// The safe way to read a named segment is [`Arena::load_named`] (or [`open`](Self::open)),
    /// which copies it into a sealed memfd.
    ///
    /// # Safety
    ///
    /// A named segment is an ordinary file in `/dev/shm`: any process of its owner can change
    /// its mode, rewrite it or truncate it, and the kernel does not stop it. The caller promises
    /// that **no process writes to or truncates the segment while this arena (or any view or
    /// clone of it) is alive**. A write after a validated read lets later reads see bytes that
    /// were never checked (out-of-bounds reads, undefined behaviour); a truncation turns reads
    /// into SIGBUS.
    ///
    /// # Example
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// # let name = format!("doc-open-named-{}", std::process::id());
    /// let mut b = shmarena::ArenaOptions::new().named(&name).create()?;
    /// b.put_slice("primes", &[2u32, 3, 5])?;
    /// let built = b.seal()?;
    /// // SAFETY: this process built the segment and nothing else writes to it while mapped.
    /// let arena = unsafe { shmarena::OpenOptions::new().open_named(&name)? };
    /// assert_eq!(&*arena.slice::<u32>("primes")?, &[2, 3, 5]);
    /// # drop(built); Ok(()) }
    /// ```
    pub unsafe fn open_named(&self, name: &str) -> Result<Arena> {
        let name = validate_segment_name(name)?;
        let locator = Locator::Shm {
            name: name.to_owned(),
        };
        let what = locator.describe();
        let file =
            os::shm_open_ro(name).map_err(|e| Error::os(format!("opening {what}"), &what, e))?;
        Arena::open_mapped(
            file,
            locator,
            Backing::ShmReader,
            self.rules(),
            Mapping::InPlace,
        )
    }

    /// Maps an arena file read-only in place (symlinks in the last component are not followed;
    /// `O_NONBLOCK`: a FIFO is refused, never waited on). Archived entries are validated on
    /// first access in this process and the result is cached.
    ///
    /// The safe way to read a file is [`Arena::load_file`] (or [`open`](Self::open)), which
    /// copies it into a sealed memfd.
    ///
    /// # Safety
    ///
    /// The caller promises that **no process writes to or truncates the file while this arena
    /// (or any view or clone of it) is alive**, as for [`open_named`](Self::open_named).
    /// Replacing the file by renaming another over it (what [`Arena::save`] and a file-target
    /// [`ArenaWriter`](crate::ArenaWriter) do) is fine: the mapping keeps the old inode.
    ///
    /// # Example
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// # let path = std::env::temp_dir().join(format!("shmarena-doc-open-file-{}", std::process::id()));
    /// let mut b = shmarena::ArenaOptions::new().create()?;
    /// b.put_slice("primes", &[2u32, 3, 5])?;
    /// b.seal()?.save(&path)?;
    /// // SAFETY: nothing writes to the file in place while it is mapped (`save` renames).
    /// let arena = unsafe { shmarena::OpenOptions::new().open_file(&path)? };
    /// assert_eq!(&*arena.slice::<u32>("primes")?, &[2, 3, 5]);
    /// # std::fs::remove_file(&path).unwrap(); Ok(()) }
    /// ```
    pub unsafe fn open_file(&self, path: impl AsRef<Path>) -> Result<Arena> {
        let path = path.as_ref();
        let locator = Locator::File {
            path: path.to_owned(),
        };
        let what = locator.describe();
        let file = os::open_ro(path).map_err(|e| Error::os(format!("opening {what}"), &what, e))?;
        Arena::open_mapped(file, locator, Backing::File, self.rules(), Mapping::InPlace)
    }

    /// Opens the memfd arena that process `pid` holds as descriptor `fd`, through
    /// `/proc/<pid>/fd/<fd>`. Works for processes of the same user. Only a memfd with the
    /// write, grow and shrink seals is mapped; anything else is [`Error::NotSealed`] (or
    /// [`Error::Format`] if it is not a sealed arena at all). The open does not block on a FIFO.
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
        Arena::open_mapped(
            file,
            locator,
            Backing::Memfd,
            self.rules(),
            Mapping::SealedOnly,
        )
    }

    /// Opens an arena from a descriptor this process already holds, such as a memfd inherited
    /// from a parent. The arena takes ownership of the descriptor. Only a memfd with the write,
    /// grow and shrink seals is mapped; anything else is [`Error::NotSealed`] (or
    /// [`Error::Format`] if it is not a sealed arena at all).
    pub fn open_fd(&self, fd: OwnedFd) -> Result<Arena> {
        let locator = Locator::Memfd {
            pid: os::pid(),
            fd: fd.as_raw_fd(),
        };
        Arena::open_mapped(
            File::from(fd),
            locator,
            Backing::Memfd,
            self.rules(),
            Mapping::SealedOnly,
        )
    }

    /// [`open_fd`](Self::open_fd) of a descriptor whose `fstat` and seals the caller has just
    /// read (`info`, `seals`): the same checks, without reading them again.
    pub(crate) fn open_fd_with(
        &self,
        fd: OwnedFd,
        info: os::FileInfo,
        seals: os::Seals,
    ) -> Result<Arena> {
        let locator = Locator::Memfd {
            pid: os::pid(),
            fd: fd.as_raw_fd(),
        };
        Arena::open_mapped_with(
            File::from(fd),
            locator,
            Backing::Memfd,
            self.rules(),
            Mapping::SealedOnly,
            info,
            Some(seals),
        )
    }
}

impl Arena {
    /// Opens the arena a locator names, with default [`OpenOptions`]: a sealed memfd is mapped
    /// in place, a named segment or file is copied into a sealed memfd. See
    /// [`OpenOptions::open`].
    pub fn open(locator: &Locator) -> Result<Arena> {
        OpenOptions::new().open(locator)
    }

    /// Maps a named segment read-only in place. See [`OpenOptions::open_named`]; the safe way
    /// is [`Arena::load_named`].
    ///
    /// Safe code cannot call it: the caller must promise that nothing writes to the segment
    /// while it is mapped.
    ///
    /// ```compile_fail,E0133
    /// let arena = shmarena::Arena::open_named("lexicon");
    /// ```
    ///
    /// # Safety
    ///
    /// No process writes to or truncates the segment while the arena (or any view or clone of
    /// it) is alive; see [`OpenOptions::open_named`].
    pub unsafe fn open_named(name: &str) -> Result<Arena> {
        // SAFETY: the caller makes the promise of `OpenOptions::open_named`, which this forwards.
        unsafe { OpenOptions::new().open_named(name) }
    }

    /// Maps an arena file read-only in place. See [`OpenOptions::open_file`]; the safe way is
    /// [`Arena::load_file`].
    ///
    /// Safe code cannot call it:
    ///
    /// ```compile_fail,E0133
    /// let arena = shmarena::Arena::open_file("/data/lexicon.arena");
    /// ```
    ///
    /// # Safety
    ///
    /// No process writes to or truncates the file while the arena (or any view or clone of it)
    /// is alive; see [`OpenOptions::open_file`].
    pub unsafe fn open_file(path: impl AsRef<Path>) -> Result<Arena> {
        // SAFETY: the caller makes the promise of `OpenOptions::open_file`, which this forwards.
        unsafe { OpenOptions::new().open_file(path) }
    }

    /// Opens another process's memfd arena. See [`OpenOptions::open_memfd`].
    pub fn open_memfd(pid: u32, fd: i32) -> Result<Arena> {
        OpenOptions::new().open_memfd(pid, fd)
    }

    /// Opens an arena from an owned descriptor. See [`OpenOptions::open_fd`].
    pub fn open_fd(fd: OwnedFd) -> Result<Arena> {
        OpenOptions::new().open_fd(fd)
    }

    /// Copies the arena image at `path` into a fresh sealed memfd and checks it once: header,
    /// table of contents and every payload checksum ([`Arena::verify`]). The file is read with
    /// `pread`, never mapped, so a writer or a truncation of the file during or after the load
    /// cannot change what the arena holds; a FIFO or device is refused before any read.
    ///
    /// The copy is a sealed memfd that can be [published](Arena::publish) or shared like a
    /// built one. Its archived entries are validated with bytecheck on first access in each
    /// process (the bytes came from a file, not from a builder of this process).
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// # let dir = std::env::temp_dir().join(format!("shmarena-doc-load-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("weights.arena");
    /// let mut b = shmarena::ArenaOptions::new().create()?;
    /// b.put_slice("weights", &[1u32, 2, 3])?;
    /// b.seal()?.save(&path)?;
    ///
    /// let arena = shmarena::Arena::load_file(&path)?;
    /// assert_eq!(&*arena.slice::<u32>("weights")?, &[1, 2, 3]);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn load_file(path: impl AsRef<Path>) -> Result<Arena> {
        load_file(path.as_ref(), None)
    }

    /// Copies the named segment `name` into a fresh sealed memfd and checks it once, the way
    /// [`Arena::load_file`] does: the segment is opened `O_RDONLY | O_NOFOLLOW | O_NONBLOCK` (a
    /// FIFO is refused at once), read with `pread` and never mapped, so a writer or a truncation
    /// of the segment during or after the load cannot change what the arena holds.
    ///
    /// This is the safe way to read a named segment, and what [`Arena::open`] and handles do
    /// for `shm:` locators. It costs a copy (O(size) time and memory) per call; handles copy
    /// once per process and cache the copy. To map a segment in place, see the `unsafe`
    /// [`Arena::open_named`].
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// # let name = format!("doc-load-named-{}", std::process::id());
    /// let mut b = shmarena::ArenaOptions::new().named(&name).create()?;
    /// b.put_slice("primes", &[2u32, 3, 5])?;
    /// let built = b.seal()?;
    ///
    /// let arena = shmarena::Arena::load_named(&name)?;
    /// assert_eq!(&*arena.slice::<u32>("primes")?, &[2, 3, 5]);
    /// # drop(built); Ok(()) }
    /// ```
    pub fn load_named(name: &str) -> Result<Arena> {
        load_named(name, None)
    }
}

/// Fills `buf` from the start of `src` with `pread`; a file shorter than `buf` is
/// [`FormatError::Truncated`] (`needed` bytes).
fn read_at(src: &std::fs::File, buf: &mut [u8], what: &str, needed: u64) -> Result<()> {
    src.read_exact_at(buf, 0).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::format(
            what,
            FormatError::Truncated {
                needed,
                len: os::file_info(src).map_or(0, |i| i.size),
            },
        ),
        _ => Error::Io {
            context: format!("reading {what}"),
            source: e,
        },
    })
}

/// Names the source file rather than the memfd copy in an error about an image.
fn rename_arena(e: Error, what: &str) -> Error {
    match e {
        Error::Format { source, .. } => Error::Format {
            arena: what.to_owned(),
            source,
        },
        other => other,
    }
}

/// [`Arena::load_named`]; with `opts` (the copy [`OpenOptions::open`] makes), its owner checks
/// instead of the payload checksums.
pub(crate) fn load_named(name: &str, opts: Option<&OpenOptions>) -> Result<Arena> {
    let name = validate_segment_name(name)?;
    let what = Locator::Shm {
        name: name.to_owned(),
    }
    .describe();
    load(&os::shm_path(name), &what, opts)
}

/// [`Arena::load_file`]; with `opts` (the copy [`OpenOptions::open`] makes), its owner checks
/// instead of the payload checksums.
pub(crate) fn load_file(path: &Path, opts: Option<&OpenOptions>) -> Result<Arena> {
    let what = Locator::File {
        path: path.to_owned(),
    }
    .describe();
    load(path, &what, opts)
}

/// A fresh memfd of `len` bytes (at least one) that `fill` writes through a private writable
/// mapping, then sealed `WRITE|GROW|SHRINK|SEAL` once that mapping is gone. `what` names the
/// source in errors. Loads make their arenas this way.
pub(crate) fn sealed_copy(
    len: usize,
    what: &str,
    fill: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<std::fs::File> {
    let memfd = os::memfd_create(os::MemfdKind::ArenaCopy)
        .map_err(|e| Error::os(format!("creating a memfd for {what}"), what, e))?;
    os::reserve(&memfd, 0, len as u64).map_err(|e| match Error::os("", what, e) {
        Error::NoSpace { what, source, .. } => Error::NoSpace {
            what,
            requested: len as u64,
            source,
        },
        other => other,
    })?;
    {
        let mut map = os::MapMut::new(&memfd, len, len).map_err(|e| Error::Io {
            context: format!("mapping a memfd for {what}"),
            source: e,
        })?;
        // Nothing but this mapping can write the copy from here on (the memfd was sealed
        // against shrinking when created, so `fill` cannot be cut short by a truncation).
        os::seal_future_writes(&memfd).map_err(|e| Error::Io {
            context: format!("sealing the copy of {what}"),
            source: e,
        })?;
        fill(map.bytes_mut())?;
        // The writable mapping goes before sealing: F_SEAL_WRITE refuses while one exists.
    }
    os::seal_memfd(&memfd).map_err(|e| Error::Io {
        context: format!("sealing the copy of {what}"),
        source: e,
    })?;
    Ok(memfd)
}

/// Copies the regular file at `path` (`what` in messages) into a fresh sealed memfd with
/// `pread`, and checks header and table of contents. Without `opts`, every payload checksum
/// too ([`Arena::verify`]); with `opts`, the owner rules instead, and the payloads are left to
/// `verify` and to validation on first access, as for an arena mapped in place.
fn load(path: &Path, what: &str, opts: Option<&OpenOptions>) -> Result<Arena> {
    let what = what.to_owned();
    // O_NONBLOCK and the regular-file check come before any read: a FIFO never blocks us.
    let (src, file_len) = os::service::open_regular_ro(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            Error::format(
                &format!("{what} (not a regular file)"),
                FormatError::BadMagic,
            )
        } else {
            Error::os(format!("opening {what}"), &what, e)
        }
    })?;
    if let Some(opts) = opts {
        let info =
            os::file_info(&src).map_err(|e| Error::os(format!("inspecting {what}"), &what, e))?;
        opts.rules().check_owner(&what, &info, false)?;
    }
    if file_len == 0 {
        return Err(Error::format(&what, FormatError::BadMagic));
    }
    // The header first: a segment still being built says so, and a sealed one says how many
    // bytes are the arena (a builder racing us may not have shrunk the file to that yet).
    let mut head = vec![0u8; format::HEADER_LEN.min(file_len as usize)];
    read_at(&src, &mut head, &what, file_len)?;
    let header = format::Header::parse(&head).map_err(|e| Error::format(&what, e))?;
    header
        .require_sealed()
        .map_err(|e| Error::format(&what, e))?;
    let size = header.total_len;
    let len = usize::try_from(size).map_err(|_| Error::TooLarge {
        what: what.clone(),
        size,
    })?;
    if len < format::HEADER_LEN {
        return Err(Error::format(
            &what,
            FormatError::Corrupted {
                detail: format!("the header gives a total length of {size} bytes"),
            },
        ));
    }
    // Checked before anything is allocated: a header that claims more bytes than the file
    // holds must not make us reserve them (a lying total_len could ask for all of memory).
    if size > file_len {
        return Err(Error::format(
            &what,
            FormatError::Truncated {
                needed: size,
                len: file_len,
            },
        ));
    }
    let memfd = sealed_copy(len, &what, |dst| read_at(&src, dst, &what, size))?;
    let always_validate = OpenOptions::new().always_validate(true);
    let arena = always_validate
        .open_fd(OwnedFd::from(memfd))
        .map_err(|e| rename_arena(e, &what))?;
    if opts.is_none() {
        arena.verify().map_err(|e| rename_arena(e, &what))?;
    }
    Ok(arena)
}
