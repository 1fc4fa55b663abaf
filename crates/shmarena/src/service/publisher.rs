//! The publishing side: a listening socket served by a thread the [`Publisher`] owns.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::wire::{Message, FLAG_BUILDER_VALIDATED, PROTOCOL_VERSION, STATUS_OK, STATUS_REFUSED};
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

    /// Also serve clients whose primary gid (as `SO_PEERCRED` reports it) is `gid`.
    pub fn allow_gid(mut self, gid: u32) -> PublishOptions {
        self.allow_gids.push(gid);
        self
    }

    /// The longest one connection may take to be served (the send timeout). The server never
    /// reads from a client, so a stuck client cannot hold it longer.
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
        let flags = check_publishable(&name, &arena)?;
        let page = sock::CounterPage::new(1)
            .map_err(|e| io_err(&name, "creating the generation page", e))?;
        let page_ro = sock::reopen_ro(page.fd())
            .map_err(|e| io_err(&name, "reopening the generation page read-only", e))?;
        let listener = sock::listen_abstract(sock_name.as_bytes()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                Error::Service(ServiceError::AlreadyPublished { name: name.clone() })
            } else {
                io_err(&name, "listening", e)
            }
        })?;
        let (stop_r, stop_w) = sock::pipe().map_err(|e| io_err(&name, "creating a pipe", e))?;
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                arena,
                generation: 1,
                flags,
            }),
            page,
            page_ro,
            uid: me,
            opts: self,
        });
        let served = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name(format!("shmarena-publish-{name}"))
            .spawn(move || serve(&served, listener, stop_r))
            .map_err(|e| io_err(&name, "starting the serving thread", e))?;
        Ok(Publisher {
            inner,
            name,
            stop_w,
            thread: Some(thread),
        })
    }
}

fn io_err(name: &str, what: &str, source: std::io::Error) -> Error {
    Error::Service(ServiceError::Io {
        context: format!("{what} for published name {name:?}"),
        source,
    })
}

/// The wire flags for `arena`, if it is a sealed memfd; an error otherwise.
fn check_publishable(name: &str, arena: &Arena) -> Result<u32> {
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
    let validated = arena.is_kernel_sealed() && !arena.validates_always();
    Ok(if validated { FLAG_BUILDER_VALIDATED } else { 0 })
}

struct State {
    arena: Arena,
    generation: u64,
    flags: u32,
}

struct Inner {
    state: Mutex<State>,
    page: sock::CounterPage,
    /// A read-only open of the page, the descriptor readers receive.
    page_ro: OwnedFd,
    uid: u32,
    opts: PublishOptions,
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
        let flags = check_publishable(&self.name, &arena)?;
        let old;
        let generation;
        {
            let mut st = self.inner.state.lock();
            st.generation += 1;
            generation = st.generation;
            st.flags = flags;
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
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = sock::poke(self.stop_w.as_fd());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The serving loop: accept every pending client, answer it, close; until `stop` is readable.
fn serve(inner: &Inner, listener: OwnedFd, stop: OwnedFd) {
    loop {
        let (ready, stopped) = match sock::wait_readable(listener.as_fd(), stop.as_fd()) {
            Ok(r) => r,
            Err(_) => return,
        };
        if stopped {
            return;
        }
        if !ready {
            continue;
        }
        while let Ok(Some(conn)) = sock::accept(listener.as_fd()) {
            // One client's failure (it left, it is stuck) is its own problem.
            let _ = answer(inner, &conn);
        }
    }
}

fn answer(inner: &Inner, conn: &OwnedFd) -> std::io::Result<()> {
    sock::set_timeouts(conn.as_fd(), inner.opts.timeout)?;
    let peer = sock::peer_cred(conn.as_fd())?;
    let allowed = peer.uid == inner.uid
        || inner.opts.allow_uids.contains(&peer.uid)
        || inner.opts.allow_gids.contains(&peer.gid);
    let mut msg = Message {
        version: PROTOCOL_VERSION,
        status: STATUS_REFUSED,
        flags: 0,
        server_uid: inner.uid,
        client_uid: peer.uid,
        generation: 0,
        arena_id: [0; 16],
        arena_len: 0,
    };
    if !allowed {
        return sock::send_with_fds(conn.as_fd(), &msg.encode(), &[]);
    }
    // Hold the state (and so the arena) only while sending: the kernel keeps its own reference
    // to each descriptor in flight.
    let st = inner.state.lock();
    msg.status = STATUS_OK;
    msg.flags = st.flags;
    msg.generation = st.generation;
    msg.arena_id = st.arena.id().to_bytes();
    msg.arena_len = st.arena.byte_len();
    let fds = [st.arena.as_fd(), inner.page_ro.as_fd()];
    sock::send_with_fds(conn.as_fd(), &msg.encode(), &fds)
}
