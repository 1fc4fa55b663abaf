//! Finding arenas on this machine and the processes that use them: the library side of the
//! `arena-inspect` tool.
//!
//! Everything here reads `/dev/shm` and `/proc` with plain file reads (through the crate's `os`
//! module). Nothing maps an arena or
//! reads more than its 128-byte header, so each call costs the same on a 4 GiB arena as on a
//! small one. The one function that changes anything is [`gc`], which unlinks orphaned named
//! segments of this user. [`published`] also talks to each publisher it finds, exactly as a
//! client does (one handshake; it `fstat`s the descriptor received and closes it unmapped).
//!
//! A process is identified by its pid *and* its start time (`/proc/PID/stat` field 22, which
//! the header records as `creator_start`), so a recycled pid does not make a dead owner look
//! alive.
//!
//! ```no_run
//! # fn main() -> shmarena::Result<()> {
//! for arena in shmarena::inspect::list()? {
//!     println!(
//!         "{} {} bytes, {}, used by {} processes",
//!         arena.locator,
//!         arena.size,
//!         arena.state(),
//!         arena.holders.len()
//!     );
//! }
//! # Ok(()) }
//! ```
//!
//! What a scan can miss: processes whose `/proc/PID/fd` or `/proc/PID/maps` this user may not
//! read (other users' processes, unless run as root). A segment owned by this user with mode
//! 0600 or 0400 can only be opened by this user or root, so for [`gc`] the blind spot is root
//! processes when run as a normal user.
//!
//! The parts: [`Target`] (an argument naming an arena or an entry), `probe` (a header read),
//! `scan` (who uses what, from `/proc`), [`gc`], [`published`] (names served by publishers);
//! this file puts them together into [`list`], [`status`] and [`who`].

mod gc;
mod probe;
mod published;
mod scan;
mod target;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{FormatError, Header};
use crate::locator::Locator;
use crate::os;

pub use gc::{gc, GcOptions, GcReport, Removed, SkipReason, Skipped};
use probe::{locator_path, probe_path, Probe};
pub use published::{published, serving, Published, Served};
use scan::Scan;
pub use scan::{FileKey, Holder, MemoryCost};
pub use target::{is_handle_string, Target};

/// The process that created an arena, from its header, and whether it still runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The creator's pid.
    pub pid: u32,
    /// The creator's start time in clock ticks after boot (0 if it could not be read).
    pub start: u64,
    /// Whether a live (not zombie) process with this pid and start time exists.
    pub alive: bool,
}

impl Owner {
    /// The owner recorded in a header, checked against the running processes.
    pub fn of(header: &Header) -> Owner {
        Owner {
            pid: header.creator_pid,
            start: header.creator_start,
            alive: process_alive(header.creator_pid, header.creator_start),
        }
    }
}

/// Whether process `pid` runs and started at `start` (clock ticks after boot, as in
/// `/proc/PID/stat` field 22). A zombie counts as dead. A `start` of 0 means "unknown" and
/// matches any process with that pid.
pub fn process_alive(pid: u32, start: u64) -> bool {
    match os::process_stat(pid) {
        Some(stat) => !matches!(stat.state, 'Z' | 'X' | 'x') && (start == 0 || stat.start == start),
        None => false,
    }
}

/// What [`list`] and [`status`] report about one arena, read from its first 128 bytes and from
/// `/proc`, without mapping it.
#[derive(Clone, Debug)]
pub struct ArenaStatus {
    /// Where it lives. For a memfd, one process and descriptor that hold it (the creator if it
    /// still holds one, else the lowest pid).
    pub locator: Locator,
    /// Device and inode of the segment.
    pub key: FileKey,
    /// Size of the segment or file in bytes (`st_size`).
    pub size: u64,
    /// Bytes of memory or disk it occupies (`st_blocks * 512`). For a memfd or a named segment
    /// that is what it costs the machine in memory (RAM, or swap if swapped out): every page
    /// written, whether or not any process maps or has touched it. For a file, disk blocks.
    pub allocated: u64,
    /// Whether the segment itself carries the kernel's write, grow and shrink seals, so its
    /// bytes can never change (only a memfd can). A named segment or a file never is, even
    /// though the [`Arena`](crate::Arena) opened from one reads a sealed private copy.
    pub kernel_sealed: bool,
    /// A memfd holding a sealed copy of an arena (made by loading a file or a named segment,
    /// as `arena-serve` does, or returned by a named or file writer's seal) rather than the
    /// memfd the arena was built in. Its header's creator is the arena's writer, not the
    /// process that made the copy, so a dead creator is normal for a copy.
    pub copy: bool,
    /// Owning user id.
    pub uid: u32,
    /// Permission bits.
    pub mode: u32,
    /// The parsed header, or why it does not parse (corrupt, truncated, foreign, ...).
    pub header: std::result::Result<Header, FormatError>,
    /// The creator, if the header parses.
    pub owner: Option<Owner>,
    /// The processes that map it or hold a descriptor to it, by pid.
    pub holders: Vec<Holder>,
}

impl ArenaStatus {
    /// `"sealed"`, `"building"`, or `"unreadable"` when the header does not parse.
    pub fn state(&self) -> &'static str {
        match &self.header {
            Ok(h) => h.state_name(),
            Err(_) => "unreadable",
        }
    }

    /// Number of entries of a sealed arena (`None` while building or if the header is bad).
    pub fn entry_count(&self) -> Option<u32> {
        match &self.header {
            Ok(h) if h.state == crate::format::STATE_SEALED => Some(h.entry_count),
            _ => None,
        }
    }

    /// Time since the arena was created, from the header's creation time.
    pub fn age(&self) -> Option<Duration> {
        let created = self.header.as_ref().ok()?.created_ns;
        Some(Duration::from_nanos(os::now_ns().checked_sub(created)?))
    }

    /// The header error, naming the arena, as a typed [`Error`].
    pub fn header_error(&self) -> Option<Error> {
        let e = self.header.as_ref().err()?;
        Some(Error::format(&self.locator.describe(), e.clone()))
    }
}

/// Whether `locator` names a memfd made as a sealed copy of an arena (by its debug name).
fn is_copy(locator: &Locator) -> bool {
    let Locator::Memfd { pid, fd } = locator else {
        return false;
    };
    fs::read_link(os::fd_path(*pid, *fd)).is_ok_and(|link| {
        link.to_str().and_then(os::MemfdKind::of_proc_path) == Some(os::MemfdKind::ArenaCopy)
    })
}

fn status_from(locator: Locator, probe: Probe, scan: &Scan) -> ArenaStatus {
    let copy = is_copy(&locator);
    let key = FileKey::of(&probe.meta);
    let owner = probe.header.as_ref().ok().map(Owner::of);
    ArenaStatus {
        locator,
        key,
        size: probe.meta.len(),
        allocated: probe.meta.blocks() * 512,
        kernel_sealed: probe.sealed,
        copy,
        uid: probe.meta.uid(),
        mode: probe.meta.mode() & 0o7777,
        header: probe.header,
        owner,
        holders: scan.holders(&key),
    }
}

/// Every arena visible to this user: named segments in `/dev/shm` that start with the magic
/// (readable ones; a header that does not parse is listed with its error), and memfd arenas
/// held by live processes: built in place, or sealed copies (loads of files and named segments,
/// `arena-serve`'s images, what a named or file writer's seal returns), found through
/// `/proc/*/fd` links named `/memfd:shmarena` or `/memfd:shmarena-image`.
///
/// Named segments come first, sorted by name, then memfds by pid and descriptor.
pub fn list() -> Result<Vec<ArenaStatus>> {
    let mut named = Vec::new();
    for name in shm_names()? {
        let path = Path::new(os::SHM_DIR).join(&name);
        let Ok(probe) = probe_path(&path, false) else {
            continue;
        };
        if matches!(probe.header, Err(FormatError::BadMagic)) {
            continue;
        }
        named.push((name, probe));
    }
    let scan = Scan::run(&HashSet::new());
    let mut out: Vec<ArenaStatus> = named
        .into_iter()
        .map(|(name, probe)| status_from(Locator::Shm { name }, probe, &scan))
        .collect();

    // One row per memfd, however many processes hold it.
    let mut by_key: BTreeMap<FileKey, Vec<(u32, i32)>> = BTreeMap::new();
    for &(pid, fd, key) in &scan.memfds {
        by_key.entry(key).or_default().push((pid, fd));
    }
    let mut memfds = Vec::new();
    for (key, mut holders) in by_key {
        holders.sort_unstable();
        let mut probed = None;
        for &(pid, fd) in &holders {
            let locator = Locator::Memfd { pid, fd };
            if let Ok(probe) = probe_path(&locator_path(&locator).0, true) {
                if FileKey::of(&probe.meta) == key {
                    probed = Some((locator, probe));
                    break;
                }
            }
        }
        let Some((mut locator, probe)) = probed else {
            continue;
        };
        if matches!(probe.header, Err(FormatError::BadMagic)) {
            continue;
        }
        // Prefer the creator's own descriptor when it still holds one.
        if let Ok(h) = &probe.header {
            if let Some(&(pid, fd)) = holders.iter().find(|(p, _)| *p == h.creator_pid) {
                locator = Locator::Memfd { pid, fd };
            }
        }
        memfds.push(status_from(locator, probe, &scan));
    }
    memfds.sort_by_key(|s| match s.locator {
        Locator::Memfd { pid, fd } => (pid, fd),
        _ => (0, 0),
    });
    out.extend(memfds);
    Ok(out)
}

/// Names in `/dev/shm`, sorted.
pub(crate) fn shm_names() -> Result<Vec<String>> {
    let dir = fs::read_dir(os::SHM_DIR).map_err(|e| Error::Io {
        context: format!("reading {}", os::SHM_DIR),
        source: e,
    })?;
    let mut names: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort_unstable();
    Ok(names)
}

/// The status of one arena: its header (even if the arena is still building or its table of
/// contents is corrupt), owner, and the processes that use it. Reads 128 bytes.
///
/// Fails with [`Error::NotFound`] or [`Error::PermissionDenied`] if it cannot be opened; a
/// header that does not parse is reported in [`ArenaStatus::header`], not as an error.
pub fn status(locator: &Locator) -> Result<ArenaStatus> {
    let what = locator.describe();
    let (path, follow) = locator_path(locator);
    let probe = probe_path(&path, follow)
        .map_err(|e| Error::os(format!("opening {what} ({})", path.display()), &what, e))?;
    let key = FileKey::of(&probe.meta);
    let scan = Scan::run(&HashSet::from([key]));
    Ok(status_from(locator.clone(), probe, &scan))
}

/// The processes that map the arena or hold a descriptor to it, by pid, with their commands and
/// what their use of it costs in memory ([`Holder::memory`]: the `Pss` and `Rss` of their
/// mappings of the arena, and their own anonymous memory). What the arena itself costs, mapped
/// or not, is [`ArenaStatus::allocated`]: see [`usage`] for both at once.
///
/// ```no_run
/// # fn main() -> shmarena::Result<()> {
/// let locator: shmarena::Locator = "lexicon".parse()?;
/// for h in shmarena::inspect::who(&locator)? {
///     println!("{} {} mapped={} fds={:?}", h.pid, h.command, h.mapped, h.fds);
/// }
/// # Ok(()) }
/// ```
pub fn who(locator: &Locator) -> Result<Vec<Holder>> {
    Ok(usage(locator)?.holders)
}

/// [`status`], with each holder's memory cost filled in as [`who`] does: what each process's use
/// costs beside what the arena costs the machine ([`ArenaStatus::allocated`], which counts
/// pages no process maps or has touched).
///
/// ```no_run
/// # fn main() -> shmarena::Result<()> {
/// let u = shmarena::inspect::usage(&"lexicon".parse()?)?;
/// let pss: u64 = u.holders.iter().filter_map(|h| h.memory).map(|m| m.pss).sum();
/// println!("{} bytes allocated, {pss} of them resident and mapped", u.allocated);
/// # Ok(()) }
/// ```
pub fn usage(locator: &Locator) -> Result<ArenaStatus> {
    let mut st = status(locator)?;
    let key = st.key;
    for h in &mut st.holders {
        h.memory = MemoryCost::read(h.pid, &key);
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_recognised() {
        let pid = os::pid();
        let start = os::process_start_time(pid).unwrap();
        assert!(process_alive(pid, start));
        assert!(
            !process_alive(pid, start + 1),
            "a reused pid must not match"
        );
        assert!(!process_alive(0, 0));
    }
}
