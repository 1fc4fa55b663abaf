//! The publishing side: a listening socket served by a thread the [`Publisher`] owns.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::wire::{
    encode_rows, Message, FLAG_TRUST_ROWS, PROTOCOL_VERSION, STATUS_OK, STATUS_REFUSED,
};
use super::{socket_name, ServiceError};
use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::os;
use crate::os::service as sock;

/// Options for publishing: who may connect, and how long one client may hold the server.
///
/// ```no_run
/// # fn main() -> shmarena::Result<()> {
/// # let arena = shmarena::ArenaOptions::new().create()?.seal()?;
/// let publisher = shmarena::service::PublishOptions::new()
///     .allow_uid(1001)     // besides this process's own uid
///     .allow_gid(100)      // any client whose primary gid is 100
///     .publish("lexicon", arena)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct PublishOptions {
    allow_uids: Vec<u32>,
    allow_gids: Vec<u32>,
    timeout: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            allow_uids: Vec::new(),
            allow_gids: Vec::new(),
            timeout: Duration::from_secs(1),
        }
    }
}

impl PublishOptions {
    /// Default options: serve only this process's effective uid; 1 s per connection.
    pub fn new() -> PublishOptions {
        PublishOptions::default()
    }

    /// Also serve clients running as `uid` (they connect with
    /// [`ConnectOptions::server_uid`](super::ConnectOptions::server_uid) set to this uid).
    pub fn allow_uid(mut self, uid: u32) -> PublishOptions {
        self.allow_uids.push(uid);
        self
    }

    /// Also serve clients whose primary gid (as `SO_PEERCRED` reports it) is `gid`, or who
    /// have `gid` among their supplementary groups. The supplementary groups are read from the
    /// `Groups:` line of `/proc/PID/status` of the pid `SO_PEERCRED` names, and believed only if
    /// that process still runs as the uid `SO_PEERCRED` reports (the client is waiting for the
    /// answer, so its pid is not free for reuse); if the file cannot be read, only the primary
    /// gid counts.
    pub fn allow_gid(mut self, gid: u32) -> PublishOptions {
        self.allow_gids.push(gid);
        self
    }

    /// The longest one connection may take to be served (default 1 s). The serving thread
    /// never waits for one client: what does not fit a client's socket buffer at once (the
    /// trust rows of a large arena) is sent as the client reads, between other clients; a
    /// client still not served after this long is dropped (it then validates what it reads).
    pub fn timeout(mut self, timeout: Duration) -> PublishOptions {
        self.timeout = timeout;
        self
    }

    /// Publishes `arena` (a sealed memfd) as `name`: binds `shmarena/<uid>/<name>` in the
    /// abstract namespace and starts the serving thread. Generation 1.
    pub fn publish(self, name: &str, arena: Arena) -> Result<Publisher> {
        let me = os::euid();
        let sock_name = socket_name(me, name)?;
        let name = name.strip_prefix('/').unwrap_or(name).to_owned();
        check_publishable(&name, &arena)?;
        let identity = new_identity();
        let page = sock::CounterPage::new(1, identity)
            .map_err(|e| io_err(&name, "creating the generation page", e))?;
        let page_ro = sock::reopen_ro(page.fd())
            .map_err(|e| io_err(&name, "reopening the generation page read-only", e))?;
        let listener = sock::listen_abstract(sock_name.as_bytes()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                let by_this_process = LOCAL_NAMES.lock().contains(&sock_name);
                Error::Service(ServiceError::AlreadyPublished {
                    name: name.clone(),
                    by_this_process,
                })
            } else {
                io_err(&name, "listening", e)
            }
        })?;
        let (stop_r, stop_w) = sock::pipe().map_err(|e| io_err(&name, "creating a pipe", e))?;
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                arena,
                generation: 1,
            }),
            page,
            page_ro,
            uid: me,
            identity,
            opts: self,
            serve_error: Mutex::new(None),
            rows_cache: Mutex::new(None),
        });
        let served = Arc::clone(&inner);
        let served_name = sock_name.clone();
        // Listed before the thread serves, and unlisted before its listener closes (when the
        // thread ends, whether `drop` stopped it or it failed): once the name is free, any
        // thread of this process could bind it, and must not count as this publisher.
        LOCAL_NAMES.lock().push(sock_name.clone());
        let thread = std::thread::Builder::new()
            .name(format!("shmarena-publish-{name}"))
            .spawn(move || {
                serve(&served, &listener, stop_r);
                forget_local(&served_name);
                drop(listener);
            })
            .map_err(|e| {
                forget_local(&sock_name);
                io_err(&name, "starting the serving thread", e)
            })?;
        Ok(Publisher {
            inner,
            name,
            stop_w,
            thread: Some(thread),
        })
    }
}

/// The socket names the publishers of this process serve. A client in this process takes trust
/// rows from a listener of its own process only when it is one of these: any thread could bind
/// a name no publisher of this process holds and answer with forged rows.
static LOCAL_NAMES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Takes `sock_name` off the names this process serves (one entry: a name is bound once).
fn forget_local(sock_name: &str) {
    let mut names = LOCAL_NAMES.lock();
    if let Some(i) = names.iter().position(|n| n == sock_name) {
        names.swap_remove(i);
    }
}

/// Whether a publisher of this process serves socket name `sock_name`.
pub(crate) fn served_here(sock_name: &str) -> bool {
    LOCAL_NAMES.lock().iter().any(|n| n == sock_name)
}

/// A random publisher identity (never zero, which marks a page without one). Falls back to
/// the time and pid if the kernel's random source fails.
fn new_identity() -> u128 {
    let mut b = [0u8; 16];
    let random = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
        .is_ok_and(|n| n == b.len());
    let id = if random {
        u128::from_le_bytes(b)
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        now ^ (u128::from(os::pid()) << 96)
    };
    id.max(1)
}

fn io_err(name: &str, what: &str, source: std::io::Error) -> Error {
    Error::Service(ServiceError::Io {
        context: format!("{what} for published name {name:?}"),
        source,
    })
}

/// Whether `arena` is a sealed memfd; an error otherwise.
fn check_publishable(name: &str, arena: &Arena) -> Result<()> {
    let seals = sock::seals_of(arena.as_fd());
    if !(seals.immutable() && seals.seal && sock::is_memfd(arena.as_fd())) {
        return Err(Error::Service(ServiceError::NotSealedMemfd {
            name: name.to_owned(),
            detail: format!(
                "{} is not a memfd with the write, grow, shrink and seal seals \
                 (load a file or segment into one with Arena::load_file)",
                arena.locator()
            ),
        }));
    }
    Ok(())
}

struct State {
    arena: Arena,
    generation: u64,
}

struct Inner {
    state: Mutex<State>,
    page: sock::CounterPage,
    /// A read-only open of the page, the descriptor readers receive.
    page_ro: OwnedFd,
    uid: u32,
    /// The random identity written in the generation page.
    identity: u128,
    opts: PublishOptions,
    /// The last error of the serving loop itself (not of one client), cleared on success.
    serve_error: Mutex<Option<String>>,
    /// The trust rows last sent, encoded, shared by every connection still being sent them:
    /// (arena, its rows version, row count, encoded bytes). Computing the rows costs a pass
    /// over every entry; this keeps that off the path of each connection.
    rows_cache: Mutex<Option<RowsCache>>,
}

/// Serves a sealed memfd arena under a name until dropped; [`Publisher::publish`] replaces it
/// with a new generation.
///
/// Dropping the publisher stops the serving thread and closes the socket, so the name
/// disappears; readers that connected keep their mappings. If the process dies instead (even
/// by SIGKILL), the kernel closes the socket just the same.
pub struct Publisher {
    inner: Arc<Inner>,
    name: String,
    stop_w: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("name", &self.name)
            .field("generation", &self.generation())
            .finish()
    }
}

impl Publisher {
    /// Publishes `arena` as `name` with default [`PublishOptions`].
    pub fn new(name: &str, arena: Arena) -> Result<Publisher> {
        PublishOptions::new().publish(name, arena)
    }

    /// Replaces the arena served with `arena` (a sealed memfd) and returns the new generation.
    /// Clients that connect from now on get it; subscriptions see the change on their next
    /// [`current`](super::Subscription::current). The old arena is freed by the kernel when the
    /// last reader lets go of it.
    pub fn publish(&self, arena: Arena) -> Result<u64> {
        check_publishable(&self.name, &arena)?;
        let old;
        let generation;
        {
            let mut st = self.inner.state.lock();
            st.generation += 1;
            generation = st.generation;
            old = std::mem::replace(&mut st.arena, arena);
            // Under the lock, after the state: whoever sees the new counter and asks gets at
            // least this generation.
            self.inner.page.store(generation as u32);
        }
        drop(old);
        Ok(generation)
    }

    /// The generation being served (1 for the first arena).
    pub fn generation(&self) -> u64 {
        self.inner.state.lock().generation
    }

    /// The arena being served.
    pub fn arena(&self) -> Arena {
        self.inner.state.lock().arena.clone()
    }

    /// The published name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This publisher's identity: a random number drawn when it started, written in the
    /// generation page, so a subscriber tells a restarted publisher (whose generations count
    /// from 1 again) from this one (see [`Subscription::publisher`](super::Subscription::publisher)).
    pub fn identity(&self) -> u128 {
        self.inner.identity
    }

    /// The last error of the serving thread itself, if the latest attempt to accept a client
    /// failed (say, "too many open files"): clients are not being served while it lasts. The
    /// thread backs off (1 ms doubling to 1 s between attempts) and keeps trying; the error is
    /// cleared when a client is accepted again. `None` while all is well. Errors of one client
    /// (it left, it is stuck) are not reported here.
    pub fn serve_error(&self) -> Option<String> {
        self.inner.serve_error.lock().clone()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // The serving thread unlists the name before its listener closes (see `publish`).
        let _ = sock::poke(self.stop_w.as_fd());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The most connections whose trust rows are being sent at once. A client that connects while
/// this many are pending gets its answer without rows (and validates what it reads).
const MAX_PENDING: usize = 64;

/// A connection whose answer went out but whose trust rows did not fit its socket buffer yet.
struct Pending {
    conn: OwnedFd,
    rows: Arc<[u8]>,
    sent: usize,
    deadline: Instant,
}

impl Pending {
    /// Sends what the socket takes now; `true` when the connection is done with (all sent, or
    /// the client failed or left), `false` if more remains.
    fn advance(&mut self) -> bool {
        while self.sent < self.rows.len() {
            match sock::send_some(self.conn.as_fd(), &self.rows[self.sent..]) {
                Ok(0) => return false,
                Ok(n) => self.sent += n,
                Err(_) => return true,
            }
        }
        true
    }

    /// Sends everything, waiting for the client as long as it takes up to the deadline (for
    /// the unit test below, which plays the serving thread).
    #[cfg(test)]
    fn finish(mut self) {
        while !self.advance() && Instant::now() < self.deadline {
            let _ = sock::wait_serving(
                None,
                self.conn.as_fd(),
                &[self.conn.as_fd()],
                Some(Duration::from_millis(10)),
            );
        }
    }
}

/// The serving loop, until `stop` is readable: accept every pending client and answer it at
/// once (one non-blocking `sendmsg`); a client whose trust rows do not fit its socket buffer
/// joins `pending`, and gets more of them each time its socket is writable, until they are all
/// sent or its deadline ([`PublishOptions::timeout`]) passes. One `poll` waits on the listener,
/// the stop pipe and every pending connection: no client is ever waited for alone.
///
/// A failing `accept` (out of descriptors, out of memory) leaves the connection pending, so the
/// listener stays readable: retrying at once would spin. The loop records the error (see
/// [`Publisher::serve_error`]) and leaves the listener out of its `poll` for 1 ms, doubling to
/// 1 s, while it goes on serving the pending connections.
fn serve(inner: &Inner, listener: &OwnedFd, stop: OwnedFd) {
    const MIN_BACKOFF: Duration = Duration::from_millis(1);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    // The page says "serving" while this thread runs, and the kernel marks it if the thread
    // ends without dropping this (the process killed); dropping it marks the page closed.
    let _alive = inner.page.hold_alive();
    let mut backoff = MIN_BACKOFF;
    let mut paused_until: Option<Instant> = None;
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        let now = Instant::now();
        // Clients not served in time are dropped: they see the rows end short and validate.
        pending.retain(|p| p.deadline > now);
        if paused_until.is_some_and(|t| t <= now) {
            paused_until = None;
        }
        let mut wake = pending.iter().map(|p| p.deadline).min();
        if let Some(t) = paused_until {
            wake = Some(wake.map_or(t, |w| w.min(t)));
        }
        let timeout = wake.map(|t| t.saturating_duration_since(now));
        let conns: Vec<_> = pending.iter().map(|p| p.conn.as_fd()).collect();
        let listening = paused_until.is_none().then(|| listener.as_fd());
        let ready = match sock::wait_serving(listening, stop.as_fd(), &conns, timeout) {
            Ok(r) => r,
            Err(e) => {
                *inner.serve_error.lock() = Some(format!("waiting for clients: {e}"));
                drop(conns);
                match sock::wait_stop(stop.as_fd(), backoff) {
                    Ok(false) => {
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                    _ => return,
                }
            }
        };
        drop(conns);
        if ready.stop {
            return;
        }
        let mut k = 0;
        pending.retain_mut(|p| {
            let keep = !(ready.writable.get(k).copied().unwrap_or(false) && p.advance());
            k += 1;
            keep
        });
        if !ready.listener {
            continue;
        }
        loop {
            match sock::accept(listener.as_fd()) {
                Ok(Some(conn)) => {
                    if backoff != MIN_BACKOFF {
                        backoff = MIN_BACKOFF;
                        *inner.serve_error.lock() = None;
                    }
                    // One client's failure (it left, it is stuck) is its own problem.
                    if let Ok(Some(p)) = answer(inner, conn, pending.len() < MAX_PENDING) {
                        pending.push(p);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    *inner.serve_error.lock() = Some(format!("accepting a client: {e}"));
                    paused_until = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    break;
                }
            }
        }
    }
}

/// Whether a client with these credentials may connect.
fn allowed(inner: &Inner, peer: &sock::PeerCred) -> bool {
    if peer.uid == inner.uid
        || inner.opts.allow_uids.contains(&peer.uid)
        || inner.opts.allow_gids.contains(&peer.gid)
    {
        return true;
    }
    if inner.opts.allow_gids.is_empty() {
        return false;
    }
    sock::supplementary_groups(peer.pid, peer.uid)
        .is_some_and(|groups| groups.iter().any(|g| inner.opts.allow_gids.contains(g)))
}

/// See [`Inner::rows_cache`].
struct RowsCache {
    arena: crate::ArenaId,
    version: u64,
    count: u32,
    bytes: Arc<[u8]>,
}

/// The trust rows of `arena` (at most [`MAX_ROWS`](super::wire::MAX_ROWS)), encoded, and their
/// count: from the cache while the arena has gained no row since, computed and encoded again
/// otherwise.
fn encoded_rows(inner: &Inner, arena: &Arena) -> (u32, Arc<[u8]>) {
    // Read before the rows: a row added meanwhile makes the next connection compute again.
    let version = arena.trust_rows_version();
    let mut cache = inner.rows_cache.lock();
    if let Some(c) = &*cache {
        if c.arena == arena.id() && c.version == version {
            return (c.count, Arc::clone(&c.bytes));
        }
    }
    let mut rows = arena.trust_rows();
    rows.truncate(super::wire::MAX_ROWS as usize);
    let count = rows.len() as u32;
    let bytes: Arc<[u8]> = encode_rows(&os::build_id(), &rows).into();
    *cache = Some(RowsCache {
        arena: arena.id(),
        version,
        count,
        bytes: Arc::clone(&bytes),
    });
    (count, bytes)
}

/// Answers one client: the 64-byte message and the descriptors in one non-blocking `sendmsg`
/// (it fits any empty socket buffer), then as much of the trust rows, if any, as the socket
/// takes now; the rest is returned as a [`Pending`] for the serving loop. With `rows_room`
/// false the rows are not offered (the message says so). The server never reads from a client.
fn answer(inner: &Inner, conn: OwnedFd, rows_room: bool) -> std::io::Result<Option<Pending>> {
    let peer = sock::peer_cred(conn.as_fd())?;
    let allowed = allowed(inner, &peer);
    let mut msg = Message {
        version: PROTOCOL_VERSION,
        status: STATUS_REFUSED,
        flags: 0,
        server_uid: inner.uid,
        client_uid: peer.uid,
        generation: 0,
        arena_id: [0; 16],
        arena_len: 0,
        row_count: 0,
    };
    if !allowed {
        sock::send_with_fds(conn.as_fd(), &msg.encode(), &[])?;
        return Ok(None);
    }
    // Hold the state (and so the arena) only while sending: the kernel keeps its own reference
    // to each descriptor in flight.
    let st = inner.state.lock();
    msg.status = STATUS_OK;
    msg.generation = st.generation;
    msg.arena_id = st.arena.id().to_bytes();
    msg.arena_len = st.arena.byte_len();
    // The trust rows: what this process knows valid, for a client of this user (and, the client
    // checks, of the same build). Other users' clients would drop them unread.
    let rows = if rows_room && peer.uid == inner.uid && os::build_id_known() {
        match encoded_rows(inner, &st.arena) {
            (0, _) => None,
            (count, bytes) => {
                msg.flags = FLAG_TRUST_ROWS;
                msg.row_count = count;
                Some(bytes)
            }
        }
    } else {
        None
    };
    let fds = [st.arena.as_fd(), inner.page_ro.as_fd()];
    sock::send_with_fds(conn.as_fd(), &msg.encode(), &fds)?;
    drop(st);
    let Some(rows) = rows else {
        return Ok(None);
    };
    let mut p = Pending {
        conn,
        rows,
        sent: 0,
        deadline: Instant::now() + inner.opts.timeout,
    };
    Ok((!p.advance()).then_some(p))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use parking_lot::Mutex;

    use super::{answer, sock, Inner, PublishOptions, State};
    use crate::ArenaOptions;

    /// A thread of this process binds a name that no publisher of this process serves and
    /// answers as a publisher would, trust rows included (here the genuine rows of the arena
    /// it hands over; a forger would send rows for bytes it made up). The client must not take
    /// rows from it: any safe code can bind an abstract name and speak the protocol.
    #[test]
    fn rows_from_a_listener_no_publisher_here_serves_are_not_taken() {
        let mut b = ArenaOptions::new().create().unwrap();
        b.put("v", &vec![1u32, 2, 3]).unwrap();
        let arena = b.seal().unwrap();
        assert!(arena.trusts::<Vec<u32>>("v"));
        let me = crate::os::euid();
        let name = format!("forged-listener-{}", std::process::id());
        let sock_name = super::socket_name(me, &name).unwrap();
        let listener = sock::listen_abstract(sock_name.as_bytes()).unwrap();
        let page = sock::CounterPage::new(1, 7).unwrap();
        let page_ro = sock::reopen_ro(page.fd()).unwrap();
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                arena,
                generation: 1,
            }),
            page,
            page_ro,
            uid: me,
            identity: 7,
            opts: PublishOptions::new(),
            serve_error: Mutex::new(None),
            rows_cache: Mutex::new(None),
        });
        let served = Arc::clone(&inner);
        let server = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(20);
            while Instant::now() < until {
                if let Some(conn) = sock::accept(listener.as_fd()).unwrap() {
                    if let Some(rest) = answer(&served, conn, true).unwrap() {
                        rest.finish();
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            panic!("no client came");
        });
        // SAFETY: the rows this listener sends are genuine (`answer` on an arena built here);
        // the opt-in is what makes the client consider them, and the check under test must
        // still refuse a listener that no publisher of this process serves.
        let opts = unsafe { crate::ConnectOptions::new().trust_publisher_rows() };
        let got = opts.connect(&name).unwrap();
        server.join().unwrap();
        assert!(
            !got.trusts::<Vec<u32>>("v"),
            "rows taken from a listener no publisher of this process serves"
        );
        // Validated on this first read instead.
        assert_eq!(got.get::<Vec<u32>>("v").unwrap().len(), 3);
    }
}
