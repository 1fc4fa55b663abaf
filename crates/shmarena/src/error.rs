//! The error type of every fallible shmarena call.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::format::FormatError;

/// What can go wrong building, opening or reading an arena.
///
/// Messages are lowercase, name the arena (`memfd arena pid 812 fd 5`, `shm segment "/lex"`,
/// `file /data/lex.arena`) or the entry, and say the cause. Where there is a wrapped OS or
/// format error, [`std::error::Error::source`] returns it and the message does not repeat it:
/// print the chain (`{:#}` with anyhow, or walk `source()`) to see both.
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
        /// The OS error (`EEXIST`), when the OS reported it.
        source: Option<io::Error>,
    },
    /// No segment or file of that name exists.
    NotFound {
        /// What was looked for.
        what: String,
        /// The OS error (`ENOENT`), when the OS reported it.
        source: Option<io::Error>,
    },
    /// The OS refused access, or the segment belongs to another user.
    PermissionDenied {
        /// What was refused.
        what: String,
        /// Why, when shmarena refused it; empty when the OS did (see `source`).
        reason: String,
        /// The OS error (`EACCES`, `EPERM`), when the OS refused.
        source: Option<io::Error>,
    },
    /// The bytes are not a readable arena: not an arena at all, another format version or
    /// pointer width, incompatible, truncated, corrupted, or still being built.
    /// [`source`](std::error::Error::source) returns the [`FormatError`] that says which.
    Format {
        /// The arena.
        arena: String,
        /// What the format checks found.
        source: FormatError,
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
    /// The arena has no entry of that name (or index).
    NoSuchEntry {
        /// The arena.
        arena: String,
        /// The entry asked for: its name, or `#N` for an entry index past the table of contents.
        entry: String,
    },
    /// The segment's file system is full (a small `/dev/shm`, say). The builder is unchanged.
    NoSpace {
        /// The segment.
        what: String,
        /// Bytes that were being reserved.
        requested: u64,
        /// The OS error (`ENOSPC`).
        source: io::Error,
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
    Service(ServiceError),
    /// Any other OS error, with what was being done.
    Io {
        /// What was being done, naming the segment or path.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// An array's element type or shape does not describe its data.
    InvalidArray {
        /// The entry.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// An [`ArenaWriter`](crate::ArenaWriter) was used in another process than the one that
    /// created it (a child forked while it was building). Its segment is not mapped there;
    /// nothing was written, sealed or removed.
    WrongProcess {
        /// The arena being built.
        what: String,
        /// The process that created the writer.
        creator: u32,
        /// The process that tried to use it.
        current: u32,
    },
    /// A safe open was asked to map something that is not a memfd with the write, grow and
    /// shrink seals: its bytes could change while mapped. Copy it with
    /// [`Arena::load_file`](crate::Arena::load_file) or
    /// [`Arena::load_named`](crate::Arena::load_named), or map it in place with the `unsafe`
    /// [`Arena::open_file`](crate::Arena::open_file) /
    /// [`Arena::open_named`](crate::Arena::open_named).
    NotSealed {
        /// The arena or descriptor.
        what: String,
    },
    /// [`Arena::unlink`](crate::Arena::unlink) on a named segment this process opened but did
    /// not build; [`Arena::remove_named`](crate::Arena::remove_named) removes it by name.
    NotBuilder {
        /// The segment.
        what: String,
    },
    /// An environment variable a handle was to be read from is not set
    /// ([`Handle::from_env`](crate::Handle::from_env)).
    EnvNotSet {
        /// The variable's name.
        var: String,
    },
    /// [`Arena::wait_named`](crate::Arena::wait_named) gave up: no sealed arena appeared at
    /// the name in time.
    Timeout {
        /// What was awaited.
        what: String,
        /// What was there at the end: the last error, as text.
        last: String,
    },
}

/// The result type of shmarena.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName { name, reason } => write!(f, "invalid name {name:?}: {reason}"),
            Error::AlreadyExists { what, .. } => write!(f, "{what} already exists"),
            Error::NotFound { what, .. } => write!(f, "{what} not found"),
            Error::PermissionDenied { what, reason, .. } if reason.is_empty() => {
                write!(f, "permission denied for {what}")
            }
            Error::PermissionDenied { what, reason, .. } => {
                write!(f, "permission denied for {what}: {reason}")
            }
            Error::Format { arena, .. } => write!(f, "cannot read {arena}"),
            Error::TypeMismatch {
                entry,
                expected,
                found,
            } => write!(
                f,
                "type mismatch for entry {entry:?}: asked for {expected}, it holds {found}"
            ),
            Error::NoSuchEntry { arena, entry } => write!(f, "{arena} has no entry {entry:?}"),
            Error::NoSpace {
                what, requested, ..
            } => write!(
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
            Error::Io { context, .. } => f.write_str(context),
            Error::InvalidArray { entry, reason } => {
                write!(f, "invalid array for entry {entry:?}: {reason}")
            }
            Error::WrongProcess {
                what,
                creator,
                current,
            } => write!(
                f,
                "the writer of {what} belongs to process {creator}, not to this process \
                 ({current}): a writer cannot be used after fork"
            ),
            Error::NotSealed { what } => write!(
                f,
                "{what} is not a sealed memfd, so its bytes could change while mapped: \
                 copy it with Arena::load_file or Arena::load_named instead"
            ),
            Error::NotBuilder { what } => write!(
                f,
                "{what} was not built by this process, so Arena::unlink does not remove it; \
                 use Arena::remove_named to remove the name"
            ),
            Error::EnvNotSet { var } => write!(
                f,
                "environment variable {var} is not set (the parent sets it with \
                 Handle::share_with before spawning this process)"
            ),
            Error::Timeout { what, last } => {
                write!(f, "timed out waiting for {what}; at the end: {last}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Format { source, .. } => Some(source),
            Error::Io { source, .. } | Error::NoSpace { source, .. } => Some(source),
            Error::AlreadyExists { source, .. }
            | Error::NotFound { source, .. }
            | Error::PermissionDenied { source, .. } => source
                .as_ref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            // Transparent: the Display above is the service error's own, so its source is
            // the service error's cause (not the service error again, which a printer of the
            // chain, `{:#}` with anyhow, would show twice).
            Error::Service(e) => std::error::Error::source(e),
            _ => None,
        }
    }
}

impl From<ServiceError> for Error {
    fn from(e: ServiceError) -> Error {
        Error::Service(e)
    }
}

impl Error {
    /// Wraps a format error with the arena it came from.
    pub(crate) fn format(arena: &str, source: FormatError) -> Error {
        Error::Format {
            arena: arena.to_owned(),
            source,
        }
    }

    /// The format error, if this is [`Error::Format`].
    pub fn format_error(&self) -> Option<&FormatError> {
        match self {
            Error::Format { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Maps an OS error from an operation on `what`, turning the common errnos into the typed
    /// variants.
    pub(crate) fn os(context: impl Into<String>, what: &str, err: io::Error) -> Error {
        let what = what.to_owned();
        match err.kind() {
            io::ErrorKind::NotFound => Error::NotFound {
                what,
                source: Some(err),
            },
            io::ErrorKind::AlreadyExists => Error::AlreadyExists {
                what,
                source: Some(err),
            },
            io::ErrorKind::PermissionDenied => Error::PermissionDenied {
                what,
                reason: String::new(),
                source: Some(err),
            },
            _ if err.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                Error::NoSpace {
                    what,
                    requested: 0,
                    source: err,
                }
            }
            _ => Error::Io {
                context: context.into(),
                source: err,
            },
        }
    }
}

/// Which side refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedBy {
    /// The publisher refused this client's credentials.
    Server,
    /// This client refused the process listening on the name (another uid: a squatter).
    Client,
}

/// What went wrong publishing or connecting (see [`crate::service`]). Wrapped in
/// [`Error::Service`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ServiceError {
    /// Nobody listens on the name (never published, or the publisher is gone).
    NotPublished {
        /// The published name.
        name: String,
        /// Other uids whose publishers serve the same name on this host (from
        /// `/proc/net/unix`): connecting to one of them needs
        /// [`ConnectOptions::server_uid`](crate::ConnectOptions::server_uid).
        other_uids: Vec<u32>,
    },
    /// Another live socket already holds the name.
    AlreadyPublished {
        /// The published name.
        name: String,
        /// Whether the holder is a publisher of this very process (one not yet closed).
        by_this_process: bool,
    },
    /// One side refused the other's credentials.
    Refused {
        /// The published name.
        name: String,
        /// Which side refused.
        by: RefusedBy,
        /// The uid that was refused: this client's (by the server) or the server's (by us).
        uid: u32,
        /// The gid that was refused along with it.
        gid: u32,
    },
    /// The server closed the connection or reset it before a whole answer arrived.
    ServerDied {
        /// The published name.
        name: String,
        /// What had arrived.
        detail: String,
    },
    /// The server did not answer in time.
    Timeout {
        /// The published name.
        name: String,
        /// How long the client waited.
        after: Duration,
    },
    /// A descriptor is not a memfd with the write, grow, shrink and seal seals (received from a
    /// server, or given to a publisher), or the generation page is not as specified.
    NotSealedMemfd {
        /// The published name.
        name: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The server speaks another protocol version.
    VersionMismatch {
        /// The published name.
        name: String,
        /// The version the server sent.
        found: u16,
        /// The version this build speaks.
        expected: u16,
    },
    /// The answer is malformed (bad magic, wrong descriptor count, mismatched arena id).
    Protocol {
        /// The published name.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// The publisher a [`Subscription`](crate::Subscription) followed closed or died, and
    /// connecting again to the name failed (nobody serves it now, or a new publisher did not
    /// answer): the subscription still holds the gone publisher's last generation
    /// ([`Subscription::last`](crate::Subscription::last)) and tries again on the next
    /// [`Subscription::current`](crate::Subscription::current).
    PublisherGone {
        /// The published name.
        name: String,
        /// Whether it closed cleanly (`true`) or ended without closing (`false`: killed, or its
        /// serving thread ended).
        closed: bool,
        /// The generation the subscription still holds.
        generation: u64,
        /// How long since the subscription first found it gone.
        stale_for: Duration,
        /// Why connecting again failed.
        cause: Box<Error>,
    },
    /// An OS error, with what was being done.
    Io {
        /// What was being done, naming the published name.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::NotPublished { name, other_uids } => {
                write!(
                    f,
                    "no arena is published as {name:?} (nobody listens on the name)"
                )?;
                match other_uids.as_slice() {
                    [] => Ok(()),
                    [uid] => write!(
                        f,
                        "; uid {uid} publishes it: to connect to another user's publisher, \
                         name its uid (server_uid)"
                    ),
                    uids => write!(
                        f,
                        "; uids {uids:?} publish it: to connect to another user's publisher, \
                         name its uid (server_uid)"
                    ),
                }
            }
            ServiceError::AlreadyPublished {
                name,
                by_this_process,
            } => {
                write!(f, "an arena is already published as {name:?}")?;
                if *by_this_process {
                    write!(
                        f,
                        " by this process: a publisher of it is still open here (publish \
                         through it to serve a new generation, or close it first)"
                    )?;
                }
                Ok(())
            }
            ServiceError::Refused { name, by, uid, gid } => match by {
                RefusedBy::Server => write!(
                    f,
                    "the publisher of {name:?} refused this client (uid {uid}, gid {gid})"
                ),
                RefusedBy::Client => write!(
                    f,
                    "refused the server listening as {name:?}: it runs as uid {uid} (gid {gid}), \
                     not the expected publisher uid"
                ),
            },
            ServiceError::ServerDied { name, detail } => {
                write!(f, "the publisher of {name:?} died mid-handshake: {detail}")
            }
            ServiceError::Timeout { name, after } => {
                write!(
                    f,
                    "the publisher of {name:?} did not answer within {after:?}"
                )
            }
            ServiceError::NotSealedMemfd { name, detail } => {
                write!(
                    f,
                    "arena published as {name:?} is not a sealed memfd: {detail}"
                )
            }
            ServiceError::VersionMismatch {
                name,
                found,
                expected,
            } => write!(
                f,
                "the publisher of {name:?} speaks service protocol version {found}, \
                 this build speaks {expected}"
            ),
            ServiceError::Protocol { name, detail } => {
                write!(f, "bad answer from the publisher of {name:?}: {detail}")
            }
            ServiceError::PublisherGone {
                name,
                closed,
                generation,
                stale_for,
                ..
            } => write!(
                f,
                "the publisher of {name:?} {} and no publisher answers on the name now \
                 (generation {generation} held, stale for {stale_for:?})",
                if *closed { "closed" } else { "died" }
            ),
            ServiceError::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServiceError::Io { source, .. } => Some(source),
            ServiceError::PublisherGone { cause, .. } => Some(&**cause),
            _ => None,
        }
    }
}

/// An error and its causes ([`std::error::Error::source`], outermost first) on one line, joined
/// with `: `. A cause whose text the line already contains is left out, so a layer that repeats
/// its source's message does not print it twice.
///
/// This is how `arena-inspect`, `arena-serve` and the Python bindings print errors.
///
/// ```
/// let e = shmarena::Arena::load_file("/nonexistent/lex.arena").unwrap_err();
/// let line = shmarena::error_chain(&e);
/// // The library's message, then the OS error it wraps.
/// assert!(line.starts_with(&e.to_string()), "{line}");
/// assert!(line.ends_with("No such file or directory (os error 2)"), "{line}");
/// ```
pub fn error_chain(e: &(dyn std::error::Error + '_)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}
