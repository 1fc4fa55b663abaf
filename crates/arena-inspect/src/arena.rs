//! Naming and opening the arena a command is given, and sorting its errors into "the arena
//! is bad" and "cannot get at it".

use anyhow::{Context, Result};
use shmarena::format::FormatError;
use shmarena::inspect::{self, Served, Target};
use shmarena::{Arena, Locator, OpenOptions};

/// How an ARENA argument names a published name: `pub:NAME`.
pub(crate) const PUBLISHED_PREFIX: &str = "pub:";

/// What an ARENA argument names, ready to open: a locator, a handle string (see
/// [`inspect::Target`]), or `pub:NAME`.
pub(crate) struct Named {
    target: Target,
    /// For `pub:NAME`: the generation being served when the command started. This process
    /// holds its descriptor while the command runs, and `target` is that descriptor, so a
    /// swap meanwhile changes nothing about what the command reads.
    served: Option<Served>,
}

impl Named {
    /// Where the arena is read from.
    pub(crate) fn locator(&self) -> &Locator {
        self.target.locator()
    }

    /// The handle, if the argument was a handle string.
    pub(crate) fn handle(&self) -> Option<&shmarena::handle::RawHandle> {
        self.target.handle()
    }

    /// The generation served, if the argument was `pub:NAME`.
    pub(crate) fn served(&self) -> Option<&Served> {
        self.served.as_ref()
    }

    /// Whether `pid` should be left out of the arena's users: this process, when it holds
    /// the arena only because the argument was `pub:NAME`.
    pub(crate) fn is_own_hold(&self, pid: u32) -> bool {
        self.served.is_some() && pid == std::process::id()
    }
}

/// Parses an ARENA argument once. `pub:NAME` asks the publisher of NAME (this user's) for the
/// generation it serves now, as `arena-inspect published` does.
pub(crate) fn target(arg: &str) -> Result<Named> {
    if let Some(name) = arg.strip_prefix(PUBLISHED_PREFIX) {
        let served = inspect::serving(name).with_context(|| format!("cannot reach {arg}"))?;
        return Ok(Named {
            target: Target::Arena(served.locator()),
            served: Some(served),
        });
    }
    let target = arg
        .parse()
        .with_context(|| format!("bad arena name {arg:?}"))?;
    Ok(Named {
        target,
        served: None,
    })
}

/// A handle names an arena id as well as a place, and so does `pub:NAME` (the id its publisher
/// announced): refuse another arena at that place (the library's stale-handle rule,
/// [`shmarena::expect_id`]).
pub(crate) fn check_handle(arena: Arena, named: &Named) -> Result<Arena> {
    match (named.handle(), named.served()) {
        (Some(h), _) => Ok(shmarena::expect_id(arena, h.arena_id())?),
        (None, Some(s)) => Ok(shmarena::expect_id(arena, s.arena_id)?),
        (None, None) => Ok(arena),
    }
}

pub(crate) fn backing(loc: &Locator) -> &'static str {
    match loc {
        Locator::Shm { .. } => "shm",
        Locator::Memfd { .. } => "memfd",
        Locator::File { .. } => "file",
        _ => "other",
    }
}

/// Opens an arena for reading. Other users' arenas are accepted: the tool only reads, and never
/// dereferences archived data.
pub(crate) fn open(loc: &Locator, arg: &str) -> Result<Arena> {
    OpenOptions::new()
        .allow_foreign_owner(true)
        .open(loc)
        .map_err(|e| open_error(e, loc, arg))
}

/// An open error with the argument as given, and a hint when a bare name was meant as a file.
pub(crate) fn open_error(e: shmarena::Error, loc: &Locator, arg: &str) -> anyhow::Error {
    let hint = match (&e, loc) {
        (shmarena::Error::NotFound { .. }, Locator::Shm { name })
            if std::path::Path::new(name).is_file() =>
        {
            format!(" (there is a file {name:?} here; write ./{name} to inspect the file)")
        }
        _ => String::new(),
    };
    anyhow::Error::new(e).context(format!("cannot open {arg}{hint}"))
}

/// Errors that say the arena's bytes are bad, as opposed to "cannot get at them".
pub(crate) fn is_corruption(e: &shmarena::Error) -> bool {
    matches!(
        e.format_error(),
        Some(
            FormatError::Corrupted { .. }
                | FormatError::Truncated { .. }
                | FormatError::BadMagic
                | FormatError::StillBuilding
        )
    )
}

/// Whether the arena is still being built (or its writer died).
pub(crate) fn is_building(e: &shmarena::Error) -> bool {
    matches!(e.format_error(), Some(FormatError::StillBuilding))
}

/// A short word for machine output naming what is wrong with an arena.
pub(crate) fn problem_code(e: &shmarena::Error) -> &'static str {
    match e.format_error() {
        Some(FormatError::Corrupted { .. }) => "corrupted",
        Some(FormatError::Truncated { .. }) => "truncated",
        Some(FormatError::BadMagic) => "not-an-arena",
        Some(FormatError::StillBuilding) => "still-building",
        _ => "other",
    }
}
