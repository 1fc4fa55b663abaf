//! The connecting side: one handshake per connect, and subscriptions that follow generations.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use super::wire::{
    decode_rows, Message, WireError, BUILD_ID_LEN, FLAG_TRUST_ROWS, MESSAGE_LEN, PROTOCOL_VERSION,
    ROW_LEN, STATUS_OK,
};
use super::{socket_name, RefusedBy, ServiceError};
use crate::arena::{Arena, OpenOptions};
use crate::error::{Error, Result};
use crate::os;
use crate::os::service as sock;

/// How long a client busy-polls for the publisher's answer before it sleeps. The answer takes
/// the time to wake the publisher's serving thread (which sleeps in `poll`) plus a few
/// microseconds of work; sleeping meanwhile would add a second wake-up, of this thread and of
/// its CPU if that goes idle (about 50 µs on a virtual machine, docs/DESIGN.md "Service
/// protocol"). Bounded: past it the client sleeps until the answer or its timeout.
const ANSWER_SPIN: Duration = Duration::from_micros(100);

/// Options for connecting: whose publication to trust, and how long to wait.
///
/// ```no_run
/// # fn main() -> shmarena::Result<()> {
/// use std::time::Duration;
/// let arena = shmarena::ConnectOptions::new()
///     .timeout(Duration::from_millis(500))
///     .connect("lexicon")?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ConnectOptions {
    server_uid: Option<u32>,
    timeout: Duration,
    always_validate: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            server_uid: None,
            timeout: Duration::from_secs(5),
            always_validate: false,
        }
    }
}

impl ConnectOptions {
    /// Defaults: the publisher must run as this process's effective uid; 5 s timeout.
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Connect to the name as published by `uid` (`shmarena/<uid>/<name>`), and accept a server
    /// running as that uid and no other. Its arena is then owned by another user, so its
    /// archived entries are validated on first access.
    pub fn server_uid(mut self, uid: u32) -> ConnectOptions {
        self.server_uid = Some(uid);
        self
    }

    /// How long to wait for the connection and for the answer (default 5 s). A stuck server
    /// gives [`ServiceError::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> ConnectOptions {
        self.timeout = timeout;
        self
    }

    /// Validate archived entries on first access even when the publisher sent trust rows for
    /// them (see [`Arena::trusts`]). Off by default.
    pub fn always_validate(mut self, yes: bool) -> ConnectOptions {
        self.always_validate = yes;
        self
    }

    /// Connects and attaches the arena published as `name`.
    pub fn connect(&self, name: &str) -> Result<Arena> {
        Ok(self.fetch(name)?.arena)
    }

    /// Connects and returns a [`Subscription`] that follows the name's generations.
    pub fn subscribe(&self, name: &str) -> Result<Subscription> {
        let f = self.fetch(name)?;
        Ok(Subscription {
            name: f.name.clone(),
            opts: self.clone(),
            alive: expected_alive(&f.page),
            publisher: f.page.identity(),
            arena: f.arena,
            generation: f.generation,
            page: f.page,
            stale_since: None,
        })
    }

    fn fetch(&self, name: &str) -> Result<Fetched> {
        let me = os::euid();
        let server_uid = self.server_uid.unwrap_or(me);
        let sock_name = socket_name(server_uid, name)?;
        let name = name.strip_prefix('/').unwrap_or(name).to_owned();
        let svc = |e: ServiceError| Error::Service(e);
        let conn = sock::connect_abstract(sock_name.as_bytes(), self.timeout).map_err(|e| {
            match rustix::io::Errno::from_io_error(&e) {
                Some(rustix::io::Errno::CONNREFUSED | rustix::io::Errno::NOENT) => {
                    svc(ServiceError::NotPublished { name: name.clone() })
                }
                Some(rustix::io::Errno::AGAIN | rustix::io::Errno::TIMEDOUT) => {
                    svc(ServiceError::Timeout {
                        name: name.clone(),
                        after: self.timeout,
                    })
                }
                _ => svc(ServiceError::Io {
                    context: format!("connecting to published name {name:?}"),
                    source: e,
                }),
            }
        })?;
        let peer = sock::peer_cred(conn.as_fd()).map_err(|e| {
            svc(ServiceError::Io {
                context: format!("reading the credentials of the publisher of {name:?}"),
                source: e,
            })
        })?;
        if peer.uid != server_uid {
            return Err(svc(ServiceError::Refused {
                name,
                by: RefusedBy::Client,
                uid: peer.uid,
                gid: peer.gid,
            }));
        }
        let mut buf = [0u8; MESSAGE_LEN];
        let got = sock::recv_with_fds(conn.as_fd(), &mut buf, self.timeout, ANSWER_SPIN).map_err(
            |e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => svc(ServiceError::Timeout {
                    name: name.clone(),
                    after: self.timeout,
                }),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                    svc(ServiceError::ServerDied {
                        name: name.clone(),
                        detail: format!("the connection was reset ({e})"),
                    })
                }
                _ => svc(ServiceError::Io {
                    context: format!("receiving from the publisher of {name:?}"),
                    source: e,
                }),
            },
        )?;
        let msg = match Message::decode(&buf[..got.len]) {
            Ok(m) => m,
            Err(WireError::BadMagic) => {
                return Err(svc(ServiceError::Protocol {
                    name,
                    detail: "the answer does not start with the service magic".into(),
                }))
            }
            Err(WireError::Version(found)) => {
                return Err(svc(ServiceError::VersionMismatch {
                    name,
                    found,
                    expected: PROTOCOL_VERSION,
                }))
            }
            Err(WireError::Short(n) | WireError::Truncated(n)) => {
                return Err(svc(ServiceError::ServerDied {
                    name,
                    detail: format!("it closed the connection after {n} of {MESSAGE_LEN} bytes"),
                }))
            }
            Err(WireError::Malformed(detail)) => {
                return Err(svc(ServiceError::Protocol { name, detail }))
            }
        };
        if msg.status != STATUS_OK {
            return Err(svc(ServiceError::Refused {
                name,
                by: RefusedBy::Server,
                uid: msg.client_uid,
                gid: me_gid(),
            }));
        }
        if got.fds_truncated || got.fds.len() != 2 {
            return Err(svc(ServiceError::Protocol {
                name,
                detail: format!("expected 2 descriptors, received {}", got.fds.len()),
            }));
        }
        let mut fds = got.fds.into_iter();
        let arena_fd: OwnedFd = fds.next().expect("two descriptors");
        let page_fd: OwnedFd = fds.next().expect("two descriptors");
        let not_sealed = |detail: String| {
            svc(ServiceError::NotSealedMemfd {
                name: name.clone(),
                detail,
            })
        };
        let seals = sock::seals_of(arena_fd.as_fd());
        if !(seals.immutable() && seals.seal) {
            return Err(not_sealed(format!(
                "the arena descriptor carries seals {seals:?}, not write, grow, shrink and seal"
            )));
        }
        if !sock::is_memfd(arena_fd.as_fd()) {
            return Err(not_sealed("the arena descriptor is not a memfd".into()));
        }
        let info = sock::fd_info(arena_fd.as_fd()).map_err(|e| {
            svc(ServiceError::Io {
                context: format!("inspecting the arena published as {name:?}"),
                source: e,
            })
        })?;
        if !info.is_regular || info.size < msg.arena_len {
            return Err(not_sealed(format!(
                "the arena descriptor holds {} bytes, the answer says {}",
                info.size, msg.arena_len
            )));
        }
        let page = sock::CounterView::new(page_fd).map_err(not_sealed)?;
        // Rows count only from a publisher of this user running this very build: skip reading
        // them otherwise. A listener in this process counts only if one of this process's own
        // publishers serves the name (any thread could bind a name nobody here publishes).
        let rows_wanted = server_uid == me
            && os::build_id_known()
            && (peer.pid != os::pid() || super::publisher::served_here(&sock_name));
        let rows = if rows_wanted && msg.flags & FLAG_TRUST_ROWS != 0 {
            let mut b = vec![0u8; BUILD_ID_LEN + msg.row_count as usize * ROW_LEN];
            match sock::recv_with_fds(conn.as_fd(), &mut b, self.timeout, ANSWER_SPIN) {
                Ok(got) if !got.fds.is_empty() => {
                    return Err(svc(ServiceError::Protocol {
                        name,
                        detail: format!("{} descriptors came with the trust rows", got.fds.len()),
                    }));
                }
                Ok(got) if got.len == b.len() => decode_rows(&b),
                // The rows ended short or late: the publisher gave up on this connection (it
                // drops a client not served within its timeout). Validate instead.
                _ => None,
            }
        } else {
            None
        };
        drop(conn);
        let arena = OpenOptions::new()
            .always_validate(self.always_validate)
            .allow_foreign_owner(server_uid != me)
            .open_fd_with(arena_fd, info, seals)?;
        if arena.id().to_bytes() != msg.arena_id {
            return Err(svc(ServiceError::Protocol {
                name,
                detail: format!(
                    "the arena received has id {}, the answer names {}",
                    arena.id(),
                    crate::ArenaId::from_bytes(msg.arena_id)
                ),
            }));
        }
        // The rows count only from a publisher of this user (its uid was checked above) that
        // says it runs this very build, on the sealed memfd checked above. The build identity
        // is the publisher's word: trusting it is trusting the processes of this user (see
        // docs/DESIGN.md, "Trust model").
        if let Some((build_id, rows)) = rows {
            if build_id == os::build_id() {
                arena.accept_rows(&rows);
            }
        }
        Ok(Fetched {
            name,
            arena,
            generation: msg.generation,
            page,
        })
    }
}

/// The liveness word a subscription expects on `page`: its value now, or, if the page already
/// says its publisher is gone, a value the word never takes (so the next check looks again).
fn expected_alive(page: &sock::CounterView) -> u32 {
    let alive = page.alive();
    if page.gone().is_some() {
        u32::MAX
    } else {
        alive
    }
}

fn me_gid() -> u32 {
    rustix::process::getegid().as_raw()
}

struct Fetched {
    name: String,
    arena: Arena,
    generation: u64,
    page: sock::CounterView,
}

/// Connects to the arena published as `name` by a process of this user and attaches it (see
/// [`ConnectOptions`] for the options).
///
/// Errors are [`Error::Service`]: [`ServiceError::NotPublished`] if nobody listens,
/// [`ServiceError::Refused`] if either side refuses the other's uid,
/// [`ServiceError::ServerDied`], [`ServiceError::Timeout`], [`ServiceError::NotSealedMemfd`],
/// [`ServiceError::VersionMismatch`].
pub fn connect(name: &str) -> Result<Arena> {
    ConnectOptions::new().connect(name)
}

/// Connects to `name` and follows its generations (see [`Subscription`]).
pub fn subscribe(name: &str) -> Result<Subscription> {
    ConnectOptions::new().subscribe(name)
}

/// What [`Subscription::current`] returns: the arena of the latest generation, borrowed from
/// the subscription, and its generation number. Derefs to the [`Arena`].
#[derive(Clone, Copy, Debug)]
pub struct Current<'s> {
    arena: &'s Arena,
    generation: u64,
}

impl<'s> Current<'s> {
    /// The arena (clone it to keep it beyond the subscription's borrow).
    pub fn arena(&self) -> &'s Arena {
        self.arena
    }

    /// Its generation (from 1, per publisher).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl std::ops::Deref for Current<'_> {
    type Target = Arena;
    fn deref(&self) -> &Arena {
        self.arena
    }
}

/// The latest generation of a published arena, checked cheaply at each task boundary.
///
/// [`current`](Subscription::current) reads two words of the publisher's generation page (a
/// shared read-only page; two relaxed atomic loads, no system call): the generation counter
/// and the publisher's liveness word. When neither moved it returns the arena it already holds;
/// after a new generation it connects again and fetches it. Views taken from an old arena stay
/// valid: each holds its own mapping.
///
/// # When the publisher goes away
///
/// The liveness word holds the publisher's serving thread id while it serves. A publisher that
/// closes (is dropped) marks the page closed; one that dies without closing (killed, even by
/// SIGKILL) is marked by the kernel (the word is a robust futex: the kernel sets its
/// owner-died bit when the thread ends). Either way the word changes, and the next
/// [`current`](Subscription::current) connects again: if the name is served by someone new
/// (a restarted daemon, say), the subscription follows it (its generations count from 1
/// again, and [`publisher`](Subscription::publisher) changes); if nobody serves it, `current`
/// returns [`ServiceError::PublisherGone`], and keeps trying on each call, and
/// [`stale_since`](Subscription::stale_since) says since when the subscription knows its arena
/// is no longer served. [`last`](Subscription::last) still gives that arena, for a reader that
/// prefers stale data to none. A subscription never returns a gone publisher's arena from
/// `current` without saying so.
///
/// ```
/// # fn main() -> shmarena::Result<()> {
/// # let name = format!("doc-sub-gone-{}", std::process::id());
/// let mut b = shmarena::ArenaOptions::new().create()?;
/// b.put_slice("v", &[1u32])?;
/// let publisher = b.seal()?.publish(&name)?;
/// let mut sub = shmarena::subscribe(&name)?;
/// let arena = sub.current()?;              // the arena and its generation
/// assert_eq!(arena.generation(), 1);
/// assert_eq!(arena.slice::<u32>("v")?[0], 1);
///
/// drop(publisher);                         // the name is no longer served
/// let err = sub.current().unwrap_err();
/// assert!(matches!(
///     err,
///     shmarena::Error::Service(shmarena::service::ServiceError::PublisherGone { closed: true, .. })
/// ));
/// assert!(sub.stale_since().is_some());
/// assert_eq!(sub.last().slice::<u32>("v")?[0], 1); // the old data, asked for explicitly
///
/// let mut b = shmarena::ArenaOptions::new().create()?;
/// b.put_slice("v", &[2u32])?;
/// let _again = b.seal()?.publish(&name)?;  // a new publisher of the name
/// assert_eq!(sub.current()?.slice::<u32>("v")?[0], 2);
/// assert!(sub.stale_since().is_none());
/// # Ok(()) }
/// ```
pub struct Subscription {
    name: String,
    opts: ConnectOptions,
    arena: Arena,
    generation: u64,
    page: sock::CounterView,
    /// The liveness word `current` expects (see [`expected_alive`]).
    alive: u32,
    /// The identity of the publisher `arena` came from.
    publisher: u128,
    /// When this subscription learned its publisher was gone, until it reconnects.
    stale_since: Option<Instant>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .field("publisher", &format_args!("{:032x}", self.publisher))
            .field("stale_since", &self.stale_since)
            .field("arena", &self.arena)
            .finish()
    }
}

impl Subscription {
    /// The arena of the latest generation, with its number: the one held if the publisher's
    /// counter and liveness word have not moved (two loads, nothing else), a freshly fetched
    /// one otherwise. The [`Current`] returned borrows the subscription and derefs to the
    /// [`Arena`]; it carries the generation, so there is no need to ask the subscription again
    /// while it is borrowed (`cur.generation()`, not `sub.generation()`); take
    /// `cur.arena().clone()` to keep the arena beyond the borrow.
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// # let name = format!("doc-current-{}", std::process::id());
    /// # let mut b = shmarena::ArenaOptions::new().create()?;
    /// # b.put_slice("v", &[7u32])?;
    /// # let _publisher = b.seal()?.publish(&name)?;
    /// let mut sub = shmarena::subscribe(&name)?;
    /// let cur = sub.current()?;
    /// let v = cur.slice::<u32>("v")?;            // an Arena method, through Deref
    /// assert_eq!((v[0], cur.generation()), (7, 1));
    /// let kept: shmarena::Arena = cur.arena().clone();
    /// # drop(kept);
    /// # Ok(()) }
    /// ```
    ///
    /// On error the subscription keeps what it had ([`last`](Subscription::last)), and the
    /// next call tries again. The errors are those of [`connect`] (the publisher died between
    /// changing the counter and answering, say), and [`ServiceError::PublisherGone`] once the
    /// publisher closed or died and nobody serves the name (see "When the publisher goes
    /// away" above).
    #[inline]
    pub fn current(&mut self) -> Result<Current<'_>> {
        if self.page.load() != self.generation as u32 || self.page.alive() != self.alive {
            self.follow()?;
        }
        Ok(Current {
            arena: &self.arena,
            generation: self.generation,
        })
    }

    /// The slow path of [`current`](Subscription::current): connect again.
    #[cold]
    fn follow(&mut self) -> Result<()> {
        let gone = self.page.gone();
        match self.opts.fetch(&self.name) {
            Ok(f) => {
                self.take(f);
                Ok(())
            }
            Err(e) => match gone {
                Some(closed) => {
                    let since = *self.stale_since.get_or_insert_with(Instant::now);
                    Err(Error::Service(ServiceError::PublisherGone {
                        name: self.name.clone(),
                        closed,
                        generation: self.generation,
                        stale_for: since.elapsed(),
                        cause: Box::new(e),
                    }))
                }
                None => Err(e),
            },
        }
    }

    fn take(&mut self, f: Fetched) {
        self.alive = expected_alive(&f.page);
        self.publisher = f.page.identity();
        self.arena = f.arena;
        self.generation = f.generation;
        self.page = f.page;
        self.stale_since = None;
    }

    /// Fetches the arena served now, whether or not the counter moved. Returns whether the
    /// generation, the arena or the publisher changed. (`current` already follows a restarted
    /// publisher; this is for a reader that wants to ask the server now.)
    pub fn refresh(&mut self) -> Result<bool> {
        let f = self.opts.fetch(&self.name)?;
        let changed = f.generation != self.generation
            || f.arena.id() != self.arena.id()
            || f.page.identity() != self.publisher;
        self.take(f);
        Ok(changed)
    }

    /// The arena last fetched, without checking for a newer one (or whether its publisher is
    /// still there).
    pub fn last(&self) -> &Arena {
        &self.arena
    }

    /// The generation of [`last`](Subscription::last) (generations count from 1 for each
    /// publisher: after following a new publisher it starts again).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The identity of the publisher [`last`](Subscription::last) came from: a random number
    /// it drew when it started ([`Publisher::identity`](super::Publisher::identity); zero from a
    /// publisher of an older version, which has none). It changes when the subscription follows
    /// a new publisher of the name.
    pub fn publisher(&self) -> u128 {
        self.publisher
    }

    /// Since when this subscription knows that the publisher of [`last`](Subscription::last)
    /// is gone (it closed or died, and `current` has not reached a new one yet); `None` while
    /// it is served. Set by the first [`current`](Subscription::current) that finds the
    /// publisher gone.
    pub fn stale_since(&self) -> Option<Instant> {
        self.stale_since
    }

    /// The published name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
