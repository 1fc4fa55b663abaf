//! Removing orphaned named segments: [`gc`].

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::probe::{probe_path, Probe};
use super::scan::{FileKey, Scan};
use super::{shm_names, Owner};
use crate::error::Result;
use crate::format::{FormatError, Header};
use crate::os;

/// What [`gc`] should do.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct GcOptions {
    dry_run: bool,
    prefix: Option<String>,
    include_persisted: bool,
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

    /// Also remove orphans that were [`persist`](crate::Arena::persist)ed (default: keep them,
    /// reported as [`SkipReason::Persisted`]).
    pub fn include_persisted(mut self, yes: bool) -> GcOptions {
        self.include_persisted = yes;
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
    /// Its writer [persisted](crate::Arena::persist) it: it is meant to outlive its writer
    /// (see [`GcOptions::include_persisted`] and [`Arena::remove_named`](crate::Arena::remove_named)).
    Persisted,
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
            SkipReason::Persisted => write!(
                f,
                "persisted by its writer (remove it with Arena::remove_named, or gc with \
                 include_persisted)"
            ),
        }
    }
}

impl SkipReason {
    /// A short stable word for machine output: `other-user`, `not-regular`, `not-an-arena`,
    /// `unreadable`, `owner-alive`, `in-use`, `changed`, `remove-failed` or `persisted`.
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
            SkipReason::Persisted => "persisted",
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
/// process maps or holds open: arenas whose writer was killed mid-build. Arenas their writer
/// [persisted](crate::Arena::persist) are kept unless [`GcOptions::include_persisted`]. Every other entry in `/dev/shm` (matching the prefix, if one is given)
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
        match candidate(&name, me, opts) {
            Ok(None) => {}
            Ok(Some(c)) => candidates.push((name, c)),
            Err(reason) => report.skipped.push(Skipped { name, reason }),
        }
    }
    if candidates.is_empty() {
        return Ok(report);
    }
    let scan = Scan::run(&HashSet::new());
    for (name, c) in candidates {
        match remove(&name, &c, &scan, opts.dry_run) {
            Ok(()) => report.removed.push(Removed {
                name,
                size: c.probe.meta.len(),
                allocated: c.probe.meta.blocks() * 512,
                state: c.header.state_name(),
                owner: c.owner,
            }),
            Err(reason) => report.skipped.push(Skipped { name, reason }),
        }
    }
    Ok(report)
}

/// A segment that passed every check but the scan for users.
struct Candidate {
    probe: Probe,
    header: Header,
    owner: Owner,
}

/// Segment `name` as a gc candidate (`None` if it is gone), or the reason it is kept.
fn candidate(name: &str, me: u32, opts: &GcOptions) -> Result<Option<Candidate>, SkipReason> {
    let unreadable = |e: &dyn fmt::Display| SkipReason::Unreadable {
        detail: e.to_string(),
    };
    let path = Path::new(os::SHM_DIR).join(name);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(&e)),
    };
    // Checked before opening: gc never even opens another user's segment.
    if meta.uid() != me {
        return Err(SkipReason::OtherUser { uid: meta.uid() });
    }
    if !meta.file_type().is_file() {
        return Err(SkipReason::NotRegular);
    }
    let probe = probe_path(&path, false).map_err(|e| unreadable(&e))?;
    let header = match &probe.header {
        Ok(h) => h.clone(),
        Err(FormatError::BadMagic) => return Err(SkipReason::NotAnArena),
        Err(e) => return Err(unreadable(e)),
    };
    // The file may have been replaced since the lstat above.
    if FileKey::of(&probe.meta) != FileKey::of(&meta) || probe.meta.uid() != me {
        return Err(SkipReason::Changed);
    }
    let owner = Owner::of(&header);
    if owner.alive {
        return Err(SkipReason::OwnerAlive { pid: owner.pid });
    }
    if meta.mode() & os::PERSISTED_BIT != 0 && !opts.include_persisted {
        return Err(SkipReason::Persisted);
    }
    Ok(Some(Candidate {
        probe,
        header,
        owner,
    }))
}

/// Removes candidate `name` (unless `dry_run`) if no process uses it and the name still
/// refers to the same inode; otherwise the reason it is kept.
fn remove(name: &str, c: &Candidate, scan: &Scan, dry_run: bool) -> Result<(), SkipReason> {
    let key = FileKey::of(&c.probe.meta);
    let holders = scan.holders(&key);
    if !holders.is_empty() {
        return Err(SkipReason::InUse {
            pids: holders.iter().map(|h| h.pid).collect(),
        });
    }
    if !dry_run {
        let path = Path::new(os::SHM_DIR).join(name);
        let same = fs::symlink_metadata(&path).is_ok_and(|m| FileKey::of(&m) == key);
        if !same {
            return Err(SkipReason::Changed);
        }
        os::shm_unlink(name).map_err(|e| SkipReason::RemoveFailed {
            detail: e.to_string(),
        })?;
    }
    Ok(())
}
