//! Names published with [`Publisher`](crate::service::Publisher) or `arena-serve`: found in
//! `/proc/net/unix`, tied to their process through `/proc/*/fd`, and asked for their
//! generation and size with an ordinary client handshake.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::fd::AsFd;
use std::time::Duration;

use super::scan::{FileKey, Holder, Scan};
use crate::os;
use crate::os::procfs;
use crate::os::service as sock;
use crate::service::wire::{Message, STATUS_OK};
use crate::service::MESSAGE_LEN;
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
    /// The processes other than the publisher (and this one) that map the arena being served
    /// or hold a descriptor to it: the connected readers of this generation. Only processes
    /// this user may inspect are seen.
    pub readers: Vec<Holder>,
    /// Why the publisher could not be asked (refused this user, did not answer, ...).
    pub error: Option<String>,
}

/// What a publisher said.
struct Answer {
    peer_pid: Option<u32>,
    generation: Option<u64>,
    size: Option<u64>,
    arena_id: Option<ArenaId>,
    key: Option<FileKey>,
    error: Option<String>,
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
        let answer = ask(&l.name, uid);
        found.push((l.inode, uid, name, answer));
    }
    // The descriptors received are closed by now; find who else holds each arena.
    let keys: HashSet<FileKey> = found.iter().filter_map(|f| f.3.key).collect();
    let scan = if keys.is_empty() {
        Scan::default()
    } else {
        Scan::run(&keys)
    };
    let me = os::pid();
    let mut out: Vec<Published> = found
        .into_iter()
        .map(|(inode, uid, name, a)| {
            let publisher = holder_of.get(&inode).copied().or(a.peer_pid);
            let readers = a.key.map_or_else(Vec::new, |k| {
                scan.holders(&k)
                    .into_iter()
                    .filter(|h| Some(h.pid) != publisher && h.pid != me)
                    .collect()
            });
            Published {
                name,
                uid,
                publisher,
                command: publisher.map(os::command).unwrap_or_default(),
                generation: a.generation,
                size: a.size,
                arena_id: a.arena_id,
                readers,
                error: a.error,
            }
        })
        .collect();
    out.sort_by(|a, b| (a.uid, &a.name).cmp(&(b.uid, &b.name)));
    out
}

/// One client handshake with the listener `socket` in the namespace of `uid`.
fn ask(socket: &str, uid: u32) -> Answer {
    let mut a = Answer {
        peer_pid: None,
        generation: None,
        size: None,
        arena_id: None,
        key: None,
        error: None,
    };
    let conn = match sock::connect_abstract(socket.as_bytes(), ASK_TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            a.error = Some(format!("connecting: {e}"));
            return a;
        }
    };
    match sock::peer_cred(conn.as_fd()) {
        Ok(peer) => {
            a.peer_pid = Some(peer.pid);
            if peer.uid != uid {
                a.error = Some(format!(
                    "the listener runs as uid {}, not {uid}: a squatter on the name",
                    peer.uid
                ));
                return a;
            }
        }
        Err(e) => {
            a.error = Some(format!("reading the publisher's credentials: {e}"));
            return a;
        }
    }
    let mut buf = [0u8; MESSAGE_LEN];
    let got = match sock::recv_with_fds(conn.as_fd(), &mut buf, ASK_TIMEOUT, Duration::ZERO) {
        Ok(g) => g,
        Err(e) => {
            a.error = Some(format!("receiving the answer: {e}"));
            return a;
        }
    };
    let msg = match Message::decode(&buf[..got.len]) {
        Ok(m) => m,
        Err(e) => {
            a.error = Some(format!("the answer does not decode: {e:?}"));
            return a;
        }
    };
    if msg.status != STATUS_OK {
        a.error = Some(format!(
            "the publisher refused this user (uid {})",
            msg.client_uid
        ));
        return a;
    }
    a.generation = Some(msg.generation);
    a.size = Some(msg.arena_len);
    a.arena_id = Some(ArenaId::from_bytes(msg.arena_id));
    // Only fstat the arena's descriptor (dropping `got` closes both).
    if let Some(fd) = got.fds.into_iter().next() {
        if let Ok(meta) = File::from(fd).metadata() {
            a.key = Some(FileKey::of(&meta));
        }
    }
    a
}
