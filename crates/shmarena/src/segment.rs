//! The growable segment a writer builds in: always a private memfd, sealed against shrinking
//! and against writes from anywhere but the writer's own mapping; where the sealed arena goes
//! (stays in that memfd, or is written out to a named segment or a temporary file renamed into
//! place), what must happen to its name on drop, and a writable mapping whose backing grows
//! with `fallocate` as entries are added.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format;
use crate::locator::{validate_segment_name, Locator};
use crate::os;

/// The page size segments are reserved in.
pub(crate) const PAGE: u64 = 4096;
/// Growth step cap of the address space: it grows by its size up to this.
const MAX_GROWTH_STEP: u64 = 256 << 20;

/// Which segment to build in.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Memfd,
    Shm(String),
    File(PathBuf),
}

/// Creates the memfd the writer builds in, the file the sealed arena is written out to (for a
/// named segment or a file target: a new segment, or a temporary file beside the target path,
/// which holds only the "building" header until `seal`), and the [`Site`] that removes that
/// file again unless the writer seals.
pub(crate) fn create(
    target: &Target,
    overwrite: bool,
    id: &[u8; 16],
) -> Result<(File, Option<File>, Site)> {
    // A named segment's or a file's memfd holds what becomes a copy of that segment or file
    // (`inspect` lists the segment, and the memfd as a copy).
    let kind = match target {
        Target::Memfd => os::MemfdKind::Arena,
        _ => os::MemfdKind::ArenaCopy,
    };
    let memfd = os::memfd_create(kind).map_err(|e| Error::Io {
        context: "creating a memfd".into(),
        source: e,
    })?;
    Ok(match target {
        Target::Memfd => (memfd, None, Site::Memfd),
        Target::Shm(name) => {
            let name = validate_segment_name(name)?.to_owned();
            let what = Locator::Shm { name: name.clone() }.describe();
            let file = os::shm_create(&name)
                .map_err(|e| Error::os(format!("creating {what}"), &what, e))?;
            (
                memfd,
                Some(file),
                Site::Shm {
                    name,
                    unlink: true,
                    pid: os::pid(),
                },
            )
        }
        Target::File(path) => {
            let what = Locator::File { path: path.clone() }.describe();
            if !overwrite && std::fs::symlink_metadata(path).is_ok() {
                return Err(Error::AlreadyExists { what, source: None });
            }
            let tmp = temp_path_for(path, id);
            let file = os::create_excl(&tmp).map_err(|e| {
                Error::os(
                    format!("creating {}", tmp.display()),
                    &format!("file {}", tmp.display()),
                    e,
                )
            })?;
            (
                memfd,
                Some(file),
                Site::File {
                    tmp,
                    path: path.clone(),
                    overwrite,
                    done: false,
                    pid: os::pid(),
                },
            )
        }
    })
}

fn temp_path_for(path: &Path, id: &[u8; 16]) -> PathBuf {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "arena".into());
    let tag: String = id[..6].iter().map(|b| format!("{b:02x}")).collect();
    path.with_file_name(format!(".{file_name}.building-{tag}"))
}

pub(crate) fn round_up(n: u64, to: u64) -> Option<u64> {
    format::align_up(n, to)
}

/// What the writer must do with the segment's name when it seals or is dropped. `pid` is the
/// creating process: a copy dropped in any other process (a fork child) removes nothing.
pub(crate) enum Site {
    Memfd,
    Shm {
        name: String,
        unlink: bool,
        pid: u32,
    },
    File {
        tmp: PathBuf,
        path: PathBuf,
        overwrite: bool,
        done: bool,
        pid: u32,
    },
}

impl Site {
    /// Where the arena will be found once sealed.
    pub(crate) fn locator(&self, pid: u32, file: &File) -> Locator {
        use std::os::fd::AsRawFd;
        match self {
            Site::Memfd => Locator::Memfd {
                pid,
                fd: file.as_raw_fd(),
            },
            Site::Shm { name, .. } => Locator::Shm { name: name.clone() },
            Site::File { path, .. } => Locator::File { path: path.clone() },
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        match self {
            Site::Memfd => {}
            Site::Shm { name, unlink, pid } => {
                if *unlink && *pid == os::pid() {
                    let _ = os::shm_unlink(name);
                }
            }
            Site::File { tmp, done, pid, .. } => {
                if !*done && *pid == os::pid() {
                    let _ = os::unlink(tmp);
                }
            }
        }
    }
}

/// The segment being written: a memfd, sealed against shrinking and (where the kernel can) against
/// writes from anywhere but its writable mapping here, and the file the arena will be written
/// out to, whose space is reserved alongside so a full file system fails the `put` that
/// overflows it, as it would in place.
///
/// INVARIANTS: `map.valid()` bytes of `file` are reserved (`fallocate`), and as many of
/// `mirror`'s (once it has been reserved at all); bytes at and above `high_water` have never
/// been written since they were reserved, so they read as zero; `protected` is true only if
/// `file` carries `F_SEAL_FUTURE_WRITE`, added after `map` was made and before any byte was
/// written through it.
pub(crate) struct Segment {
    map: os::MapMut,
    file: File,
    mirror: Option<File>,
    mirror_len: u64,
    what: String,
    high_water: usize,
    protected: bool,
}

/// Bytes of address space the writer maps at first when asked for less: growth within it needs
/// no `mremap`, and costs no memory until written.
const MIN_ADDRESS_SPACE: usize = 64 << 20;
/// The most the reserved bytes grow by ahead of what is written: what a sealed arena may
/// carry past its end, since a memfd sealed against shrinking cannot give it back.
const MAX_HEADROOM: u64 = 1 << 20;

impl Segment {
    /// Maps `file` (a memfd from [`os::memfd_create`]) writable with `capacity` bytes of address
    /// space, reserves its first page, then seals it against writes from anywhere else;
    /// `mirror` is the file the arena will be written out to; `what` names the arena in errors.
    pub(crate) fn new(
        file: File,
        mirror: Option<File>,
        what: String,
        capacity: usize,
    ) -> Result<Segment> {
        let first = PAGE as usize;
        os::reserve(&file, 0, PAGE)
            .map_err(|e| Error::os(format!("reserving {what}"), &what, e))?;
        let space = capacity.max(first).max(MIN_ADDRESS_SPACE);
        let map = os::MapMut::new(&file, space, first).map_err(|e| Error::Io {
            context: format!("mapping {space} bytes of address space for {what}"),
            source: e,
        })?;
        let protected = os::seal_future_writes(&file).map_err(|e| Error::Io {
            context: format!("sealing {what} against writes while it is built"),
            source: e,
        })?;
        Ok(Segment {
            map,
            file,
            mirror,
            mirror_len: 0,
            what,
            high_water: 0,
            protected,
        })
    }

    /// The segment's name for messages.
    pub(crate) fn what(&self) -> &str {
        &self.what
    }

    /// Whether no process but this one, through the writer's mapping, can change the bytes:
    /// only then may the writer keep trust rows for what it validated.
    pub(crate) fn protected(&self) -> bool {
        self.protected
    }

    /// The file the arena is written out to at `seal`, if it is not the memfd itself.
    pub(crate) fn mirror(&self) -> Option<&File> {
        self.mirror.as_ref()
    }

    /// Records that bytes up to `end` have been written.
    #[inline]
    pub(crate) fn note_written(&mut self, end: usize) {
        self.high_water = self.high_water.max(end);
    }

    /// The writable mapping, the memfd, the file to write out to and the name, for sealing.
    pub(crate) fn into_parts(self) -> (os::MapMut, File, Option<File>, String) {
        (self.map, self.file, self.mirror, self.what)
    }

    #[inline]
    pub(crate) fn cap(&self) -> usize {
        self.map.valid()
    }

    #[inline]
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.bytes_mut()
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    fn no_space(&self, e: std::io::Error, what: &str, requested: u64) -> Error {
        match Error::os(
            format!("reserving {requested} more bytes for {what}"),
            what,
            e,
        ) {
            Error::NoSpace { what, source, .. } => Error::NoSpace {
                what,
                requested,
                source,
            },
            other => other,
        }
    }

    /// Reserves the first `len` bytes of the file the arena will be written out to.
    fn reserve_mirror(&mut self, len: u64) -> Result<()> {
        let Some(mirror) = &self.mirror else {
            return Ok(());
        };
        if len <= self.mirror_len {
            return Ok(());
        }
        os::reserve(mirror, self.mirror_len, len)
            .map_err(|e| self.no_space(e, &self.what, len - self.mirror_len))?;
        self.mirror_len = len;
        Ok(())
    }

    /// Reserves the first `new_cap` bytes of the memfd (and of the file the arena goes to), and
    /// grows the address space over them if needed.
    pub(crate) fn reserve_exact(&mut self, new_cap: usize) -> Result<()> {
        let old = self.cap();
        if new_cap <= old {
            return Ok(());
        }
        self.reserve_mirror(new_cap as u64)?;
        os::reserve(&self.file, old as u64, new_cap as u64)
            .map_err(|e| self.no_space(e, &self.what, (new_cap - old) as u64))?;
        if new_cap > self.map.len() {
            let step = self.map.len().min(MAX_GROWTH_STEP as usize);
            let space = self.map.len().saturating_add(step).max(new_cap);
            self.map.grow(space).map_err(|e| Error::Io {
                context: format!("mapping {space} bytes of address space for {}", self.what),
                source: e,
            })?;
        }
        self.map.set_valid(new_cap);
        Ok(())
    }

    /// Makes room for bytes up to `end`, reserving a little ahead (a quarter of what is
    /// reserved, at most 1 MiB: a sealed arena keeps whatever was reserved past its end), and
    /// falling back to exactly what is needed when the file system cannot give more.
    pub(crate) fn ensure(&mut self, end: usize) -> Result<()> {
        let cap = self.cap();
        if end <= cap {
            return Ok(());
        }
        let too_large = |size: u64| Error::TooLarge {
            what: self.what.clone(),
            size,
        };
        let needed = round_up(end as u64, PAGE).ok_or_else(|| too_large(end as u64))?;
        let ahead = round_up((cap as u64 / 4).clamp(PAGE, MAX_HEADROOM), PAGE).unwrap_or(PAGE);
        let wanted = needed.saturating_add(ahead);
        let needed = usize::try_from(needed).map_err(|_| too_large(needed))?;
        let wanted = usize::try_from(wanted).unwrap_or(needed);
        match self.reserve_exact(wanted) {
            Err(Error::NoSpace { .. }) if wanted > needed => self.reserve_exact(needed),
            other => other,
        }
    }

    /// Zeroes `range` where it lies below the high-water mark, so freshly handed out space
    /// always reads as zero even after a failed `put` wrote there.
    ///
    /// Panic safety: every writer into the segment raises the mark with
    /// [`note_written`](Self::note_written) *before* it writes (see `SegmentWriter::put_direct`), so a panic in the middle of a write
    /// (in a user's `Serialize` impl, say) cannot leave dirty bytes above the mark.
    pub(crate) fn zero_reused(&mut self, start: usize, end: usize) {
        let dirty_end = end.min(self.high_water);
        if start < dirty_end {
            self.bytes_mut()[start..dirty_end].fill(0);
        }
    }
}
