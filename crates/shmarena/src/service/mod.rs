//! Publish a sealed arena by name, connect to it from any process of the user, and follow new
//! generations.
//!
//! A [`Publisher`] listens on an abstract-namespace Unix socket named
//! `shmarena/<uid>/<name>` (the name disappears with the socket, so a killed publisher leaves
//! nothing behind) and hands each client the arena's sealed memfd with `SCM_RIGHTS`, plus a
//! one-page memfd holding the generation counter. Both sides check the other's credentials
//! with `SO_PEERCRED`: by default only processes of the same uid are served, and a client
//! refuses a server of another uid squatting the name. docs/DESIGN.md ("Service protocol")
//! documents the message byte by byte.
//!
//! ```
//! # fn main() -> shmarena::Result<()> {
//! # let name = format!("doc-svc-{}", std::process::id());
//! let mut b = shmarena::ArenaOptions::new().create()?;
//! b.put_slice("weights", &[1.0f32, 2.0])?;
//! let publisher = b.seal()?.publish(&name)?;          // served by a thread until dropped
//!
//! // In any process of this user:
//! let arena = shmarena::Arena::connect(&name)?;
//! assert_eq!(arena.slice::<f32>("weights")?[1], 2.0);
//!
//! // Following new generations:
//! let mut sub = shmarena::subscribe(&name)?;
//! let mut b = shmarena::ArenaOptions::new().create()?;
//! b.put_slice("weights", &[3.0f32, 4.0])?;
//! publisher.publish(b.seal()?)?;                      // generation 2
//! assert_eq!(sub.current()?.slice::<f32>("weights")?[1], 4.0);
//! assert_eq!(sub.generation(), 2);
//! # Ok(()) }
//! ```
//!
//! A view taken from an old generation stays valid and unchanged until it is dropped: it holds
//! its own mapping. The kernel frees a generation when the last process lets go of it.

mod client;
mod publisher;
pub(crate) mod wire;

use std::fmt;
use std::io;
use std::time::Duration;

pub use client::{connect, subscribe, ConnectOptions, Current, Subscription};
pub use publisher::{PublishOptions, Publisher};
pub use wire::{MAGIC, MESSAGE_LEN, PROTOCOL_VERSION};

use crate::arena::Arena;
use crate::error::Result;
use crate::locator::validate_segment_name;

/// The abstract socket name (without the leading NUL) that `uid` publishes `name` under:
/// `shmarena/<uid>/<name>`. `name` follows the segment-name rule
/// ([`validate_segment_name`]).
///
/// ```
/// assert_eq!(shmarena::service::socket_name(1000, "lexicon").unwrap(), "shmarena/1000/lexicon");
/// ```
pub fn socket_name(uid: u32, name: &str) -> Result<String> {
    let name = validate_segment_name(name)?;
    Ok(format!("shmarena/{uid}/{name}"))
}

/// Which side refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedBy {
    /// The publisher refused this client's credentials.
    Server,
    /// This client refused the process listening on the name (another uid: a squatter).
    Client,
}

/// What went wrong publishing or connecting. Wrapped in [`Error::Service`](crate::Error::Service).
#[derive(Debug)]
#[non_exhaustive]
pub enum ServiceError {
    /// Nobody listens on the name (never published, or the publisher is gone).
    NotPublished {
        /// The published name.
        name: String,
        /// Other uids whose publishers serve the same name on this host (from
        /// `/proc/net/unix`): connecting to one of them needs
        /// [`ConnectOptions::server_uid`].
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
    /// The publisher a [`Subscription`] followed closed or died, and connecting again to the
    /// name failed (nobody serves it now, or a new publisher did not answer): the subscription
    /// still holds the gone publisher's last generation ([`Subscription::last`]) and tries again
    /// on the next [`Subscription::current`].
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
        cause: Box<crate::Error>,
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

impl Arena {
    /// Connects to the arena published as `name` by a process of this user, with default
    /// [`ConnectOptions`]. See [`connect`].
    pub fn connect(name: &str) -> Result<Arena> {
        connect(name)
    }

    /// Publishes this arena (a sealed memfd) as `name` with default [`PublishOptions`]; the
    /// returned [`Publisher`] serves it until dropped. See [`Publisher`].
    pub fn publish(&self, name: &str) -> Result<Publisher> {
        PublishOptions::new().publish(name, self.clone())
    }
}
