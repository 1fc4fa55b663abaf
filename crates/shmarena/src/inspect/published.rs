//! Names published with [`Publisher`](crate::service::Publisher) or `arena-serve`: found in
//! `/proc/net/unix`, tied to their process through `/proc/*/fd`, and asked for their
//! generation and size with an ordinary client handshake.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use super::scan::{FileKey, Holder, Scan};
use crate::error::{Error, Result};
use crate::locator::Locator;
use crate::os;
use crate::os::procfs;
use crate::os::service as sock;
use crate::service::wire::{Message, STATUS_OK};
use crate::service::{socket_name, RefusedBy, ServiceError, MESSAGE_LEN};
use crate::ArenaId;

/// How long [`published`] waits for each publisher's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// One published name, as [`published`] finds it.
#[derive(Clone, Debug)]
pub struct Published {
    /// The name clients connect to (`lexicon`).
    pub name: String,
    /// The uid whose namespace it is in (the `<uid>` of `shmarena/<uid>/<name>`).
    pub uid: u32,
    /// The publishing process: the one holding the listening socket (`/proc/PID/fd`), or, if
    /// that could not be read, the pid the kernel reports for the listener (`SO_PEERCRED`).
    pub publisher: Option<u32>,
    /// The publisher's command name (empty if unknown).
    pub command: String,
    /// The generation being served, if the publisher answered.
    pub generation: Option<u64>,
    /// Size of the arena being served in bytes, if the publisher answered.
    pub size: Option<u64>,
    /// Id of the arena being served, if the publisher answered.
    pub arena_id: Option<ArenaId>,
    /// Where the publisher holds the arena being served (`memfd:PID:FD`), if it answered and
    /// its descriptors could be read. This names the generation only until the next one is
    /// published; `pub:NAME` (`arena-inspect`) follows the name.
    pub serving: Option<Locator>,
    /// The processes other than the publisher (and this one) that map the arena being served
    /// or hold a descriptor to it: the connected readers of this generation. Only processes
    /// this user may inspect are seen.
    pub readers: Vec<Holder>,
    /// Why the publisher could not be asked (refused this user, did not answer, ...).
    pub error: Option<String>,
}

/// What a publisher said to one handshake.
struct Answer {
    /// The listener's pid (`SO_PEERCRED`), if the connection got that far.
    peer_pid: Option<u32>,
    reply: std::result::Result<Reply, ServiceError>,
}

/// A publisher's answer: what it serves, and the arena's descriptor.
struct Reply {
    generation: u64,
    size: u64,
    arena_id: ArenaId,
    /// The descriptor sent with the answer (closed when dropped; never mapped here).
    fd: Option<OwnedFd>,
}

/// Every name published on this machine (in this network namespace), sorted by uid and name.
///
/// Each publisher is asked for what it serves exactly as a client would (a connect is
/// harmless: the publisher only sends); the descriptor it sends is `fstat`ed and closed, never
/// mapped. Names of other users are listed; their publishers normally refuse this user, which
/// [`Published::error`] then says.
///
/// ```no_run
/// for p in shmarena::inspect::published() {
///     println!("{} pid={:?} generation={:?} readers={}", p.name, p.publisher, p.generation, p.readers.len());
/// }
/// ```
pub fn published() -> Vec<Published> {
    let listeners = procfs::abstract_listeners("shmarena/");
    if listeners.is_empty() {
        return Vec::new();
    }
    // Which process holds each listening socket.
    let wanted: HashSet<u64> = listeners.iter().map(|l| l.inode).collect();
    let mut holder_of: BTreeMap<u64, u32> = BTreeMap::new();
    let mut pids = os::pids();
    pids.sort_unstable();
    for pid in pids {
        for (_, link) in os::fd_links(pid) {
            if let Some(ino) = link.to_str().and_then(procfs::socket_inode) {
                if wanted.contains(&ino) {
                    holder_of.entry(ino).or_insert(pid);
                }
            }
        }
    }

    let mut found = Vec::new();
    for l in &listeners {
        let Some((uid, name)) = l
            .name
            .strip_prefix("shmarena/")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(uid, name)| Some((uid.parse::<u32>().ok()?, name.to_owned())))
        else {
            continue;
        };
        let Answer { peer_pid, reply } = ask(&l.name, &name, uid);
        let key = reply.as_ref().ok().and_then(Reply::key);
        // The descriptor was only `fstat`ed: it closes here, before the scan, so that this
        // process is not among the readers.
        let reply = reply.map(|r| Reply { fd: None, ..r });
        found.push((l.inode, uid, name, peer_pid, reply, key));
    }
    let keys: HashSet<FileKey> = found.iter().filter_map(|f| f.5).collect();
    let scan = if keys.is_empty() {
        Scan::default()
    } else {
        Scan::run(&keys)
    };
    let me = os::pid();
    let mut out: Vec<Published> = found
        .into_iter()
        .map(|(inode, uid, name, peer_pid, reply, key)| {
            let publisher = holder_of.get(&inode).copied().or(peer_pid);
            let (reply, error) = match reply {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let readers = key.map_or_else(Vec::new, |k| {
                scan.holders(&k)
                    .into_iter()
                    .filter(|h| Some(h.pid) != publisher && h.pid != me)
                    .collect()
            });
            let serving = match (publisher, key) {
                (Some(pid), Some(k)) => memfd_of(pid, &k),
                _ => None,
            };
            Published {
                name,
                uid,
                publisher,
                command: publisher.map(os::command).unwrap_or_default(),
                generation: reply.as_ref().map(|r| r.generation),
                size: reply.as_ref().map(|r| r.size),
                arena_id: reply.as_ref().map(|r| r.arena_id),
                serving,
                readers,
                error,
            }
        })
        .collect();
    out.sort_by(|a, b| (a.uid, &a.name).cmp(&(b.uid, &b.name)));
    out
}

impl Reply {
    fn key(&self) -> Option<FileKey> {
        let fd = self.fd.as_ref()?.try_clone().ok()?;
        File::from(fd).metadata().ok().map(|m| FileKey::of(&m))
    }
}

/// Where process `pid` holds the file `key` as a memfd arena: `memfd:PID:FD`, the lowest such
/// descriptor; `None` if it holds none or its descriptors cannot be read.
fn memfd_of(pid: u32, key: &FileKey) -> Option<Locator> {
    os::fd_links(pid)
        .into_iter()
        .filter(|(_, link)| link.to_str().is_some_and(super::scan::is_arena_memfd))
        .filter(|(fd, _)| {
            std::fs::metadata(os::fd_path(pid, *fd)).is_ok_and(|m| FileKey::of(&m) == *key)
        })
        .map(|(fd, _)| fd)
        .min()
        .map(|fd| Locator::Memfd { pid, fd })
}

/// One client handshake with the listener `socket` of the published `name` in the namespace
/// of `uid`: the same first step as [`connect`](crate::connect), without mapping anything.
fn ask(socket: &str, name: &str, uid: u32) -> Answer {
    let mut peer_pid = None;
    let reply = handshake(socket, name, uid, &mut peer_pid);
    Answer { peer_pid, reply }
}

fn handshake(
    socket: &str,
    name: &str,
    uid: u32,
    peer_pid: &mut Option<u32>,
) -> std::result::Result<Reply, ServiceError> {
    let name = name.to_owned();
    let timeout = |name: String| ServiceError::Timeout {
        name,
        after: ASK_TIMEOUT,
    };
    let conn = sock::connect_abstract(socket.as_bytes(), ASK_TIMEOUT).map_err(|e| {
        match rustix::io::Errno::from_io_error(&e) {
            Some(rustix::io::Errno::CONNREFUSED | rustix::io::Errno::NOENT) => {
                ServiceError::NotPublished { name: name.clone() }
            }
            Some(rustix::io::Errno::AGAIN | rustix::io::Errno::TIMEDOUT) => timeout(name.clone()),
            _ => ServiceError::Io {
                context: format!("connecting to published name {name:?}"),
                source: e,
            },
        }
    })?;
    let peer = sock::peer_cred(conn.as_fd()).map_err(|e| ServiceError::Io {
        context: format!("reading the credentials of the publisher of {name:?}"),
        source: e,
    })?;
    *peer_pid = Some(peer.pid);
    if peer.uid != uid {
        return Err(ServiceError::Refused {
            name,
            by: RefusedBy::Client,
            uid: peer.uid,
            gid: peer.gid,
        });
    }
    let mut buf = [0u8; MESSAGE_LEN];
    let got =
        sock::recv_with_fds(conn.as_fd(), &mut buf, ASK_TIMEOUT, Duration::ZERO).map_err(|e| {
            match e.kind() {
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                    timeout(name.clone())
                }
                _ => ServiceError::ServerDied {
                    name: name.clone(),
                    detail: e.to_string(),
                },
            }
        })?;
    let msg = Message::decode(&buf[..got.len]).map_err(|e| ServiceError::Protocol {
        name: name.clone(),
        detail: format!("the answer does not decode: {e:?}"),
    })?;
    if msg.status != STATUS_OK {
        return Err(ServiceError::Refused {
            name,
            by: RefusedBy::Server,
            uid: msg.client_uid,
            gid: rustix::process::getegid().as_raw(),
        });
    }
    Ok(Reply {
        generation: msg.generation,
        size: msg.arena_len,
        arena_id: ArenaId::from_bytes(msg.arena_id),
        fd: got.fds.into_iter().next(),
    })
}

/// The generation being served under a published name of this user, as one client handshake
/// ([`serving`]) found it. This process holds the arena's descriptor until this is dropped, so
/// that generation stays readable through [`locator`](Self::locator) whatever the publisher
/// publishes meanwhile.
#[derive(Debug)]
pub struct Served {
    /// The published name.
    pub name: String,
    /// The publishing process (the listener's `SO_PEERCRED` pid).
    pub publisher: u32,
    /// The generation being served.
    pub generation: u64,
    /// Size of the arena in bytes, as the publisher says.
    pub size: u64,
    /// Id of the arena, as the publisher says.
    pub arena_id: ArenaId,
    /// Where the publisher holds it (`memfd:PID:FD`), if its descriptors could be read. This
    /// names the generation only until the publisher publishes the next one.
    pub publisher_locator: Option<Locator>,
    /// Device and inode of the arena's memfd.
    pub key: FileKey,
    fd: OwnedFd,
}

impl Served {
    /// The descriptor this process holds, as a locator (`memfd:SELF:FD`): it names this
    /// generation for as long as `self` lives.
    pub fn locator(&self) -> Locator {
        Locator::Memfd {
            pid: os::pid(),
            fd: self.fd.as_raw_fd(),
        }
    }
}

/// Asks the publisher of `name` (this user's namespace) what it serves, with the handshake
/// [`published`] uses, and keeps the arena's descriptor it sends: the way `arena-inspect`
/// reaches `pub:NAME`.
///
/// Errors are [`Error::Service`]: [`ServiceError::NotPublished`] if nobody listens,
/// [`ServiceError::Refused`], [`ServiceError::Timeout`], [`ServiceError::ServerDied`],
/// [`ServiceError::Protocol`] (among them an answer with no descriptor).
///
/// ```no_run
/// # fn main() -> shmarena::Result<()> {
/// let served = shmarena::inspect::serving("lexicon")?;
/// let arena = shmarena::OpenOptions::new().open(&served.locator())?;
/// assert_eq!(arena.id(), served.arena_id);
/// # Ok(()) }
/// ```
pub fn serving(name: &str) -> Result<Served> {
    let uid = os::euid();
    let socket = socket_name(uid, name)?;
    let name = name.strip_prefix('/').unwrap_or(name);
    let Answer { peer_pid, reply } = ask(&socket, name, uid);
    let reply = reply?;
    let protocol = |detail: &str| {
        Error::Service(ServiceError::Protocol {
            name: name.to_owned(),
            detail: detail.to_owned(),
        })
    };
    let key = reply
        .key()
        .ok_or_else(|| protocol("the answer carries no readable descriptor"))?;
    let fd = reply
        .fd
        .ok_or_else(|| protocol("the answer carries no descriptor"))?;
    let publisher = peer_pid.ok_or_else(|| protocol("no publisher credentials"))?;
    Ok(Served {
        name: name.to_owned(),
        publisher,
        generation: reply.generation,
        size: reply.size,
        arena_id: reply.arena_id,
        publisher_locator: memfd_of(publisher, &key),
        key,
        fd,
    })
}
