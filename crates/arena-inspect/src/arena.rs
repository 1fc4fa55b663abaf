//! Naming and opening the arena a command is given, and sorting its errors into "the arena
//! is bad" and "cannot get at it".

use anyhow::{Context, Result};
use shmarena::format::FormatError;
use shmarena::inspect::Target;
use shmarena::{Arena, Locator, OpenOptions};

/// Parses an ARENA argument once: a locator or a handle string (see [`inspect::Target`]).
pub(crate) fn target(arg: &str) -> Result<Target> {
    arg.parse()
        .with_context(|| format!("bad arena name {arg:?}"))
}

/// A handle names an arena id as well as a place: refuse a newer arena at the same place (the
/// library's stale-handle rule, [`shmarena::expect_id`]).
pub(crate) fn check_handle(arena: Arena, target: &Target) -> Result<Arena> {
    match target.handle() {
        Some(h) => Ok(shmarena::expect_id(arena, h.arena_id())?),
        None => Ok(arena),
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

/// Whether the arena is still being built (or its builder died).
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
