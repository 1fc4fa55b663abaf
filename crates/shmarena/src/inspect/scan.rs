//! Who uses which file: one pass over `/proc/*/fd` and `/proc/*/maps` (read through `os`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::os;

/// Whether a `/proc/PID/fd` link or `/proc/PID/maps` path names a memfd that holds an arena:
/// one this crate made for an arena or a copy of one (not its generation pages, and not, say,
/// a memfd called `shmarena-cache`). The names come from [`os::MemfdKind`], which every memfd
/// this crate makes is created with.
pub(crate) fn is_arena_memfd(target: &str) -> bool {
    os::MemfdKind::of_proc_path(target).is_some_and(os::MemfdKind::holds_arena)
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
    pub(crate) fn of(meta: &fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
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
    /// What its use of the arena costs in memory: filled by [`who`](super::who) (from
    /// `/proc/PID/smaps`), `None` elsewhere or if smaps could not be read.
    pub memory: Option<MemoryCost>,
}

/// What one process's use of one arena costs in memory, from `/proc/PID/smaps` (the entries of
/// its mappings of the arena, summed) and `/proc/PID/smaps_rollup`, in bytes.
///
/// The arena's pages are shared: a page one process touched is resident once however many
/// processes map it. `touched` counts every such page in full in each process that touched it,
/// so adding `touched` across processes overcounts; `pss` divides each page among the processes
/// that map it, so the `pss` of all processes adds up to the arena's pages that are both
/// resident and mapped by someone. That can be far less than what the arena costs the machine
/// ([`ArenaStatus::allocated`](super::ArenaStatus::allocated)): a memfd's pages stay in memory
/// while any process holds it, whether anyone maps or touches them. Neither is memory the
/// process owns: that is `anonymous`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryCost {
    /// Proportional set size of its mappings of the arena (`Pss`): its share of the arena's
    /// resident pages.
    pub pss: u64,
    /// Resident pages of the arena it has touched (`Rss` of its mappings): shared pages, not its
    /// own memory.
    pub touched: u64,
    /// Bytes of the arena it maps (`Size`; 0 if it only holds a descriptor).
    pub mapped: u64,
    /// The whole process's private anonymous memory (`Anonymous:` of `smaps_rollup`): heap,
    /// stacks, copies. `None` if unreadable.
    pub anonymous: Option<u64>,
}

impl MemoryCost {
    /// Reads the cost of `pid`'s use of the file `key`; `None` if `/proc/PID/smaps` cannot be
    /// read.
    pub(crate) fn read(pid: u32, key: &FileKey) -> Option<MemoryCost> {
        let anonymous = os::procfs::anonymous(pid);
        let m = os::procfs::mapping_cost(pid, key.dev, key.ino);
        if m.is_none() && anonymous.is_none() {
            return None;
        }
        let m = m.unwrap_or_default();
        Some(MemoryCost {
            pss: m.pss,
            touched: m.rss,
            mapped: m.size,
            anonymous,
        })
    }
}

/// Uses of files by running processes, gathered from `/proc/*/fd` and `/proc/*/maps`.
#[derive(Default)]
pub(crate) struct Scan {
    /// For each file: pid -> (maps it, its descriptors).
    pub(crate) uses: HashMap<FileKey, BTreeMap<u32, (bool, Vec<i32>)>>,
    /// Descriptors whose link names a shmarena memfd: (pid, fd, key).
    pub(crate) memfds: Vec<(u32, i32, FileKey)>,
}

impl Scan {
    /// Scans every process this user may inspect. Records uses of memfds, of segments in
    /// /dev/shm, and of the files in `extra`. Processes that vanish or cannot be read are
    /// skipped.
    pub(crate) fn run(extra: &HashSet<FileKey>) -> Scan {
        let mut scan = Scan::default();
        let shm_prefix = format!("{}/", os::SHM_DIR);
        for pid in os::pids() {
            scan.scan_fds(pid, &shm_prefix, extra);
            scan.scan_maps(pid, &shm_prefix, extra);
        }
        scan
    }

    fn scan_fds(&mut self, pid: u32, shm_prefix: &str, extra: &HashSet<FileKey>) {
        for (fd, target) in os::fd_links(pid) {
            let target = target.to_string_lossy();
            // Sockets, pipes and anonymous inodes read `socket:[..]` and the like.
            if !target.starts_with('/') {
                continue;
            }
            let is_memfd = is_arena_memfd(&target);
            if !is_memfd && !target.starts_with(shm_prefix) && extra.is_empty() {
                continue;
            }
            let Ok(meta) = fs::metadata(os::fd_path(pid, fd)) else {
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
        let Some(maps) = os::maps(pid) else {
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
            let Some(dev) = os::parse_maps_dev(dev) else {
                continue;
            };
            let key = FileKey { dev, ino };
            let wanted =
                is_arena_memfd(path) || path.starts_with(shm_prefix) || extra.contains(&key);
            if wanted && seen.insert(key) {
                self.uses.entry(key).or_default().entry(pid).or_default().0 = true;
            }
        }
    }

    /// The processes using `key`, with their commands.
    pub(crate) fn holders(&self, key: &FileKey) -> Vec<Holder> {
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
                    command: os::command(pid),
                    cmdline: os::cmdline(pid),
                    mapped: *mapped,
                    fds,
                    memory: None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_links() {
        assert!(is_arena_memfd("/memfd:shmarena (deleted)"));
        assert!(is_arena_memfd("/memfd:shmarena"));
        assert!(!is_arena_memfd("/memfd:shmarena-cache (deleted)"));
        assert!(!is_arena_memfd("/dev/shm/shmarena"));
        assert!(is_arena_memfd("/memfd:shmarena-image (deleted)"));
        assert!(!is_arena_memfd("/memfd:shmarena-generation (deleted)"));
        assert!(!is_arena_memfd("/memfd:shmarena (deleted) x"));
    }

    /// What the scan matches is what `memfd_create` makes: the `/proc/self/fd` link of a memfd
    /// of each kind names that kind.
    #[test]
    fn memfd_names_round_trip() {
        use std::os::fd::AsRawFd;
        for kind in os::MemfdKind::ALL {
            let file = os::memfd_create(kind).unwrap();
            let link = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
            let link = link.to_str().unwrap();
            assert_eq!(os::MemfdKind::of_proc_path(link), Some(kind), "{link}");
            assert_eq!(is_arena_memfd(link), kind.holds_arena(), "{link}");
        }
    }
}
