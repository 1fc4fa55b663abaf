//! Finding arenas on this machine and the processes that use them: the library side of the
//! `arena-inspect` tool.
//!
//! Everything here reads `/dev/shm` and `/proc` with plain file reads. Nothing maps an arena or
//! reads more than its 128-byte header, so each call costs the same on a 4 GiB arena as on a
//! small one. The one function that changes anything is [`gc`], which unlinks orphaned named
//! segments of this user.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{FormatError, Header, HEADER_LEN};
use crate::handle::RawHandle;
use crate::locator::{validate_segment_name, Locator};
use crate::os;

/// The debug name the builder gives its memfds; `/proc/PID/fd/N` links read
/// `/memfd:shmarena (deleted)`.
const MEMFD_LINK_PREFIX: &str = "/memfd:shmarena";

/// Whether a `/proc/PID/fd` link or `/proc/PID/maps` path names a shmarena memfd (and not, say,
/// a memfd called `shmarena-cache`).
fn is_arena_memfd(target: &str) -> bool {
    target
        .strip_prefix(MEMFD_LINK_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
}

/// The identity of an open file: device and inode, as `fstat` reports them. Two paths or
/// descriptors with the same key are the same segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileKey {
    fn of(meta: &fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Linux's `makedev`: the `st_dev` value of a `major:minor` pair as `/proc/PID/maps` prints it.
fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

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
    match proc_stat(pid) {
        Some((state, started)) => {
            !matches!(state, 'Z' | 'X' | 'x') && (start == 0 || started == start)
        }
        None => false,
    }
}

/// State letter (field 3) and start time (field 22) of a process.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    if pid == 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) is in parentheses and may contain anything; fields after the last
    // ')' start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

/// A process that maps an arena or holds a descriptor to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub command: String,
    /// Its command line (`/proc/PID/cmdline`, arguments joined by spaces; empty for kernel
    /// threads or if unreadable).
    pub cmdline: String,
    /// Whether it maps the arena (`/proc/PID/maps`).
    pub mapped: bool,
    /// Its descriptors that refer to the arena (`/proc/PID/fd`), ascending.
    pub fds: Vec<i32>,
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
    /// Bytes of memory or disk it occupies (`st_blocks * 512`).
    pub allocated: u64,
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
        Some(Error::format(&self.locator.to_string(), e.clone()))
    }
}

/// Parses an arena locator as the `arena-inspect` tool accepts it. The rule, in order:
///
/// 1. `shm:NAME`, `file:PATH` or `memfd:PID:FD`: that backing, explicitly.
/// 2. `PID:FD` (two decimal numbers): the memfd arena process `PID` holds as descriptor `FD`.
/// 3. Anything with a `/` after an optional single leading one (`/tmp/x.arena`, `data/x`), or
///    starting with `.`: a file path (`./x.arena` for a file in the current directory).
/// 4. Anything else (`lexicon`, `/lexicon`): a named shared-memory segment, checked with
///    [`validate_segment_name`].
///
/// Before all of these, a handle string (`shmarena1:...`, see [`RawHandle`]) gives the locator
/// it carries. Parse it as a [`RawHandle`] too to get the arena id and entry it names.
///
/// ```
/// use shmarena::{inspect::parse_locator, Locator};
/// assert_eq!(parse_locator("/lex").unwrap(), Locator::Shm { name: "lex".into() });
/// assert_eq!(parse_locator("812:5").unwrap(), Locator::Memfd { pid: 812, fd: 5 });
/// assert!(matches!(parse_locator("/tmp/lex.arena").unwrap(), Locator::File { .. }));
/// assert!(matches!(parse_locator("./lex.arena").unwrap(), Locator::File { .. }));
/// assert!(matches!(parse_locator("file:lex.arena").unwrap(), Locator::File { .. }));
/// ```
pub fn parse_locator(s: &str) -> Result<Locator> {
    if is_handle_string(s) {
        let handle: RawHandle = s.parse()?;
        return handle.locator().ok_or_else(|| Error::BadHandle {
            handle: s.to_owned(),
            reason: "it names its file by the hash of a long path; give the path instead".into(),
        });
    }
    if let Some(name) = s.strip_prefix("shm:") {
        return Ok(Locator::Shm {
            name: validate_segment_name(name)?.to_owned(),
        });
    }
    if let Some(path) = s.strip_prefix("file:") {
        if path.is_empty() {
            return Err(Error::InvalidName {
                name: s.to_owned(),
                reason: "file: needs a path".into(),
            });
        }
        return Ok(Locator::File { path: path.into() });
    }
    let memfd = s.strip_prefix("memfd:");
    if let Some((pid, fd)) = memfd.unwrap_or(s).split_once(':') {
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if digits(pid) && digits(fd) {
            let bad = |what: &str| Error::InvalidName {
                name: s.to_owned(),
                reason: format!("{what} is out of range"),
            };
            return Ok(Locator::Memfd {
                pid: pid.parse().map_err(|_| bad("the pid"))?,
                fd: fd.parse().map_err(|_| bad("the descriptor"))?,
            });
        }
    }
    if memfd.is_some() {
        return Err(Error::InvalidName {
            name: s.to_owned(),
            reason: "memfd: needs PID:FD, two decimal numbers".into(),
        });
    }
    let bare = s.strip_prefix('/').unwrap_or(s);
    if bare.contains('/') || s.starts_with('.') {
        return Ok(Locator::File { path: s.into() });
    }
    Ok(Locator::Shm {
        name: validate_segment_name(s)?.to_owned(),
    })
}

/// Whether `s` looks like a handle string (`shmarena<version>:...`) rather than a locator.
pub fn is_handle_string(s: &str) -> bool {
    s.strip_prefix("shmarena")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(v, _)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// Opens a path read-only for a header read: never blocks (a FIFO in /dev/shm, say) and, unless
/// `follow`, never follows a symlink in the last component.
fn open_for_header(path: &Path, follow: bool) -> io::Result<File> {
    let mut flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC;
    if !follow {
        flags |= rustix::fs::OFlags::NOFOLLOW;
    }
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
}

/// Reads up to the first [`HEADER_LEN`] bytes and parses them as a header.
fn read_header(file: &mut File) -> io::Result<std::result::Result<Header, FormatError>> {
    let mut buf = Vec::with_capacity(HEADER_LEN);
    file.by_ref()
        .take(HEADER_LEN as u64)
        .read_to_end(&mut buf)?;
    Ok(Header::parse(&buf))
}

/// An open segment: what `fstat` says and its header.
struct Probe {
    meta: fs::Metadata,
    header: std::result::Result<Header, FormatError>,
}

fn probe_path(path: &Path, follow: bool) -> io::Result<Probe> {
    let mut file = open_for_header(path, follow)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Ok(Probe {
            meta,
            header: Err(FormatError::BadMagic),
        });
    }
    let header = read_header(&mut file)?;
    Ok(Probe { meta, header })
}

/// The path a locator is reached through.
fn locator_path(locator: &Locator) -> (PathBuf, bool) {
    match locator {
        Locator::Memfd { pid, fd } => (PathBuf::from(format!("/proc/{pid}/fd/{fd}")), true),
        Locator::Shm { name } => (Path::new(os::SHM_DIR).join(name), false),
        Locator::File { path } => (path.clone(), false),
    }
}

/// Uses of files by running processes, gathered from `/proc/*/fd` and `/proc/*/maps`.
#[derive(Default)]
struct Scan {
    /// For each file: pid -> (maps it, its descriptors).
    uses: HashMap<FileKey, BTreeMap<u32, (bool, Vec<i32>)>>,
    /// Descriptors whose link names a shmarena memfd: (pid, fd, key).
    memfds: Vec<(u32, i32, FileKey)>,
}

impl Scan {
    /// Scans every process this user may inspect. Records uses of memfds, of segments in
    /// /dev/shm, and of the files in `extra`. Processes that vanish or cannot be read are
    /// skipped.
    fn run(extra: &HashSet<FileKey>) -> Scan {
        let mut scan = Scan::default();
        let Ok(dir) = fs::read_dir("/proc") else {
            return scan;
        };
        let shm_prefix = format!("{}/", os::SHM_DIR);
        for ent in dir.flatten() {
            let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            scan.scan_fds(pid, &shm_prefix, extra);
            scan.scan_maps(pid, &shm_prefix, extra);
        }
        scan
    }

    fn scan_fds(&mut self, pid: u32, shm_prefix: &str, extra: &HashSet<FileKey>) {
        let fd_dir = PathBuf::from(format!("/proc/{pid}/fd"));
        let Ok(fds) = fs::read_dir(&fd_dir) else {
            return;
        };
        for fd_ent in fds.flatten() {
            let Some(fd) = fd_ent
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(target) = fs::read_link(fd_ent.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            // Sockets, pipes and anonymous inodes read `socket:[..]` and the like.
            if !target.starts_with('/') {
                continue;
            }
            let is_memfd = is_arena_memfd(&target);
            if !is_memfd && !target.starts_with(shm_prefix) && extra.is_empty() {
                continue;
            }
            let Ok(meta) = fs::metadata(fd_ent.path()) else {
                continue;
            };
            let key = FileKey::of(&meta);
            if is_memfd {
                self.memfds.push((pid, fd, key));
            } else if !target.starts_with(shm_prefix) && !extra.contains(&key) {
                continue;
            }
            self.uses
                .entry(key)
                .or_default()
                .entry(pid)
                .or_default()
                .1
                .push(fd);
        }
    }

    fn scan_maps(&mut self, pid: u32, shm_prefix: &str, extra: &HashSet<FileKey>) {
        let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        let mut seen = HashSet::new();
        for line in maps.lines() {
            // address perms offset dev inode [path]
            let mut f = line.split_ascii_whitespace();
            let (Some(_), Some(_), Some(_), Some(dev), Some(ino)) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            let path = f.next().unwrap_or("");
            let Ok(ino) = ino.parse::<u64>() else {
                continue;
            };
            if ino == 0 {
                continue;
            }
            let Some((major, minor)) = dev.split_once(':') else {
                continue;
            };
            let (Ok(major), Ok(minor)) = (
                u64::from_str_radix(major, 16),
                u64::from_str_radix(minor, 16),
            ) else {
                continue;
            };
            let key = FileKey {
                dev: makedev(major, minor),
                ino,
            };
            let wanted =
                is_arena_memfd(path) || path.starts_with(shm_prefix) || extra.contains(&key);
            if wanted && seen.insert(key) {
                self.uses.entry(key).or_default().entry(pid).or_default().0 = true;
            }
        }
    }

    /// The processes using `key`, with their commands.
    fn holders(&self, key: &FileKey) -> Vec<Holder> {
        let Some(uses) = self.uses.get(key) else {
            return Vec::new();
        };
        uses.iter()
            .map(|(&pid, (mapped, fds))| {
                let mut fds = fds.clone();
                fds.sort_unstable();
                fds.dedup();
                Holder {
                    pid,
                    command: fs::read_to_string(format!("/proc/{pid}/comm"))
                        .map(|s| s.trim_end().to_owned())
                        .unwrap_or_default(),
                    cmdline: fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|b| {
                            b.split(|&c| c == 0)
                                .filter(|a| !a.is_empty())
                                .map(String::from_utf8_lossy)
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default(),
                    mapped: *mapped,
                    fds,
                }
            })
            .collect()
    }
}

fn status_from(locator: Locator, probe: Probe, scan: &Scan) -> ArenaStatus {
    let key = FileKey::of(&probe.meta);
    let owner = probe.header.as_ref().ok().map(Owner::of);
    ArenaStatus {
        locator,
        key,
        size: probe.meta.len(),
        allocated: probe.meta.blocks() * 512,
        uid: probe.meta.uid(),
        mode: probe.meta.mode() & 0o7777,
        header: probe.header,
        owner,
        holders: scan.holders(&key),
    }
}

/// Every arena visible to this user: named segments in `/dev/shm` that start with the magic
/// (readable ones; a header that does not parse is listed with its error), and memfd arenas
/// held by live processes (found through `/proc/*/fd` links named `/memfd:shmarena`).
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
fn shm_names() -> Result<Vec<String>> {
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
    let what = locator.to_string();
    let (path, follow) = locator_path(locator);
    let probe = probe_path(&path, follow)
        .map_err(|e| Error::os(format!("opening {what} ({})", path.display()), &what, e))?;
    let key = FileKey::of(&probe.meta);
    let scan = Scan::run(&HashSet::from([key]));
    Ok(status_from(locator.clone(), probe, &scan))
}

/// The processes that map the arena or hold a descriptor to it, by pid, with their commands.
///
/// ```no_run
/// # fn main() -> shmarena::Result<()> {
/// let locator = shmarena::inspect::parse_locator("lexicon")?;
/// for h in shmarena::inspect::who(&locator)? {
///     println!("{} {} mapped={} fds={:?}", h.pid, h.command, h.mapped, h.fds);
/// }
/// # Ok(()) }
/// ```
pub fn who(locator: &Locator) -> Result<Vec<Holder>> {
    Ok(status(locator)?.holders)
}

/// What [`gc`] should do.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct GcOptions {
    dry_run: bool,
    prefix: Option<String>,
}

impl GcOptions {
    /// Remove orphans, all names.
    pub fn new() -> GcOptions {
        GcOptions::default()
    }

    /// Only report what would be removed.
    pub fn dry_run(mut self, yes: bool) -> GcOptions {
        self.dry_run = yes;
        self
    }

    /// Only consider segments whose name (without the leading `/`) starts with `prefix`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> GcOptions {
        let p: String = prefix.into();
        self.prefix = Some(p.strip_prefix('/').map(str::to_owned).unwrap_or(p));
        self
    }
}

/// A segment [`gc`] removed (or would remove, in a dry run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The segment name, without the leading `/`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Memory it occupied (`st_blocks * 512`): what removing it frees.
    pub allocated: u64,
    /// `"building"` or `"sealed"`.
    pub state: &'static str,
    /// Its dead creator.
    pub owner: Owner,
}

/// Why [`gc`] left a segment alone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// It belongs to another user; gc never touches those.
    OtherUser {
        /// Its owner.
        uid: u32,
    },
    /// It is not a regular file.
    NotRegular,
    /// It does not start with the arena magic.
    NotAnArena,
    /// It could not be opened, or its header does not parse, so its owner is unknown.
    Unreadable {
        /// Why.
        detail: String,
    },
    /// Its creator still runs.
    OwnerAlive {
        /// The creator's pid.
        pid: u32,
    },
    /// Processes still map it or hold it open.
    InUse {
        /// Their pids.
        pids: Vec<u32>,
    },
    /// It was replaced by another file between the check and the removal.
    Changed,
    /// Unlinking failed.
    RemoveFailed {
        /// The OS error.
        detail: String,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::OtherUser { uid } => write!(f, "owned by another user (uid {uid})"),
            SkipReason::NotRegular => write!(f, "not a regular file"),
            SkipReason::NotAnArena => write!(f, "not an arena (no shmarena magic)"),
            SkipReason::Unreadable { detail } => write!(f, "owner unknown: {detail}"),
            SkipReason::OwnerAlive { pid } => write!(f, "its creator (pid {pid}) is alive"),
            SkipReason::InUse { pids } => {
                let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                write!(f, "still mapped or open by pid {}", pids.join(", "))
            }
            SkipReason::Changed => write!(f, "replaced while gc was checking it"),
            SkipReason::RemoveFailed { detail } => write!(f, "removing failed: {detail}"),
        }
    }
}

impl SkipReason {
    /// A short stable word for machine output: `other-user`, `not-regular`, `not-an-arena`,
    /// `unreadable`, `owner-alive`, `in-use`, `changed` or `remove-failed`.
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::OtherUser { .. } => "other-user",
            SkipReason::NotRegular => "not-regular",
            SkipReason::NotAnArena => "not-an-arena",
            SkipReason::Unreadable { .. } => "unreadable",
            SkipReason::OwnerAlive { .. } => "owner-alive",
            SkipReason::InUse { .. } => "in-use",
            SkipReason::Changed => "changed",
            SkipReason::RemoveFailed { .. } => "remove-failed",
        }
    }
}

/// A segment [`gc`] left alone, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The segment name, without the leading `/`.
    pub name: String,
    /// Why it was kept.
    pub reason: SkipReason,
}

/// What [`gc`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Whether this was a dry run (nothing removed).
    pub dry_run: bool,
    /// Segments removed (or, in a dry run, that would be).
    pub removed: Vec<Removed>,
    /// Segments kept, with the reason.
    pub skipped: Vec<Skipped>,
}

impl GcReport {
    /// Memory freed (or that would be) by the removals, in bytes.
    pub fn bytes_freed(&self) -> u64 {
        self.removed.iter().map(|r| r.allocated).sum()
    }
}

/// Removes the named segments in `/dev/shm` of this user whose creator is dead and that no
/// process maps or holds open: arenas whose builder was killed mid-build, or persisted arenas
/// nobody uses any more. Every other entry in `/dev/shm` (matching the prefix, if one is given)
/// is reported as skipped with the reason: another user's, not an arena, unreadable header,
/// creator alive, still in use.
///
/// Another process could open a segment between the check and the unlink; gc re-checks that the
/// name still refers to the same inode right before unlinking, and a process that already opened
/// it keeps its mapping (an unlinked segment lives until its last user goes).
///
/// ```no_run
/// # fn main() -> shmarena::Result<()> {
/// use shmarena::inspect::{gc, GcOptions};
/// let report = gc(&GcOptions::new().dry_run(true))?;
/// println!("would free {} bytes", report.bytes_freed());
/// # Ok(()) }
/// ```
pub fn gc(opts: &GcOptions) -> Result<GcReport> {
    let me = os::euid();
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..GcReport::default()
    };
    let mut candidates = Vec::new();
    for name in shm_names()? {
        if let Some(p) = &opts.prefix {
            if !name.starts_with(p.as_str()) {
                continue;
            }
        }
        let mut skip = |reason| {
            report.skipped.push(Skipped {
                name: name.clone(),
                reason,
            })
        };
        let path = Path::new(os::SHM_DIR).join(&name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                skip(SkipReason::Unreadable {
                    detail: e.to_string(),
                });
                continue;
            }
        };
        // Checked before opening: gc never even opens another user's segment.
        if meta.uid() != me {
            skip(SkipReason::OtherUser { uid: meta.uid() });
            continue;
        }
        if !meta.file_type().is_file() {
            skip(SkipReason::NotRegular);
            continue;
        }
        let probe = match probe_path(&path, false) {
            Ok(p) => p,
            Err(e) => {
                skip(SkipReason::Unreadable {
                    detail: e.to_string(),
                });
                continue;
            }
        };
        let header = match &probe.header {
            Ok(h) => h.clone(),
            Err(FormatError::BadMagic) => {
                skip(SkipReason::NotAnArena);
                continue;
            }
            Err(e) => {
                skip(SkipReason::Unreadable {
                    detail: e.to_string(),
                });
                continue;
            }
        };
        // The file may have been replaced since the lstat above.
        if FileKey::of(&probe.meta) != FileKey::of(&meta) || probe.meta.uid() != me {
            skip(SkipReason::Changed);
            continue;
        }
        let owner = Owner::of(&header);
        if owner.alive {
            skip(SkipReason::OwnerAlive { pid: owner.pid });
            continue;
        }
        candidates.push((name, probe, header, owner));
    }
    if candidates.is_empty() {
        return Ok(report);
    }
    let scan = Scan::run(&HashSet::new());
    for (name, probe, header, owner) in candidates {
        let key = FileKey::of(&probe.meta);
        let holders = scan.holders(&key);
        if !holders.is_empty() {
            report.skipped.push(Skipped {
                name,
                reason: SkipReason::InUse {
                    pids: holders.iter().map(|h| h.pid).collect(),
                },
            });
            continue;
        }
        if !opts.dry_run {
            let path = Path::new(os::SHM_DIR).join(&name);
            let same = fs::symlink_metadata(&path).is_ok_and(|m| FileKey::of(&m) == key);
            if !same {
                report.skipped.push(Skipped {
                    name,
                    reason: SkipReason::Changed,
                });
                continue;
            }
            if let Err(e) = os::shm_unlink(&name) {
                report.skipped.push(Skipped {
                    name,
                    reason: SkipReason::RemoveFailed {
                        detail: e.to_string(),
                    },
                });
                continue;
            }
        }
        report.removed.push(Removed {
            name,
            size: probe.meta.len(),
            allocated: probe.meta.blocks() * 512,
            state: header.state_name(),
            owner,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locators() {
        let shm = |n: &str| Locator::Shm { name: n.into() };
        let file = |p: &str| Locator::File { path: p.into() };
        assert_eq!(parse_locator("lex").unwrap(), shm("lex"));
        assert_eq!(parse_locator("/lex.v2").unwrap(), shm("lex.v2"));
        assert_eq!(parse_locator("shm:/lex").unwrap(), shm("lex"));
        assert_eq!(
            parse_locator("memfd:1:2").unwrap(),
            Locator::Memfd { pid: 1, fd: 2 }
        );
        assert_eq!(parse_locator("/a/b").unwrap(), file("/a/b"));
        assert_eq!(parse_locator("a/b").unwrap(), file("a/b"));
        assert_eq!(parse_locator("./x").unwrap(), file("./x"));
        assert_eq!(parse_locator("file:x").unwrap(), file("x"));
        assert_eq!(parse_locator("file:1:2").unwrap(), file("1:2"));
        let id = "00112233445566778899aabbccddeeff";
        assert_eq!(
            parse_locator(&format!("shmarena1:{id}:0:p:0000000000000001:shm/lex")).unwrap(),
            shm("lex")
        );
        assert_eq!(
            parse_locator(&format!("shmarena1:{id}:2:a:0000000000000001:memfd/12/5")).unwrap(),
            Locator::Memfd { pid: 12, fd: 5 }
        );
        assert!(is_handle_string("shmarena1:x"));
        assert!(!is_handle_string("shmarena-x") && !is_handle_string("shmarena:1"));
        for bad in [
            "shmarena1:zz",
            "",
            "a b",
            "memfd:x",
            "memfd:1:-2",
            "99999999999:1",
            "file:",
            "shm:a/b",
        ] {
            assert!(parse_locator(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memfd_links() {
        assert!(is_arena_memfd("/memfd:shmarena (deleted)"));
        assert!(is_arena_memfd("/memfd:shmarena"));
        assert!(!is_arena_memfd("/memfd:shmarena-cache (deleted)"));
        assert!(!is_arena_memfd("/dev/shm/shmarena"));
    }

    #[test]
    fn makedev_matches_the_kernel() {
        assert_eq!(makedev(0, 1), 1);
        assert_eq!(makedev(8, 1), 0x801);
        assert_eq!(makedev(259, 3), (259 << 8) | 3);
        assert_eq!(makedev(0, 300), (1 << 12 << 8) | (300 & 0xff));
    }

    #[test]
    fn this_process_is_alive_and_recognised() {
        let pid = os::pid();
        let (state, start) = proc_stat(pid).unwrap();
        assert_ne!(state, 'Z');
        assert_eq!(Some(start), os::process_start_time(pid));
        assert!(process_alive(pid, start));
        assert!(
            !process_alive(pid, start + 1),
            "a reused pid must not match"
        );
        assert!(!process_alive(0, 0));
    }
}
