//! Arena image files: loading one into a fresh sealed memfd, and saving an arena as one.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::arena::{Arena, OpenOptions};
use crate::error::{Error, Result};
use crate::format::{self, FormatError};
use crate::locator::{validate_segment_name, Locator};
use crate::os;

impl Arena {
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

    /// Writes the arena's bytes to `path` atomically: to a temporary file beside it (mode
    /// 0600), synced, then renamed over `path`. A reader of `path` sees the old image or the new
    /// one, never a part. [`Arena::load_file`] reads it back.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let what = format!("file {}", path.display());
        let file_name = path.file_name().ok_or_else(|| Error::InvalidName {
            name: path.display().to_string(),
            reason: "the path has no file name".into(),
        })?;
        let id = os::random_id().map_err(|e| Error::os("drawing a random name", &what, e))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(
            ".tmp-{:02x}{:02x}{:02x}{:02x}",
            id[0], id[1], id[2], id[3]
        ));
        let tmp = path.with_file_name(tmp_name);
        let write = || -> std::io::Result<()> {
            let mut f = os::create_excl(&tmp)?;
            f.write_all(self.as_bytes())?;
            f.sync_all()?;
            os::rename_replace(&tmp, path)
        };
        write().map_err(|e| {
            let _ = os::unlink(&tmp);
            Error::os(format!("saving {what}"), &what, e)
        })
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
/// source in errors. Loads and [`ArenaWriter::seal`](crate::ArenaWriter::seal) of a named or
/// file target make their arenas this way.
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
        let mut map = os::MapMut::new(&memfd, len).map_err(|e| Error::Io {
            context: format!("mapping a memfd for {what}"),
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
        opts.check_owner(&what, &info, false)?;
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
