//! The error type of every fallible shmarena call.

use std::fmt;
use std::io;

use crate::format::FormatError;

/// What can go wrong building, opening or reading an arena.
///
/// Messages are lowercase, name the arena (`memfd arena pid 812 fd 5`, `shm segment "/lex"`,
/// `file /data/lex.arena`) or the entry, and say the cause. [`std::error::Error::source`] returns
/// the wrapped OS or format error where there is one.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A segment or entry name breaks the naming rules.
    InvalidName {
        /// The name as given (lossy UTF-8).
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A segment, file or entry of that name already exists.
    AlreadyExists {
        /// What exists.
        what: String,
    },
    /// No segment or file of that name exists.
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The OS refused access, or the segment belongs to another user.
    PermissionDenied {
        /// What was refused.
        what: String,
        /// Why.
        reason: String,
    },
    /// The bytes do not start with the arena magic.
    NotAnArena {
        /// The arena.
        arena: String,
    },
    /// The arena has a format version this build cannot read.
    UnsupportedVersion {
        /// The arena.
        arena: String,
        /// The version found.
        found: u32,
    },
    /// The arena's archived entries use relative pointers of another width.
    PointerWidthMismatch {
        /// The arena.
        arena: String,
        /// Width recorded in the arena, in bits.
        found_bits: u32,
        /// Width of this build, in bits.
        expected_bits: u32,
    },
    /// The arena was written for another byte order or rkyv generation.
    Incompatible {
        /// The arena.
        arena: String,
        /// What differs.
        detail: String,
    },
    /// The segment or file is shorter than its header says.
    Truncated {
        /// The arena.
        arena: String,
        /// Bytes the arena needs.
        needed: u64,
        /// Bytes there.
        len: u64,
    },
    /// A header, table-of-contents or payload check failed.
    Corrupted {
        /// The arena.
        arena: String,
        /// What failed, naming the field or entry; for archived entries, bytecheck's message.
        detail: String,
    },
    /// The arena has not been sealed (its builder is still at work, or died).
    StillBuilding {
        /// The arena.
        arena: String,
    },
    /// The entry exists but holds another type.
    TypeMismatch {
        /// The entry.
        entry: String,
        /// The type asked for (kind, type name, size and alignment).
        expected: String,
        /// The type stored.
        found: String,
    },
    /// The arena has no entry of that name.
    NoSuchEntry {
        /// The arena.
        arena: String,
        /// The entry asked for.
        entry: String,
    },
    /// The segment's file system is full (a small `/dev/shm`, say). The builder is unchanged.
    NoSpace {
        /// The segment.
        what: String,
        /// Bytes that were being reserved.
        requested: u64,
    },
    /// rkyv failed to serialize a value, or the archive it wrote did not validate.
    Serialize {
        /// The entry.
        entry: String,
        /// rkyv's message.
        message: String,
    },
    /// An entry or arena is larger than this platform or the format can address.
    TooLarge {
        /// What is too large.
        what: String,
        /// Its size in bytes.
        size: u64,
    },
    /// A handle names an arena that is gone, or a place now holding another arena.
    StaleHandle {
        /// The handle, in its string form.
        handle: String,
        /// What was found instead.
        reason: String,
    },
    /// A handle string or value is malformed, or names an entry the arena does not have.
    BadHandle {
        /// The handle as given.
        handle: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Publishing or connecting to a published arena failed (see [`crate::service`]).
    Service(crate::service::ServiceError),
    /// Any other OS error, with what was being done.
    Io {
        /// What was being done, naming the segment or path.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

/// The result type of shmarena.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName { name, reason } => write!(f, "invalid name {name:?}: {reason}"),
            Error::AlreadyExists { what } => write!(f, "{what} already exists"),
            Error::NotFound { what } => write!(f, "{what} not found"),
            Error::PermissionDenied { what, reason } => {
                write!(f, "permission denied for {what}: {reason}")
            }
            Error::NotAnArena { arena } => {
                write!(f, "{arena} is not a shmarena arena (bad magic)")
            }
            Error::UnsupportedVersion { arena, found } => write!(
                f,
                "{arena} has format version {found}, this build reads version {}",
                crate::format::FORMAT_VERSION
            ),
            Error::PointerWidthMismatch {
                arena,
                found_bits,
                expected_bits,
            } => write!(
                f,
                "{arena} was archived with {found_bits}-bit relative pointers, this build uses \
                 {expected_bits}-bit (toggle the `pointer_width_64` feature to match)"
            ),
            Error::Incompatible { arena, detail } => write!(f, "{arena} is incompatible: {detail}"),
            Error::Truncated { arena, needed, len } => write!(
                f,
                "{arena} is truncated: it needs {needed} bytes but only {len} are there"
            ),
            Error::Corrupted { arena, detail } => write!(f, "{arena} is corrupted: {detail}"),
            Error::StillBuilding { arena } => write!(
                f,
                "{arena} is still being built (not sealed; its builder may have died)"
            ),
            Error::TypeMismatch {
                entry,
                expected,
                found,
            } => write!(
                f,
                "type mismatch for entry {entry:?}: asked for {expected}, it holds {found}"
            ),
            Error::NoSuchEntry { arena, entry } => write!(f, "{arena} has no entry {entry:?}"),
            Error::NoSpace { what, requested } => write!(
                f,
                "no space left to reserve {requested} bytes for {what} (is /dev/shm full or too small?)"
            ),
            Error::Serialize { entry, message } => {
                write!(f, "failed to archive entry {entry:?}: {message}")
            }
            Error::TooLarge { what, size } => write!(f, "{what} is too large ({size} bytes)"),
            Error::StaleHandle { handle, reason } => write!(f, "stale handle {handle}: {reason}"),
            Error::BadHandle { handle, reason } => write!(f, "bad handle {handle:?}: {reason}"),
            Error::Service(e) => fmt::Display::fmt(e, f),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Service(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::service::ServiceError> for Error {
    fn from(e: crate::service::ServiceError) -> Error {
        Error::Service(e)
    }
}

impl Error {
    /// Wraps a format error with the arena it came from.
    pub(crate) fn format(arena: &str, e: FormatError) -> Error {
        let arena = arena.to_owned();
        match e {
            FormatError::BadMagic => Error::NotAnArena { arena },
            FormatError::UnsupportedVersion { found } => Error::UnsupportedVersion { arena, found },
            FormatError::PointerWidth { found, expected } => Error::PointerWidthMismatch {
                arena,
                found_bits: u32::from(found) * 8,
                expected_bits: u32::from(expected) * 8,
            },
            FormatError::Incompatible { detail } => Error::Incompatible { arena, detail },
            FormatError::Truncated { needed, len } => Error::Truncated { arena, needed, len },
            FormatError::StillBuilding => Error::StillBuilding { arena },
            FormatError::Corrupted { detail } => Error::Corrupted { arena, detail },
        }
    }

    /// Maps an OS error from an operation on `what`, turning the common errnos into the typed
    /// variants.
    pub(crate) fn os(context: impl Into<String>, what: &str, err: io::Error) -> Error {
        match err.kind() {
            io::ErrorKind::NotFound => Error::NotFound {
                what: what.to_owned(),
            },
            io::ErrorKind::AlreadyExists => Error::AlreadyExists {
                what: what.to_owned(),
            },
            io::ErrorKind::PermissionDenied => Error::PermissionDenied {
                what: what.to_owned(),
                reason: err.to_string(),
            },
            _ if err.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                Error::NoSpace {
                    what: what.to_owned(),
                    requested: 0,
                }
            }
            _ => Error::Io {
                context: context.into(),
                source: err,
            },
        }
    }
}
