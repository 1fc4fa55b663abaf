//! Linux system calls of the pool, behind safe functions: pipes, fork, spawn, death signals,
//! pidfds, kill and reap, non-blocking pipe I/O and `poll`. This is the only file of the crate
//! with `unsafe` (fork, `_exit`, `close`, the pre-exec hook, taking ownership of the fds a
//! spawned worker inherits, and, with the `shmarena` feature, a spawned worker's opt-in to the
//! trust rows of the arenas its pool shared with it); the rest of the crate sees only the safe
//! API below.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::{Errno, FdFlags};
use rustix::pipe::PipeFlags;
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};

/// Environment variable that marks a spawned worker: `<task fd>:<result fd>:<parent pid>`.
pub(crate) const WORKER_ENV: &str = "SHMARENA_POOL_WORKER";

/// Environment variable that carries a spawned worker's initializer:
/// `<job name hex>:<fingerprint hex>:<archived input hex>`.
pub(crate) const INIT_ENV: &str = "SHMARENA_POOL_INIT";

/// The parent's side of one worker process.
pub(crate) struct Child {
    /// The worker's pid; the worker is our child until [`Child::reap`] has returned.
    pid: Pid,
    /// Readable once the worker has exited (Linux 5.3+).
    pidfd: OwnedFd,
    /// Tasks go here (non-blocking, close-on-exec).
    task_w: OwnedFd,
    /// Results come from here (non-blocking, close-on-exec).
    result_r: OwnedFd,
}

/// The two pipes of a worker, all four ends close-on-exec; the parent's ends non-blocking.
struct Pipes {
    task_r: OwnedFd,
    task_w: OwnedFd,
    result_r: OwnedFd,
    result_w: OwnedFd,
}

impl Pipes {
    /// The worker's ends (task reader, result writer) and the parent's (task writer, result
    /// reader).
    fn split(self) -> ((OwnedFd, OwnedFd), (OwnedFd, OwnedFd)) {
        ((self.task_r, self.result_w), (self.task_w, self.result_r))
    }
}

fn pipes(pipe_size: usize) -> io::Result<Pipes> {
    let (task_r, task_w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(io::Error::from)?;
    let (result_r, result_w) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(io::Error::from)?;
    rustix::io::ioctl_fionbio(&task_w, true).map_err(io::Error::from)?;
    rustix::io::ioctl_fionbio(&result_r, true).map_err(io::Error::from)?;
    if pipe_size > 0 {
        // Best effort: past the per-user pipe budget (fs.pipe-user-pages-soft) or above
        // fs.pipe-max-size the kernel refuses, and the default 64 KiB pipe still works.
        let _ = rustix::pipe::fcntl_setpipe_size(&task_w, pipe_size);
        let _ = rustix::pipe::fcntl_setpipe_size(&result_r, pipe_size);
    }
    Ok(Pipes {
        task_r,
        task_w,
        result_r,
        result_w,
    })
}

/// Threads of this process, from `/proc/self/task`.
pub(crate) fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Ends this process at once: no destructors, no atexit handlers, no unwinding. The worker
/// side of a forked worker leaves only through here, so it never returns into the parent's
/// stack frames or drops the parent's copies of its values.
///
/// It does not flush stdout: taking std's stdout lock in a forked child could block forever
/// if another parent thread held it at the fork. `println!` output is line-buffered and
/// already written; only a trailing partial line of `print!` output is lost.
fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions; it ends the process without touching its memory.
    unsafe { libc::_exit(code) }
}

/// Forks a worker. The child arms its parent-death signal, closes `close_in_child` (the
/// parent's ends of the other workers' pipes, so their EOFs stay exact), and runs `serve` with
/// its task reader and result writer, then exits with its return value (101 if it unwinds).
///
/// The caller has checked the thread rule (see the module docs); `serve` must only use state
/// that was consistent at the fork.
pub(crate) fn fork_worker(
    close_in_child: &[RawFd],
    pipe_size: usize,
    serve: &mut dyn FnMut(&mut File, &mut File) -> i32,
) -> io::Result<Child> {
    let p = pipes(pipe_size)?;
    let parent = rustix::process::getpid();
    // Buffered output would otherwise be written twice, once by each process.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: `fork` has no memory-safety preconditions. In the child:
    // - only the calling thread exists; the caller made sure (thread_count) that no other
    //   thread existed to hold a lock, or the user opted out of that check and accepted the
    //   deadlock risk (deadlock, not unsoundness: a lock held by a vanished thread is never
    //   released, it cannot be acquired twice);
    // - glibc's fork runs the atfork handlers that reset malloc's locks, so allocating is fine;
    // - the child leaves only through `exit_now` (`_exit`), so it never unwinds into or returns
    //   through the parent's frames, and never drops the parent's copies of values.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let ((task_r, result_w), (task_w, result_r)) = p.split();
        let (mut task_r, mut result_w) = (File::from(task_r), File::from(result_w));
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // PR_SET_PDEATHSIG: the kernel kills this worker when the parent (thread) exits,
            // even by SIGKILL, so a crashed parent leaves no orphans.
            if rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).is_err() {
                return 1;
            }
            // The parent may have died before the signal was armed.
            if rustix::process::getppid() != Some(parent) {
                return 1;
            }
            for &fd in close_in_child {
                // SAFETY: `fd` is the parent's end of another worker's pipe, open in this copy
                // of the process. This child never uses it and never drops the `OwnedFd` that
                // owns it (it leaves through `_exit`), so closing it here cannot make any
                // later use refer to a wrong or closed descriptor.
                unsafe { libc::close(fd) };
            }
            // The parent's ends: closing them here keeps EOF exact in both directions.
            drop(task_w);
            drop(result_r);
            serve(&mut task_r, &mut result_w)
        }))
        .unwrap_or(101);
        // Exit with the pipes still open: the parent takes EOF on them to mean "exiting".
        exit_now(code);
    }
    let pid = Pid::from_raw(pid).expect("fork returned a positive pid");
    finish_start(pid, p)
}

/// Takes the trust rows of the arenas this spawned worker's pool shared with it (see
/// `shmarena::trust_inherited_rows`). Called once, by a worker whose [`WORKER_ENV`] names its
/// parent, before its initializer or any task runs.
#[cfg(feature = "shmarena")]
pub(crate) fn trust_pool_rows() {
    // SAFETY: `trust_inherited_rows` asks that every `SHMARENA_INHERITED_FDS` entry this
    // process started with be what `share_with` wrote, in the process that exec'd this one,
    // for the descriptor inherited under that number.
    // - The launcher is the pool: this process carries the pool's worker marker naming its
    //   parent as the pool's process (checked by the caller); the pool sets the marker only in
    //   the `Command` of its own binary (`current_exe`) that its spawner thread spawns, after
    //   every `on_spawn` hook ran.
    // - The entry is `share_with`'s: after the hooks, the pool ran `shmarena::keep_vouched_rows`
    //   on that `Command`, which keeps only rows its process holds in memory for the arena open
    //   there under the very descriptor number and inode the entry names; an entry a hook
    //   edited lost its rows. The descriptor cannot be retargeted between that check and the
    //   exec: it is owned by the arena the `share_with` call moved into the `Command`, and
    //   safe code cannot close or `dup2` over a descriptor it does not own.
    // - The child side checks the rest: the descriptor's inode is the one named and it is a
    //   sealed memfd (`SHMARENA_INHERITED_FDS` is read from the environment at exec).
    // What remains is a program that execs its own binary by hand with the pool's private
    // marker (`SHMARENA_POOL_WORKER`) and a forged entry: it is then the launcher, outside the
    // pool, and the pool's documentation says the marker is the pool's alone.
    unsafe { shmarena::trust_inherited_rows() };
}

/// Spawns `cmd` as a worker: the task reader and result writer are inherited (close-on-exec
/// cleared in the child only) and named in [`WORKER_ENV`]; the child arms its parent-death
/// signal before `exec`.
pub(crate) fn spawn_worker(mut cmd: Command, pipe_size: usize) -> io::Result<Child> {
    let p = pipes(pipe_size)?;
    let parent = rustix::process::getpid();
    let (tr, rw) = (p.task_r.as_raw_fd(), p.result_w.as_raw_fd());
    cmd.env(
        WORKER_ENV,
        format!("{tr}:{rw}:{}", parent.as_raw_nonzero().get()),
    );
    let hook = move || -> io::Result<()> {
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
            .map_err(io::Error::from)?;
        if rustix::process::getppid() != Some(parent) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        for fd in [tr, rw] {
            // SAFETY: `tr` and `rw` are open in the child: they are this worker's pipe ends,
            // inherited through fork, and the `Pipes` holding them in the parent lives until
            // `spawn` returns. The borrow ends within this statement.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            rustix::io::fcntl_setfd(fd, FdFlags::empty()).map_err(io::Error::from)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec. It only makes the system calls
    // prctl, getppid and fcntl, which are async-signal-safe; it allocates nothing (an
    // `io::Error` from a raw errno does not allocate) and takes no locks.
    unsafe { cmd.pre_exec(hook) };
    let child = cmd.spawn()?;
    let pid = Pid::from_raw(child.id() as i32).expect("spawn returned a positive pid");
    // std's `Child` neither kills nor waits on drop; this module reaps the pid itself.
    drop(child);
    finish_start(pid, p)
}

fn finish_start(pid: Pid, p: Pipes) -> io::Result<Child> {
    let (worker_ends, (task_w, result_r)) = p.split();
    drop(worker_ends);
    let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            kill(pid);
            let _ = reap(pid);
            return Err(e.into());
        }
    };
    Ok(Child {
        pid,
        pidfd,
        task_w,
        result_r,
    })
}

/// Sends SIGKILL; a worker that already exited is not an error.
fn kill(pid: Pid) {
    let _ = rustix::process::kill_process(pid, Signal::KILL);
}

/// Waits for the worker to end and returns how; `None` if it was reaped elsewhere (ECHILD).
fn reap(pid: Pid) -> Option<ExitStatus> {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => return Some(ExitStatus::from_raw(status.as_raw())),
            Ok(None) => return None,
            Err(Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Takes the pipe ends a spawning parent left in this process, as named in [`WORKER_ENV`].
/// Checks that both are open pipes, and sets close-on-exec again so that processes the job
/// starts do not inherit them.
pub(crate) fn adopt_worker_fds(task_fd: RawFd, result_fd: RawFd) -> io::Result<(File, File)> {
    let mut out = Vec::with_capacity(2);
    for fd in [task_fd, result_fd] {
        if fd < 3 || task_fd == result_fd {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {fd} is not a worker pipe"),
            ));
        }
        // SAFETY: `fcntl(F_GETFD)` on any integer is harmless: it fails with EBADF if `fd` is not
        // open; the borrow is used for this call only.
        let flags = rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) });
        if flags.is_err() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("fd {fd} named in {WORKER_ENV} is not open"),
            ));
        }
        // SAFETY: `fd` is open (checked above) and nothing else in this process owns it: the
        // spawning parent opened it for this worker alone, and the hook that adopts it runs at
        // the top of `main`, before any other code could have claimed it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let st = rustix::fs::fstat(&owned).map_err(io::Error::from)?;
        if !rustix::fs::FileType::from_raw_mode(st.st_mode).is_fifo() {
            // Not ours after all: hand it back unclosed rather than closing someone's file.
            let _ = std::os::fd::IntoRawFd::into_raw_fd(owned);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {fd} named in {WORKER_ENV} is not a pipe"),
            ));
        }
        rustix::io::fcntl_setfd(&owned, FdFlags::CLOEXEC).map_err(io::Error::from)?;
        out.push(File::from(owned));
    }
    let result = out.pop().expect("two fds");
    let task = out.pop().expect("two fds");
    Ok((task, result))
}

impl Child {
    /// The worker's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid.as_raw_nonzero().get() as u32
    }

    /// SIGKILL through the pidfd, which cannot hit a recycled pid. Call it only before
    /// [`reap`](Self::reap).
    pub(crate) fn kill(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, Signal::KILL);
    }

    /// Waits for the worker to end and returns how; `None` if it was reaped elsewhere (ECHILD).
    pub(crate) fn reap(&self) -> Option<ExitStatus> {
        reap(self.pid)
    }

    /// The raw numbers of the parent-side fds (to close in later forked siblings).
    pub(crate) fn parent_fds(&self) -> [RawFd; 3] {
        [
            self.pidfd.as_fd().as_raw_fd(),
            self.task_w.as_raw_fd(),
            self.result_r.as_raw_fd(),
        ]
    }

    /// Writes what the task pipe takes now: `Ok(Some(n))`, or `Ok(None)` if it is full.
    /// Retries EINTR.
    pub(crate) fn write_tasks(&self, bytes: &[u8]) -> io::Result<Option<usize>> {
        nonblocking(|| rustix::io::write(&self.task_w, bytes))
    }

    /// Reads what the result pipe holds now: `Ok(Some(n))` (0 at EOF), or `Ok(None)` if it is
    /// empty. Retries EINTR.
    pub(crate) fn read_results(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        nonblocking(|| rustix::io::read(&self.result_r, &mut *buf))
    }

    /// The result pipe, to wait on for reading.
    pub(crate) fn results(&self) -> BorrowedFd<'_> {
        self.result_r.as_fd()
    }

    /// The task pipe, to wait on for writing.
    pub(crate) fn tasks(&self) -> BorrowedFd<'_> {
        self.task_w.as_fd()
    }

    /// The pidfd: readable once the worker has exited.
    pub(crate) fn exit_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Whether the worker has exited (or been killed) by now; it may not be reaped yet.
    pub(crate) fn has_exited(&self) -> bool {
        poll(&[(self.exit_fd(), Ready::Read)], Some(Duration::ZERO)).is_ok_and(|ready| ready[0])
    }
}

fn nonblocking(mut op: impl FnMut() -> Result<usize, Errno>) -> io::Result<Option<usize>> {
    loop {
        match op() {
            Ok(n) => return Ok(Some(n)),
            Err(Errno::AGAIN) => return Ok(None),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// What [`poll`] waits for on a descriptor.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ready {
    /// Data (or EOF, or an error) to read.
    Read,
    /// Room (or an error) to write.
    Write,
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// `poll` that retries on EINTR: waits until one of `fds` has an event or `timeout` passes,
/// and says for each whether it had one (any event, errors and hang-ups included).
pub(crate) fn poll(
    fds: &[(BorrowedFd<'_>, Ready)],
    timeout: Option<Duration>,
) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|(fd, ready)| {
            let flags = match ready {
                Ready::Read => PollFlags::IN,
                Ready::Write => PollFlags::OUT,
            };
            PollFd::from_borrowed_fd(*fd, flags)
        })
        .collect();
    loop {
        let ts = timeout.map(timespec);
        match rustix::event::poll(&mut pfds, ts.as_ref()) {
            Err(Errno::INTR) => continue,
            r => {
                r?;
                return Ok(pfds.iter().map(|p| !p.revents().is_empty()).collect());
            }
        }
    }
}

/// This process's parent's pid, if it has one.
pub(crate) fn parent_pid() -> Option<i32> {
    rustix::process::getppid().map(|p| p.as_raw_nonzero().get())
}
