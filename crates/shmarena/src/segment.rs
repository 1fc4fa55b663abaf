//! The growable segment a writer builds in: where it lives (memfd, named segment or temporary
//! file), what must happen to its name on drop, and a writable mapping that grows with
//! `fallocate` as entries are added.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format;
use crate::locator::{validate_segment_name, Locator};
use crate::os;

/// The page size segments are reserved in.
pub(crate) const PAGE: u64 = 4096;
/// Growth step cap: the segment grows by its size up to this, so a nearly full small /dev/shm
/// is not asked for twice what the data needs.
const MAX_GROWTH_STEP: u64 = 256 << 20;

/// Which segment to build in.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    Memfd,
    Shm(String),
    File(PathBuf),
}

/// Creates the file for `target` (a memfd, a new named segment, or a temporary file beside the
/// target path) and the [`Site`] that removes it again unless the writer seals.
pub(crate) fn create(target: &Target, overwrite: bool, id: &[u8; 16]) -> Result<(File, Site)> {
    Ok(match target {
        Target::Memfd => {
            let file = os::memfd_create(os::MemfdKind::Arena).map_err(|e| Error::Io {
                context: "creating a memfd".into(),
                source: e,
            })?;
            (file, Site::Memfd)
        }
        Target::Shm(name) => {
            let name = validate_segment_name(name)?.to_owned();
            let what = Locator::Shm { name: name.clone() }.describe();
            let file = os::shm_create(&name)
                .map_err(|e| Error::os(format!("creating {what}"), &what, e))?;
            (
                file,
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
                file,
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

/// The segment being written: a file and a writable mapping of all of it.
///
/// INVARIANTS: when `map` is `Some`, it maps exactly the file's current length; bytes at and
/// above `high_water` have never been written since they were reserved, so they read as zero.
pub(crate) struct Segment {
    map: Option<os::MapMut>,
    file: File,
    what: String,
    high_water: usize,
}

impl Segment {
    /// A segment over `file`, not mapped yet; `what` names it in errors.
    pub(crate) fn new(file: File, what: String) -> Segment {
        Segment {
            map: None,
            file,
            what,
            high_water: 0,
        }
    }

    /// The segment's name for messages.
    pub(crate) fn what(&self) -> &str {
        &self.what
    }

    /// The segment's file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Records that bytes up to `end` have been written.
    #[inline]
    pub(crate) fn note_written(&mut self, end: usize) {
        self.high_water = self.high_water.max(end);
    }

    /// The writable mapping (if any), the file and the name, for sealing.
    pub(crate) fn into_parts(self) -> (Option<os::MapMut>, File, String) {
        (self.map, self.file, self.what)
    }

    #[inline]
    pub(crate) fn cap(&self) -> usize {
        self.map.as_ref().map_or(0, os::MapMut::len)
    }

    #[inline]
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.as_mut().map_or(&mut [], os::MapMut::bytes_mut)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_ref().map_or(&[], os::MapMut::bytes)
    }

    /// Grows the file and the mapping to exactly `new_cap` bytes.
    pub(crate) fn reserve_exact(&mut self, new_cap: usize) -> Result<()> {
        let old = self.cap();
        if new_cap <= old {
            return Ok(());
        }
        os::reserve(&self.file, old as u64, new_cap as u64).map_err(|e| {
            match Error::os(
                format!("reserving {new_cap} bytes for {}", self.what),
                &self.what,
                e,
            ) {
                Error::NoSpace { what, source, .. } => Error::NoSpace {
                    what,
                    requested: (new_cap - old) as u64,
                    source,
                },
                other => other,
            }
        })?;
        let grown = match &mut self.map {
            Some(map) => map.grow(new_cap),
            None => os::MapMut::new(&self.file, new_cap).map(|m| self.map = Some(m)),
        };
        grown.map_err(|e| {
            // Give the reservation back so the builder stays as it was.
            let _ = self.file.set_len(old as u64);
            Error::Io {
                context: format!("mapping {new_cap} bytes of {}", self.what),
                source: e,
            }
        })
    }

    /// Makes room for bytes up to `end`, growing geometrically, and falling back to exactly
    /// what is needed when the file system cannot give more.
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
        let step = (cap as u64).clamp(PAGE, MAX_GROWTH_STEP);
        let wanted = (cap as u64).saturating_add(step).max(needed);
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
