//! The error type of the process pool.

use std::fmt;
use std::io;
use std::process::ExitStatus;

/// What can go wrong starting a [`Pool`](crate::Pool) or running a task in it.
///
/// Per-task errors ([`PoolError::WorkerDied`], [`PoolError::Codec`]) are yielded in place of that
/// task's output and the pool goes on; the others end the call that returned them.
#[derive(Debug)]
#[non_exhaustive]
pub enum PoolError {
    /// The worker running this task died: killed by a signal (SIGKILL from the OOM killer or a
    /// user, SIGABRT from `abort`, SIGSEGV, ...), a panic in the job, or an exit. The worker
    /// has been reaped and replaced.
    WorkerDied {
        /// Position of the task in the input sequence (0-based).
        index: u64,
        /// The worker's process id.
        pid: u32,
        /// How it ended (`None` if something else in this process reaped it first).
        status: Option<ExitStatus>,
        /// The panic message, when the job panicked.
        panic: Option<String>,
    },
    /// A task could not be archived or unarchived, or an output failed validation.
    Codec {
        /// Position of the task in the input sequence (0-based).
        index: u64,
        /// Which side failed: `"task"` or `"result"`.
        what: &'static str,
        /// rkyv's message.
        message: String,
    },
    /// The job is not registered in the spawned workers (the hook in `main` does not list it),
    /// or is registered with other input or output types.
    UnknownJob {
        /// The job's name.
        name: String,
        /// What the workers registered instead.
        detail: String,
    },
    /// A closure was given to a pool in [`Mode::Spawn`](crate::Mode::Spawn), where only a named
    /// [`Job`](crate::Job) can cross `exec`.
    UnnamedJob,
    /// [`Mode::Fork`](crate::Mode::Fork) refused to fork because this process runs other
    /// threads (see the crate docs, "Fork before spawning threads").
    ThreadsAtFork {
        /// Threads counted in `/proc/self/task`.
        threads: usize,
    },
    /// A spawned worker did not start serving: it exited, or did not answer in time.
    WorkerStart {
        /// The worker's process id.
        pid: u32,
        /// What happened.
        detail: String,
    },
    /// No worker is left and none can be started; the iteration ends after this error.
    NoWorkers {
        /// Why the last replacement failed.
        cause: String,
    },
    /// An OS call failed.
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

impl PoolError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> PoolError {
        PoolError::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::WorkerDied {
                index,
                pid,
                status,
                panic,
            } => {
                write!(f, "worker pid {pid} died running task {index}")?;
                match status {
                    Some(s) => write!(f, " ({s})")?,
                    None => write!(f, " (exit status unknown: reaped elsewhere)")?,
                }
                if let Some(p) = panic {
                    write!(f, ": the job panicked: {p}")?;
                }
                Ok(())
            }
            PoolError::Codec {
                index,
                what,
                message,
            } => write!(f, "cannot pass the {what} of task {index}: {message}"),
            PoolError::UnknownJob { name, detail } => write!(
                f,
                "job {name:?} is not registered in the spawned workers ({detail}); list it in \
                 shmarena_pool::serve_worker_if_child at the top of main"
            ),
            PoolError::UnnamedJob => write!(
                f,
                "spawn mode cannot run a closure: use a named shmarena_pool::Job registered in \
                 serve_worker_if_child, or Mode::Fork"
            ),
            PoolError::ThreadsAtFork { threads } => write!(
                f,
                "refusing to fork pool workers: this process runs {threads} threads, and a lock \
                 held by another thread at fork would deadlock the worker; create the pool \
                 before spawning threads, use Mode::Spawn, or opt in with \
                 PoolBuilder::allow_threads_at_fork"
            ),
            PoolError::WorkerStart { pid, detail } => write!(
                f,
                "spawned worker pid {pid} did not start serving: {detail} (does main call \
                 shmarena_pool::serve_worker_if_child first?)"
            ),
            PoolError::NoWorkers { cause } => {
                write!(f, "no pool worker is left and none can be started: {cause}")
            }
            PoolError::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
