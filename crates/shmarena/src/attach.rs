//! The one way a process reaches an arena it did not build: [`attach`] opens it by its locator
//! (or by a descriptor inherited through [`Arena::share_with`]) once per process, caches it by
//! arena id and locator (and shares one mapping between locators that reach the same memfd),
//! and refuses a place that now holds another arena ([`Error::StaleHandle`]).
//!
//! Handles ([`Handle::get`](crate::handle::Handle::get)), `arena-inspect` and the Python
//! bindings all go through here.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, OnceLock, Weak};

use parking_lot::RwLock;

use crate::arena::{Arena, ArenaId, Shared};
use crate::error::{Error, Result};
use crate::locator::Locator;
use crate::os;
use crate::trust::{self, Row};

/// The environment variable through which [`Arena::share_with`] tells a spawned child which
/// inherited descriptors hold which arenas: entries `ID=FD:INODE[:TRUST]` separated by `,`,
/// where `TRUST` is the parent's build identity and trust rows (see docs/DESIGN.md, "Trust
/// model").
///
/// The child reads it from `/proc/self/environ`, the environment as it was at `exec`, never from
/// the process's mutable environment: a value set later with `std::env::set_var` is ignored. The
/// descriptors are always used (no `/proc` lookup). The rows are taken only in a process that
/// called [`trust_inherited_rows`](crate::trust_inherited_rows), and then only if the build
/// identity is the child's own and the descriptor is a kernel-sealed memfd with the inode named.
pub const INHERITED_FDS_ENV: &str = "SHMARENA_INHERITED_FDS";

/// Whether this process takes the trust rows of [`INHERITED_FDS_ENV`] (set once by
/// [`trust_inherited_rows`]; a fork child inherits it with the rest of memory).
static INHERITED_ROWS_TRUSTED: AtomicBool = AtomicBool::new(false);

/// Takes, from now on in this process, the trust rows that the launcher passed with the arenas
/// it shared through [`Arena::share_with`] (or [`Handle::share_with`](crate::Handle::share_with)):
/// entries the launcher built or validated are then read here with no bytecheck, O(1), as in
/// the launcher. Call it once, at the top of `main`, before anything attaches an arena.
///
/// Without it, an arena that arrives through [`INHERITED_FDS_ENV`] is still attached from the
/// inherited descriptor (no `/proc` lookup), but each of its archived entries is validated on
/// its first read in this process (then cached; POD slices need no validation).
///
/// The rows are the launcher's word: the kernel proves that the descriptor is a sealed memfd
/// with the inode named, not that the launcher's rows speak of its bytes. A program can forge
/// them in safe code: call `share_with`, then rewrite the entry in `cmd.get_envs()` to name
/// another sealed memfd whose close-on-exec flag it cleared (test
/// `a_forged_share_with_environment_is_validated`).
///
/// A spawn-mode `shmarena_pool` worker calls this for you (the pool is the launcher there).
///
/// At the top of a worker's `main`:
///
/// ```no_run
/// // SAFETY: this binary is started only by its own parent process, which passes arenas
/// // through `share_with` and never edits or copies the entry that call writes.
/// unsafe { shmarena::trust_inherited_rows() };
/// // ... attach handles from the environment, read them in O(1).
/// ```
///
/// # Safety
///
/// Every [`INHERITED_FDS_ENV`] entry this process was started with (and every one a fork child
/// of it inherits) is exactly what [`Arena::share_with`] wrote, in the process that exec'd this
/// one, for the descriptor the child inherits under that number: no code edited, copied or
/// composed the entry, retargeted the descriptor number, or exec'd this program with such an
/// entry by other means (a wrapper script, a supervisor, a hand-written `Command`). Whoever
/// picks the environment at exec can otherwise make a read of safe code go out of bounds.
pub unsafe fn trust_inherited_rows() {
    INHERITED_ROWS_TRUSTED.store(true, Ordering::Release);
}

/// The arena `id`, attached at `locator` on first use in this process and cached after that.
///
/// A memfd arena that a parent passed with [`Arena::share_with`] is taken from the inherited
/// descriptor, with no `/proc` lookup. Anything but a permission or I/O failure while opening
/// means the arena is gone: [`Error::StaleHandle`]. So is an arena at `locator` whose id is not
/// `id` (the pid, fd or name was reused).
///
/// A named segment or file is copied into a sealed memfd of this process
/// ([`Arena::load_named`], [`Arena::load_file`]): once per process, since the copy is cached,
/// at O(size) time and memory; its archived entries are validated on first access. A FIFO or
/// anything else that is not a regular file is refused at once (`O_NONBLOCK`), and no lock is
/// held while opening, so a slow open never stalls other lookups.
///
/// Arenas attached here stay attached until [`detach_all`] or [`detach`]; arenas this process
/// built or opened itself and then made handles to are found here too, but held weakly.
pub fn attach(id: ArenaId, locator: &Locator) -> Result<Arena> {
    attach_at(id, Some(locator))
}

/// [`attach`], where a handle whose file path was too long to carry has no locator: it
/// resolves only if the arena is already open in this process.
pub(crate) fn attach_at(id: ArenaId, locator: Option<&Locator>) -> Result<Arena> {
    if let Some(arena) = cache_get(id, locator) {
        return Ok(arena);
    }
    // No lock is held while opening: an open can take a while (a copy of a named segment or
    // file, a slow /proc), and must never stall other lookups (issue 11, case 8).
    let what = match locator {
        Some(locator) => format!("arena {id} at {locator}"),
        None => format!("arena {id}"),
    };
    let stale = |reason: String| Error::StaleHandle {
        handle: what.clone(),
        reason,
    };
    let (opened, locator) = match locator {
        None => {
            return Err(stale(format!(
                "arena {id} is a file whose path is longer than the 33 bytes a handle value \
                 holds, and this process has neither the arena open nor a handle string naming \
                 its path: send the handle's string or serde form (they carry the full path), \
                 or copy the file in with Arena::load_file first"
            )))
        }
        Some(locator @ Locator::Memfd { pid, fd }) => (
            match open_inherited(id) {
                Some(arena) => arena,
                None => Arena::open_memfd(*pid, *fd),
            },
            locator,
        ),
        Some(locator) => (Arena::open(locator), locator),
    };
    let arena = opened.map_err(|e| match e {
        Error::PermissionDenied { .. } | Error::Io { .. } => e,
        other => stale(format!("arena {id} is gone: {other}")),
    })?;
    let arena = expect_id(arena, id).map_err(|e| match e {
        Error::StaleHandle { reason, .. } => stale(reason),
        other => other,
    })?;
    let bytes = identity(&arena);
    let mut cache = CACHE.write();
    cache.retain(|_, slots| {
        slots.retain(|slot| slot.weak.strong_count() > 0);
        !slots.is_empty()
    });
    let slots = cache.entry(id).or_default();
    // Another thread may have attached the same locator meanwhile, or this locator may reach
    // the very memfd another one did (an inherited descriptor, a second /proc path): keep the
    // first, so every handle of this process reads one mapping of those bytes. A locator that
    // reaches other bytes with the same id (a copy of an image file whose bytes differ, say)
    // gets its own slot: it is never answered with another arena's bytes.
    if let Some(slot) = slots
        .iter_mut()
        .find(|s| s.keys.contains(locator) || (bytes.is_some() && s.bytes == bytes))
    {
        if let Some(first) = slot.weak.upgrade() {
            if !slot.keys.contains(locator) {
                slot.keys.push(locator.clone());
            }
            return Ok(Arena::from_shared(first));
        }
    }
    slots.push(Slot {
        keys: vec![locator.clone()],
        bytes,
        weak: arena.downgrade(),
        strong: Some(arena.clone()),
    });
    Ok(arena)
}

/// What an arena's bytes are: the device and inode of the memfd it maps (`None` if `fstat`
/// fails, which matches nothing).
fn identity(arena: &Arena) -> Option<(u64, u64)> {
    os::file_identity(arena.as_fd()).ok()
}

/// The stale-handle rule: `arena` if its id is `id`, else [`Error::StaleHandle`] (the place a
/// handle names now holds another arena). For callers that open an arena their own way (say,
/// with [`OpenOptions`](crate::OpenOptions)) and then check it against a handle.
pub fn expect_id(arena: Arena, id: ArenaId) -> Result<Arena> {
    if arena.id() == id {
        return Ok(arena);
    }
    Err(Error::StaleHandle {
        handle: format!("arena {id} at {}", arena.locator()),
        reason: format!(
            "{} now holds arena {}, not {id} (the pid, fd or name was reused)",
            arena.locator().describe(),
            arena.id()
        ),
    })
}

/// A hasher for arena ids, which are already uniformly random: it keeps the first 8 bytes.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
}

struct Slot {
    /// The locators this arena was registered or attached under in this process.
    keys: Vec<Locator>,
    /// What its bytes are ([`identity`]).
    bytes: Option<(u64, u64)>,
    weak: Weak<Shared>,
    /// Arenas this process attached through a handle stay attached (that is the point of the
    /// cache); arenas the process opened or built itself are held weakly, so their owner's drop
    /// still unlinks or unmaps them.
    strong: Option<Arena>,
}

/// Slots by arena id: usually one; more only where different bytes carry one id (an image file
/// and a changed copy of it, say), each reached by its own locators.
type Cache = RwLock<HashMap<ArenaId, Vec<Slot>, BuildHasherDefault<IdHasher>>>;

static CACHE: LazyLock<Cache> = LazyLock::new(|| RwLock::new(HashMap::default()));

/// The cached arena `id` that `locator` reached before (or was registered under); with no
/// locator, any cached arena of that id.
fn cache_get(id: ArenaId, locator: Option<&Locator>) -> Option<Arena> {
    let cache = CACHE.read();
    let slots = cache.get(&id)?;
    slots
        .iter()
        .filter(|slot| locator.is_none_or(|l| slot.keys.contains(l)))
        .find_map(|slot| slot.weak.upgrade())
        .map(Arena::from_shared)
}

/// Every live cached arena of id `id`, whatever locators reached it.
fn cache_all(id: ArenaId) -> Vec<Arena> {
    let cache = CACHE.read();
    cache
        .get(&id)
        .map(|slots| {
            slots
                .iter()
                .filter_map(|slot| slot.weak.upgrade())
                .map(Arena::from_shared)
                .collect()
        })
        .unwrap_or_default()
}

/// Makes `arena` findable by [`attach`] in this process under its own locator, without keeping
/// it alive.
pub(crate) fn register(arena: &Arena) {
    let id = arena.id();
    let locator = arena.locator();
    if cache_get(id, Some(locator)).is_some() {
        return;
    }
    let bytes = identity(arena);
    let mut cache = CACHE.write();
    cache.retain(|_, slots| {
        slots.retain(|slot| slot.weak.strong_count() > 0);
        !slots.is_empty()
    });
    let slots = cache.entry(id).or_default();
    if let Some(slot) = slots
        .iter_mut()
        .find(|s| bytes.is_some() && s.bytes == bytes)
    {
        // The same memfd, registered under another locator before.
        if !slot.keys.contains(locator) {
            slot.keys.push(locator.clone());
        }
        return;
    }
    if slots.iter().any(|s| s.keys.contains(locator)) {
        // A live arena of this id already answers for this locator: the first one stays.
        return;
    }
    slots.push(Slot {
        keys: vec![locator.clone()],
        bytes,
        weak: arena.downgrade(),
        strong: None,
    });
}

/// Detaches every arena this process attached through handles (arenas are unmapped once no view
/// holds them). Mostly for long-lived processes that move on to newer arenas.
pub fn detach_all() {
    CACHE.write().retain(|_, slots| {
        slots.retain_mut(|slot| {
            slot.strong = None;
            slot.weak.strong_count() > 0
        });
        !slots.is_empty()
    });
}

/// Detaches arena `id` if this process attached it (it is unmapped once no view holds it), and
/// forgets it.
pub fn detach(id: ArenaId) {
    CACHE.write().remove(&id);
}

/// File paths longer than a handle's 33 bytes that this process has seen in full, by arena id
/// and path checksum: from handle strings it parsed, and from arenas it has open.
static LONG_PATHS: LazyLock<RwLock<HashMap<(ArenaId, u64), std::path::PathBuf>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// Records the full `path` of arena `id`, whose handles carry only its checksum `hash`.
pub(crate) fn remember_long_path(id: ArenaId, hash: u64, path: std::path::PathBuf) {
    LONG_PATHS.write().insert((id, hash), path);
}

/// The full path of file arena `id` whose checksum is `hash`: from an arena of this process
/// that is open, or from a handle string parsed here.
pub(crate) fn long_path(id: ArenaId, hash: u64) -> Option<std::path::PathBuf> {
    let known = CACHE.read().get(&id).and_then(|slots| {
        slots
            .iter()
            .flat_map(|s| &s.keys)
            .find_map(|key| match key {
                Locator::File { path }
                    if crate::format::checksum(path.as_os_str().as_encoded_bytes()) == hash =>
                {
                    Some(path.clone())
                }
                _ => None,
            })
    });
    if known.is_some() {
        return known;
    }
    LONG_PATHS.read().get(&(id, hash)).cloned()
}

/// Keeps, in `cmd`'s [`INHERITED_FDS_ENV`] entry, only the trust rows this process can vouch
/// for, and drops the others (the descriptors stay listed): for each arena listed, the rows must
/// be rows this process holds for the arena it has open under that very descriptor number and
/// inode. That is what [`Arena::share_with`] writes; an entry edited after it (another
/// descriptor, another inode, rows of another arena) loses its rows. Returns whether every
/// row was kept.
///
/// For a launcher that spawns children which call [`trust_inherited_rows`] (the spawn-mode
/// `shmarena_pool` does it after its `on_spawn` hooks): call it last, just before spawning.
///
/// ```
/// # fn main() -> shmarena::Result<()> {
/// let mut b = shmarena::ArenaOptions::new().create()?;
/// b.put("v", &vec![1u32, 2, 3])?;
/// let arena = b.seal()?;
/// let mut cmd = std::process::Command::new("true");
/// arena.share_with(&mut cmd)?;
/// assert!(shmarena::keep_vouched_rows(&mut cmd));
/// # Ok(()) }
/// ```
pub fn keep_vouched_rows(cmd: &mut std::process::Command) -> bool {
    let Some(value) = cmd
        .get_envs()
        .find(|(k, _)| *k == INHERITED_FDS_ENV)
        .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    else {
        return true;
    };
    let mut all = true;
    let kept: Vec<&str> = value
        .split(',')
        .map(|item| {
            if vouched(item) {
                return item;
            }
            all = false;
            // `ID=FD:INODE`, without the rows.
            match item.match_indices(':').nth(1) {
                Some((at, _)) => &item[..at],
                None => item,
            }
        })
        .collect();
    if !all {
        cmd.env(INHERITED_FDS_ENV, kept.join(","));
    }
    all
}

/// Whether the rows of entry `item` (if any) are rows this process holds for the arena open here
/// under the descriptor number and inode the entry names.
fn vouched(item: &str) -> bool {
    let has_rows = item.match_indices(':').nth(1).is_some();
    if !has_rows {
        return true;
    }
    let Some(Inherited {
        id,
        fd,
        inode,
        rows: Some(rows),
    }) = parse_inherited(item)
    else {
        // Rows of another build, or an entry the child cannot parse: the child takes no rows
        // from it either, but there is nothing to keep.
        return false;
    };
    // The arena of that id this process holds under that very descriptor (several arenas can
    // share an id: an image file and a changed copy of it).
    let Some(arena) = cache_all(id).into_iter().find(|arena| {
        arena.as_fd().as_raw_fd() == fd && os::inode(arena.as_fd()).ok() == Some(inode)
    }) else {
        return false;
    };
    let own = arena.trust_rows();
    rows.iter().all(|r| own.contains(r))
}

/// Arena `id` from the descriptor a parent passed with [`Arena::share_with`], with the trust
/// rows that came with it if this process opted in ([`trust_inherited_rows`]); `None` if the environment at exec names no such descriptor, or the
/// descriptor there is not the memfd it named (closed, or another file now: its inode differs).
fn open_inherited(id: ArenaId) -> Option<Result<Arena>> {
    let inherited = inherited_fds().iter().find(|i| i.id == id)?;
    let fd = inherited.fd;
    let file = match os::adopt_inherited_fd(fd) {
        Ok(file) => file,
        Err(_) => return None,
    };
    if os::inode(&file).ok()? != inherited.inode {
        return None;
    }
    let arena = Arena::open_fd(file.into());
    if let (Ok(arena), Some(rows)) = (&arena, &inherited.rows) {
        // Taken only where the program opted in, promising that the entry is the launcher's
        // own `share_with` output (`trust_inherited_rows`' safety contract), and only if the
        // descriptor carries the write, grow and shrink seals (checked on open, from the
        // descriptor we map), which only a memfd can carry.
        if INHERITED_ROWS_TRUSTED.load(Ordering::Acquire) {
            arena.accept_rows(rows);
        }
    }
    Some(arena)
}

/// One arena a parent passed with [`Arena::share_with`].
struct Inherited {
    id: ArenaId,
    fd: RawFd,
    inode: u64,
    /// Trust rows, if they came from a process of this build.
    rows: Option<Vec<Row>>,
}

/// Descriptors inherited from a parent through [`Arena::share_with`], read once from the
/// environment as it was at exec (`/proc/self/environ`), never from `std::env`.
fn inherited_fds() -> &'static [Inherited] {
    static FDS: OnceLock<Vec<Inherited>> = OnceLock::new();
    FDS.get_or_init(|| {
        let Some(list) = exec_env(INHERITED_FDS_ENV) else {
            return Vec::new();
        };
        list.split(',').filter_map(parse_inherited).collect()
    })
}

/// `ID=FD:INODE[:TRUST]`.
fn parse_inherited(item: &str) -> Option<Inherited> {
    let (id, rest) = item.split_once('=')?;
    let mut parts = rest.splitn(3, ':');
    let fd = parts.next()?.parse().ok()?;
    let inode = parts.next()?.parse().ok()?;
    let rows = parts.next().and_then(trust::decode_rows_text);
    Some(Inherited {
        id: id.parse().ok()?,
        fd,
        inode,
        rows,
    })
}

/// The `share_with` entry for `arena` held as descriptor `fd`: see [`INHERITED_FDS_ENV`].
pub(crate) fn inherited_entry(arena: &Arena, fd: RawFd) -> String {
    let inode = os::inode(arena.as_fd()).unwrap_or(0);
    let rows = arena.trust_rows();
    if rows.is_empty() || !os::build_id_known() {
        return format!("{}={fd}:{inode}", arena.id());
    }
    format!(
        "{}={fd}:{inode}:{}",
        arena.id(),
        trust::encode_rows_text(&rows)
    )
}

/// The value of environment variable `name` as it was when this process started (exec), read
/// from `/proc/self/environ`: later changes through `std::env::set_var` are not seen.
fn exec_env(name: &str) -> Option<String> {
    let environ = std::fs::read("/proc/self/environ").ok()?;
    let prefix = format!("{name}=");
    environ.split(|&b| b == 0).find_map(|var| {
        var.strip_prefix(prefix.as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_entries_parse() {
        let id = "0123456789abcdef0123456789abcdef";
        let i = parse_inherited(&format!("{id}=7:99")).unwrap();
        assert_eq!((i.fd, i.inode, i.rows.is_none()), (7, 99, true));
        let rows = vec![(0, 5u128), (3, u128::MAX)];
        let text = format!("{id}=7:99:{}", trust::encode_rows_text(&rows));
        assert_eq!(parse_inherited(&text).unwrap().rows, Some(rows));
        // Another build's rows are dropped, the descriptor is still named.
        let other = format!("{id}=7:99:{}.0-5", "00".repeat(16));
        assert_eq!(parse_inherited(&other).unwrap().rows, None);
        assert!(parse_inherited(&format!("{id}=7")).is_none());
    }

    #[test]
    fn set_var_does_not_change_the_exec_environment() {
        let name = "SHMARENA_TEST_EXEC_ENV_UNSET_AT_START";
        std::env::set_var(name, "forged");
        assert_eq!(exec_env(name), None);
    }
}
