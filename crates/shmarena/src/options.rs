//! Options for a new arena, and creating the segment a writer builds in.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::Header;
use crate::os;
use crate::segment::{self, round_up, Segment, Target, PAGE};
use crate::writer::ArenaWriter;

const DEFAULT_CAPACITY: u64 = 64 << 20;

/// Options for a new arena; [`ArenaOptions::create`] makes the segment.
///
/// ```
/// # fn main() -> shmarena::Result<()> {
/// let mut b = shmarena::ArenaOptions::new().capacity(4 << 20).create()?;
/// b.put_slice("primes", &[2u32, 3, 5, 7])?;
/// let arena = b.seal()?;
/// assert_eq!(&*arena.slice::<u32>("primes")?, &[2, 3, 5, 7]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ArenaOptions {
    target: Target,
    capacity: u64,
    overwrite: bool,
}

impl Default for ArenaOptions {
    fn default() -> Self {
        ArenaOptions::new()
    }
}

impl ArenaOptions {
    /// An anonymous sealed memfd (the default): freed by the kernel when the last descriptor or
    /// mapping goes, so it cannot leak even on SIGKILL.
    pub fn new() -> ArenaOptions {
        ArenaOptions {
            target: Target::Memfd,
            capacity: DEFAULT_CAPACITY,
            overwrite: false,
        }
    }

    /// Build in a named POSIX shared-memory segment that unrelated processes of the user can
    /// load with [`Arena::load_named`](crate::Arena::load_named) (a checked copy) or map with
    /// the `unsafe` [`Arena::open_named`](crate::Arena::open_named). The name is checked by [`create`](Self::create) against
    /// [`validate_segment_name`](crate::validate_segment_name).
    pub fn named(mut self, name: impl Into<String>) -> ArenaOptions {
        self.target = Target::Shm(name.into());
        self
    }

    /// Build into a file: written under a temporary name beside `path`, then renamed to `path`
    /// when sealed, so `path` only ever holds a whole arena.
    pub fn file(mut self, path: impl Into<PathBuf>) -> ArenaOptions {
        self.target = Target::File(path.into());
        self
    }

    /// Bytes of address space to map up front (default and least 64 MiB). It costs no memory: the writer reserves memory as entries are written, and the
    /// sealed arena is about the size its entries need whatever the capacity. Past it the
    /// mapping grows (and may move) as needed; a good guess for a very large arena saves those
    /// remaps.
    pub fn capacity(mut self, bytes: u64) -> ArenaOptions {
        self.capacity = bytes;
        self
    }

    /// For [`file`](Self::file): replace an existing file when sealing (default: refuse with
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists)).
    pub fn overwrite(mut self, yes: bool) -> ArenaOptions {
        self.overwrite = yes;
        self
    }

    /// Creates the memfd the arena is built in (and, for a named segment or file target, that
    /// segment or a temporary file beside the path), and writes a header that says "building".
    pub fn create(self) -> Result<ArenaWriter> {
        let id = os::random_id().map_err(|e| Error::Io {
            context: "reading random bytes for the arena id".into(),
            source: e,
        })?;
        let pid = os::pid();
        let (file, mirror, site) = segment::create(&self.target, self.overwrite, &id)?;
        let locator = site.locator(pid, &file);
        let what = locator.describe();
        let header = Header::new_building(
            id,
            pid,
            os::process_start_time(pid).unwrap_or(0),
            os::now_ns(),
        );
        let capacity = round_up(self.capacity.max(PAGE), PAGE).ok_or(Error::TooLarge {
            what: what.clone(),
            size: self.capacity,
        })?;
        let capacity = usize::try_from(capacity).map_err(|_| Error::TooLarge {
            what: what.clone(),
            size: capacity,
        })?;
        // From here on `site` cleans up after itself on drop (unlinks the name or temp file).
        let seg = Segment::new(file, mirror, what, capacity)?;
        ArenaWriter::start(seg, site, locator, header)
    }
}
