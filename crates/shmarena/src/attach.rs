//! The one way a process reaches an arena it did not build: [`attach`] opens it by its locator
//! (or by a descriptor inherited through [`Arena::share_with`]) once per process, caches it by
//! arena id, and refuses a place that now holds another arena ([`Error::StaleHandle`]).
//!
//! Handles ([`Handle::get`](crate::handle::Handle::get)), `arena-inspect` and the Python
//! bindings all go through here.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::RawFd;
use std::sync::{LazyLock, OnceLock, Weak};

use parking_lot::RwLock;

use crate::arena::{Arena, ArenaId, Shared};
use crate::error::{Error, Result};
use crate::locator::Locator;
use crate::os;

/// The environment variable through which [`Arena::share_with`] tells a spawned child which
/// inherited descriptors hold which arenas: `ID=FD` pairs separated by `,`.
pub const INHERITED_FDS_ENV: &str = "SHMARENA_INHERITED_FDS";

/// The arena `id`, attached at `locator` on first use in this process and cached after that.
///
/// A memfd arena that a parent passed with [`Arena::share_with`] is taken from the inherited
/// descriptor, with no `/proc` lookup. Anything but a permission or I/O failure while opening
/// means the arena is gone: [`Error::StaleHandle`]. So is an arena at `locator` whose id is not
/// `id` (the pid, fd or name was reused).
///
/// Arenas attached here stay attached until [`detach_all`] or [`detach`]; arenas this process
/// built or opened itself and then made handles to are found here too, but held weakly.
pub fn attach(id: ArenaId, locator: &Locator) -> Result<Arena> {
    attach_at(id, Some(locator))
}

/// [`attach`], where a handle whose file path was too long to carry has no locator: it
/// resolves only if the arena is already open in this process.
pub(crate) fn attach_at(id: ArenaId, locator: Option<&Locator>) -> Result<Arena> {
    if let Some(arena) = cache_get(id) {
        return Ok(arena);
    }
    let mut cache = CACHE.write();
    // Another thread may have attached while we waited for the lock.
    if let Some(arena) = cache.get(&id).and_then(|s| s.weak.upgrade()) {
        return Ok(Arena::from_shared(arena));
    }
    let what = match locator {
        Some(locator) => format!("arena {id} at {locator}"),
        None => format!("arena {id}"),
    };
    let stale = |reason: String| Error::StaleHandle {
        handle: what.clone(),
        reason,
    };
    let opened = match locator {
        None => {
            return Err(stale(format!(
                "arena {id} is a file whose path is longer than the 33 bytes a handle value \
                 holds, and this process has neither the arena open nor a handle string naming \
                 its path: send the handle's string or serde form (they carry the full path), \
                 or open the file with Arena::open_file first"
            )))
        }
        Some(Locator::Memfd { pid, fd }) => match inherited_fds().iter().find(|(i, _)| *i == id) {
            Some((_, inherited)) => os::adopt_inherited_fd(*inherited)
                .map_err(|e| Error::Io {
                    context: format!("adopting inherited descriptor {inherited} of arena {id}"),
                    source: e,
                })
                .and_then(|file| Arena::open_fd(file.into())),
            None => Arena::open_memfd(*pid, *fd),
        },
        Some(locator) => Arena::open(locator),
    };
    let arena = opened.map_err(|e| match e {
        Error::PermissionDenied { .. } | Error::Io { .. } => e,
        other => stale(format!("arena {id} is gone: {other}")),
    })?;
    let arena = expect_id(arena, id).map_err(|e| match e {
        Error::StaleHandle { reason, .. } => stale(reason),
        other => other,
    })?;
    cache.retain(|_, slot| slot.weak.strong_count() > 0);
    cache.insert(
        id,
        Slot {
            weak: arena.downgrade(),
            strong: Some(arena.clone()),
        },
    );
    Ok(arena)
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
    weak: Weak<Shared>,
    /// Arenas this process attached through a handle stay attached (that is the point of the
    /// cache); arenas the process opened or built itself are held weakly, so their owner's drop
    /// still unlinks or unmaps them.
    strong: Option<Arena>,
}

type Cache = RwLock<HashMap<ArenaId, Slot, BuildHasherDefault<IdHasher>>>;

static CACHE: LazyLock<Cache> = LazyLock::new(|| RwLock::new(HashMap::default()));

fn cache_get(id: ArenaId) -> Option<Arena> {
    CACHE
        .read()
        .get(&id)
        .and_then(|slot| slot.weak.upgrade())
        .map(Arena::from_shared)
}

/// Makes `arena` findable by [`attach`] in this process, without keeping it alive.
pub(crate) fn register(arena: &Arena) {
    let id = arena.id();
    if cache_get(id).is_some() {
        return;
    }
    let mut cache = CACHE.write();
    cache.retain(|_, slot| slot.weak.strong_count() > 0);
    cache.insert(
        id,
        Slot {
            weak: arena.downgrade(),
            strong: None,
        },
    );
}

/// Detaches every arena this process attached through handles (arenas are unmapped once no view
/// holds them). Mostly for long-lived processes that move on to newer arenas.
pub fn detach_all() {
    CACHE.write().retain(|_, slot| {
        slot.strong = None;
        slot.weak.strong_count() > 0
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
    if let Some(arena) = cache_get(id) {
        if let Locator::File { path } = arena.locator() {
            if crate::format::checksum(path.as_os_str().as_encoded_bytes()) == hash {
                return Some(path.clone());
            }
        }
    }
    LONG_PATHS.read().get(&(id, hash)).cloned()
}

/// Descriptors inherited from a parent through [`Arena::share_with`], read once.
fn inherited_fds() -> &'static [(ArenaId, RawFd)] {
    static FDS: OnceLock<Vec<(ArenaId, RawFd)>> = OnceLock::new();
    FDS.get_or_init(|| {
        let Ok(list) = std::env::var(INHERITED_FDS_ENV) else {
            return Vec::new();
        };
        list.split(',')
            .filter_map(|pair| {
                let (id, fd) = pair.split_once('=')?;
                Some((id.parse().ok()?, fd.parse().ok()?))
            })
            .collect()
    })
}
