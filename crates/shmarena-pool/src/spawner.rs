//! The spawner thread of a spawn-mode pool: every worker is started from this one thread, which
//! the pool owns for its whole life.
//!
//! A worker arms `PR_SET_PDEATHSIG`, and Linux sends that signal when the *thread* that
//! started the worker exits, not the process. A pool built on a thread that later ends (a
//! tokio blocking thread that the runtime retires, a scoped thread) would lose every worker at
//! that moment. Starting them from a thread that lives exactly as long as the pool makes the
//! signal follow the pool instead: it fires when the pool is dropped (after the pool has
//! already killed and reaped its workers) or when the process dies.

use std::io;
use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::os::{self, Child};

type Reply = mpsc::SyncSender<io::Result<Child>>;

/// A thread that spawns workers on request and lives until it is dropped.
pub(crate) struct Spawner {
    requests: Option<mpsc::Sender<(Command, usize, Reply)>>,
    thread: Option<JoinHandle<()>>,
}

impl Spawner {
    pub(crate) fn start() -> io::Result<Spawner> {
        let (tx, rx) = mpsc::channel::<(Command, usize, Reply)>();
        let thread = std::thread::Builder::new()
            .name("shmarena-pool-spawner".into())
            .spawn(move || {
                for (cmd, pipe_size, reply) in rx {
                    let _ = reply.send(os::spawn_worker(cmd, pipe_size));
                }
            })?;
        Ok(Spawner {
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    /// Spawns `cmd` as a worker from the spawner thread (see [`os::spawn_worker`]).
    pub(crate) fn spawn(&self, cmd: Command, pipe_size: usize) -> io::Result<Child> {
        let gone = || io::Error::other("the pool's spawner thread is gone");
        let (reply, answer) = mpsc::sync_channel(1);
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send((cmd, pipe_size, reply))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
