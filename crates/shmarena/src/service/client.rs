//! The connecting side: one handshake per connect, and subscriptions that follow generations.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use super::wire::{
    decode_rows, Message, WireError, BUILD_ID_LEN, FLAG_TRUST_ROWS, MESSAGE_LEN, PROTOCOL_VERSION,
    ROW_LEN, STATUS_OK,
};
use super::{socket_name, RefusedBy, ServiceError};
use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::open::OpenOptions;
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
    /// Take the publisher's trust rows ([`ConnectOptions::trust_publisher_rows`]).
    trust_rows: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            server_uid: None,
            timeout: Duration::from_secs(5),
            always_validate: false,
            trust_rows: false,
        }
    }
}

impl ConnectOptions {
    /// Defaults: the publisher must run as this process's effective uid; 5 s timeout; the
    /// arena's archived entries are validated on first access in this process (the publisher's
    /// trust rows are not taken: see [`trust_publisher_rows`](Self::trust_publisher_rows)).
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

    /// Validate archived entries on first access even when the publisher's trust rows were
    /// taken ([`trust_publisher_rows`](Self::trust_publisher_rows)). Off by default.
    pub fn always_validate(mut self, yes: bool) -> ConnectOptions {
        self.always_validate = yes;
        self
    }

    /// Take the publisher's trust rows: the entries the publisher built or validated are then
    /// read here with no bytecheck, O(1), as in the publisher. Without it (the default), each
    /// archived entry of a connected arena is validated on its first read in this process (then
    /// cached; POD slices need no validation).
    ///
    /// Rows are taken only from a publisher of this uid (`SO_PEERCRED`) that says it runs this
    /// very build, on a memfd with the write, grow and shrink seals, and never with
    /// [`always_validate`](Self::always_validate) or [`server_uid`](Self::server_uid) of
    /// another user. Those are kernel facts about the socket and the descriptor; that the rows
    /// speak of the memfd's bytes is the answering process's word. Any process of this user can
    /// bind a free name (before `publish`, or after the publisher died) and answer with a
    /// crafted sealed memfd and rows copied from a genuine answer, and `SO_PEERCRED` names
    /// whoever called `listen()`, which this process's own safe code can delegate to a helper
    /// (test `a_forged_service_answer_is_validated`).
    ///
    /// ```no_run
    /// # fn main() -> shmarena::Result<()> {
    /// // SAFETY: on this machine only our own `arena-serve` (this build) runs as this user and
    /// // publishes "lexicon"; no other program of ours binds shmarena names.
    /// let opts = unsafe { shmarena::ConnectOptions::new().trust_publisher_rows() };
    /// let arena = opts.connect("lexicon")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Safety
    ///
    /// Every process of this user that can listen on the name while these options connect (or
    /// a [`Subscription`] made with them refreshes) answers only through a shmarena
    /// [`Publisher`](crate::Publisher) of this build that serves an arena it built, validated
    /// or received with genuine rows: nothing binds the name to answer by other means, and no
    /// program of the user forwards, edits or composes answers.
    pub unsafe fn trust_publisher_rows(mut self) -> ConnectOptions {
        self.trust_rows = true;
        self
    }

    /// Connects and attaches the arena published as `name`.
    pub fn connect(&self, name: &str) -> Result<Arena> {
        // The generation page comes with every answer; only a subscription maps and reads it.
        Ok(self.fetch_with(name, false)?.arena)
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

    /// [`fetch_with`](Self::fetch_with) for a subscription: the generation page mapped.
    fn fetch(&self, name: &str) -> Result<Fetched> {
        let f = self.fetch_with(name, true)?;
        match f.page {
            Some(page) => Ok(Fetched {
                name: f.name,
                arena: f.arena,
                generation: f.generation,
                page,
            }),
            // `fetch_with(_, true)` maps the page or fails.
            None => Err(Error::Service(ServiceError::Protocol {
                name: f.name,
                detail: "the generation page was not mapped".into(),
            })),
        }
    }

    /// The handshake, step by step: connect, check the peer's uid, receive the answer and its
    /// descriptors, check them (mapping the generation page if `map_page`), receive the trust
    /// rows if they would be taken, open the arena.
    fn fetch_with(&self, name: &str, map_page: bool) -> Result<Fetched<Option<sock::CounterView>>> {
        let server_uid = self.server_uid.unwrap_or_else(os::euid);
        let sock_name = socket_name(server_uid, name)?;
        let h = Handshake {
            opts: self,
            name: name.strip_prefix('/').unwrap_or(name).to_owned(),
            server_uid,
        };
        let conn = h.connect(&sock_name)?;
        let peer = h.check_peer(conn.as_fd())?;
        let (msg, fds) = h.receive_answer(conn.as_fd())?;
        let received = h.check_descriptors(&msg, fds, map_page)?;
        let rows = if h.rows_wanted(&sock_name, peer) {
            h.receive_rows(conn.as_fd(), &msg)?
        } else {
            None
        };
        drop(conn);
        h.open(msg, received, rows)
    }
}

/// One connection's handshake: the options, the name asked for and the uid that must answer.
struct Handshake<'a> {
    opts: &'a ConnectOptions,
    name: String,
    server_uid: u32,
}

/// The descriptors of an answer, checked: the arena's sealed memfd and the generation page
/// (mapped only for a subscription).
struct Descriptors {
    arena_fd: OwnedFd,
    info: os::FileInfo,
    seals: os::Seals,
    page: Option<sock::CounterView>,
}

impl Handshake<'_> {
    fn err(&self, e: ServiceError) -> Error {
        Error::Service(e)
    }

    fn timeout(&self) -> Error {
        self.err(ServiceError::Timeout {
            name: self.name.clone(),
            after: self.opts.timeout,
        })
    }

    fn protocol(&self, detail: String) -> Error {
        self.err(ServiceError::Protocol {
            name: self.name.clone(),
            detail,
        })
    }

    fn io(&self, context: String, source: io::Error) -> Error {
        self.err(ServiceError::Io { context, source })
    }

    /// Step 1: connect to the abstract socket the name is published under.
    fn connect(&self, sock_name: &str) -> Result<OwnedFd> {
        sock::connect_abstract(sock_name.as_bytes(), self.opts.timeout).map_err(|e| {
            match rustix::io::Errno::from_io_error(&e) {
                Some(rustix::io::Errno::CONNREFUSED | rustix::io::Errno::NOENT) => {
                    self.err(ServiceError::NotPublished {
                        other_uids: other_publishers(&self.name, self.server_uid),
                        name: self.name.clone(),
                    })
                }
                Some(rustix::io::Errno::AGAIN | rustix::io::Errno::TIMEDOUT) => self.timeout(),
                _ => self.io(format!("connecting to published name {:?}", self.name), e),
            }
        })
    }

    /// Step 2: the listener's credentials (`SO_PEERCRED`, the kernel's record of whoever called
    /// `listen()`) must name the expected uid.
    fn check_peer(&self, conn: BorrowedFd<'_>) -> Result<sock::PeerCred> {
        let peer = sock::peer_cred(conn).map_err(|e| {
            self.io(
                format!(
                    "reading the credentials of the publisher of {:?}",
                    self.name
                ),
                e,
            )
        })?;
        if peer.uid != self.server_uid {
            return Err(self.err(ServiceError::Refused {
                name: self.name.clone(),
                by: RefusedBy::Client,
                uid: peer.uid,
                gid: peer.gid,
            }));
        }
        Ok(peer)
    }

    /// Step 3: the 64-byte answer and the descriptors that come with it; an answer that is not
    /// "OK" is an error here.
    fn receive_answer(&self, conn: BorrowedFd<'_>) -> Result<(Message, Vec<OwnedFd>)> {
        let mut buf = [0u8; MESSAGE_LEN];
        let got = sock::recv_with_fds(conn, &mut buf, self.opts.timeout, ANSWER_SPIN).map_err(
            |e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timeout(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                    self.err(ServiceError::ServerDied {
                        name: self.name.clone(),
                        detail: format!("the connection was reset ({e})"),
                    })
                }
                _ => self.io(
                    format!("receiving from the publisher of {:?}", self.name),
                    e,
                ),
            },
        )?;
        let name = self.name.clone();
        let msg = match Message::decode(&buf[..got.len]) {
            Ok(m) => m,
            Err(WireError::BadMagic) => {
                return Err(self.protocol("the answer does not start with the service magic".into()))
            }
            Err(WireError::Version(found)) => {
                return Err(self.err(ServiceError::VersionMismatch {
                    name,
                    found,
                    expected: PROTOCOL_VERSION,
                }))
            }
            Err(WireError::Short(n) | WireError::Truncated(n)) => {
                return Err(self.err(ServiceError::ServerDied {
                    name,
                    detail: format!("it closed the connection after {n} of {MESSAGE_LEN} bytes"),
                }))
            }
            Err(WireError::Malformed(detail)) => return Err(self.protocol(detail)),
        };
        if msg.status != STATUS_OK {
            return Err(self.err(ServiceError::Refused {
                name,
                by: RefusedBy::Server,
                uid: msg.client_uid,
                gid: me_gid(),
            }));
        }
        if got.fds_truncated || got.fds.len() != 2 {
            return Err(self.protocol(format!(
                "expected 2 descriptors, received {}",
                got.fds.len()
            )));
        }
        Ok((msg, got.fds))
    }

    /// Step 4: the arena's descriptor must be a memfd with the write, grow, shrink and seal
    /// seals, as long as the answer says; the generation page must map (if `map_page`).
    fn check_descriptors(
        &self,
        msg: &Message,
        fds: Vec<OwnedFd>,
        map_page: bool,
    ) -> Result<Descriptors> {
        let mut fds = fds.into_iter();
        let (Some(arena_fd), Some(page_fd)) = (fds.next(), fds.next()) else {
            return Err(self.protocol("expected 2 descriptors".into()));
        };
        let not_sealed = |detail: String| {
            self.err(ServiceError::NotSealedMemfd {
                name: self.name.clone(),
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
            self.io(
                format!("inspecting the arena published as {:?}", self.name),
                e,
            )
        })?;
        if !info.is_regular || info.size < msg.arena_len {
            return Err(not_sealed(format!(
                "the arena descriptor holds {} bytes, the answer says {}",
                info.size, msg.arena_len
            )));
        }
        let page = if map_page {
            Some(sock::CounterView::new(page_fd).map_err(not_sealed)?)
        } else {
            None
        };
        Ok(Descriptors {
            arena_fd,
            info,
            seals,
            page,
        })
    }

    /// Whether the rows would be taken, so whether to read them at all: only where the program
    /// opted in ([`ConnectOptions::trust_publisher_rows`]), from a publisher of this user and of
    /// this build. A listener in this process counts only if one of this process's own
    /// publishers serves the name (any thread could bind a name nobody here publishes).
    fn rows_wanted(&self, sock_name: &str, peer: sock::PeerCred) -> bool {
        self.opts.trust_rows
            && !self.opts.always_validate
            && self.server_uid == os::euid()
            && os::build_id_known()
            && (peer.pid != os::pid() || super::publisher::served_here(sock_name))
    }

    /// Step 5: the publisher's build identity and trust rows, if its answer says they follow.
    fn receive_rows(&self, conn: BorrowedFd<'_>, msg: &Message) -> Result<Option<Rows>> {
        if msg.flags & FLAG_TRUST_ROWS == 0 {
            return Ok(None);
        }
        let mut b = vec![0u8; BUILD_ID_LEN + msg.row_count as usize * ROW_LEN];
        let got = match sock::recv_with_fds(conn, &mut b, self.opts.timeout, ANSWER_SPIN) {
            Ok(got) => got,
            // The rows came late or not at all: the publisher gave up on this connection (it
            // drops a client not served within its timeout). Validate instead.
            Err(_) => return Ok(None),
        };
        if !got.fds.is_empty() {
            return Err(self.protocol(format!(
                "{} descriptors came with the trust rows",
                got.fds.len()
            )));
        }
        if got.len != b.len() {
            // The rows ended short: as above, validate instead.
            return Ok(None);
        }
        Ok(decode_rows(&b))
    }

    /// Step 6: open the arena from its memfd, check it is the one the answer names, and take
    /// the rows of a publisher of this very build.
    fn open(
        self,
        msg: Message,
        d: Descriptors,
        rows: Option<Rows>,
    ) -> Result<Fetched<Option<sock::CounterView>>> {
        let arena = OpenOptions::new()
            .always_validate(self.opts.always_validate)
            .allow_foreign_owner(self.server_uid != os::euid())
            .open_fd_with(d.arena_fd, d.info, d.seals)?;
        if arena.id().to_bytes() != msg.arena_id {
            return Err(self.protocol(format!(
                "the arena received has id {}, the answer names {}",
                arena.id(),
                crate::ArenaId::from_bytes(msg.arena_id)
            )));
        }
        // Rows were read only where the program opted in (`rows_wanted`), from a publisher of
        // this user, on the sealed memfd checked in step 4; the build identity is the
        // publisher's word, part of what the opt-in's promise covers.
        if let Some((build_id, rows)) = rows {
            if build_id == os::build_id() {
                arena.accept_rows(&rows);
            }
        }
        Ok(Fetched {
            name: self.name,
            arena,
            generation: msg.generation,
            page: d.page,
        })
    }
}

/// The uids other than `asked` whose publishers serve `name` on this host (listening on
/// `shmarena/<uid>/<name>` in `/proc/net/unix`), for the hint of a `NotPublished` error.
fn other_publishers(name: &str, asked: u32) -> Vec<u32> {
    let mut uids: Vec<u32> = os::procfs::abstract_listeners("shmarena/")
        .iter()
        .filter_map(|l| {
            let (uid, rest) = l.name.strip_prefix("shmarena/")?.split_once('/')?;
            (rest == name).then(|| uid.parse::<u32>().ok())?
        })
        .filter(|&uid| uid != asked)
        .collect();
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// The build identity and rows that follow an answer.
type Rows = ([u8; 16], Vec<crate::trust::Row>);

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

/// What a handshake brought: the arena, its generation, and the generation page (`P` is
/// `Option<CounterView>` until a subscription's fetch has checked it is there).
struct Fetched<P = sock::CounterView> {
    name: String,
    arena: Arena,
    generation: u64,
    page: P,
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
