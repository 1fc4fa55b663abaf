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
pub mod generations;
mod publisher;
pub(crate) mod wire;

pub use client::{connect, subscribe, ConnectOptions, Current, Subscription};
pub use publisher::{PublishOptions, Publisher};
pub use wire::{MAGIC, MESSAGE_LEN, PROTOCOL_VERSION};

// The service's errors live with the crate's others, in `error.rs`.
pub use crate::error::{RefusedBy, ServiceError};

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
