//! Worker processes: pipes, fork, spawn, death signals, pidfds, kill and reap. Every `unsafe`
//! block of the pool lives in this file (fork, `_exit`, the pre-exec hook, and taking ownership
//! of the fds a spawned worker inherits).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};

use rustix::io::FdFlags;
use rustix::pipe::PipeFlags;
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};

/// Environment variable that marks a spawned worker: `<task fd>:<result fd>:<parent pid>`.
pub(crate) const WORKER_ENV: &str = "SHMARENA_POOL_WORKER";

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// The parent's side of one worker process.
pub(crate) struct Child {
    /// The worker's pid; the worker is our child until [`reap`] has returned.
    pub(crate) pid: Pid,
    /// Readable once the worker has exited (Linux 5.3+).
    pub(crate) pidfd: OwnedFd,
    /// Tasks go here (non-blocking, close-on-exec).
    pub(crate) task_w: OwnedFd,
    /// Results come from here (non-blocking, close-on-exec).
    pub(crate) result_r: OwnedFd,
}

/// The two pipes of a worker, all four ends close-on-exec; the parent's ends non-blocking.
struct Pipes {
    task_r: OwnedFd,
    task_w: OwnedFd,
    result_r: OwnedFd,
    result_w: OwnedFd,
}

fn pipes(pipe_size: usize) -> io::Result<Pipes> {
    let (task_r, task_w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(errno)?;
    let (result_r, result_w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(errno)?;
    rustix::io::ioctl_fionbio(&task_w, true).map_err(errno)?;
    rustix::io::ioctl_fionbio(&result_r, true).map_err(errno)?;
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
pub(crate) fn exit_now(code: i32) -> ! {
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
        let Pipes {
            task_r,
            task_w,
            result_r,
            result_w,
        } = p;
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
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).map_err(errno)?;
        if rustix::process::getppid() != Some(parent) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        for fd in [tr, rw] {
            // SAFETY: `tr` and `rw` are open in the child: they are this worker's pipe ends,
            // inherited through fork, and the `Pipes` holding them in the parent lives until
            // `spawn` returns. The borrow ends within this statement.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            rustix::io::fcntl_setfd(fd, FdFlags::empty()).map_err(errno)?;
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
    let Pipes {
        task_r,
        task_w,
        result_r,
        result_w,
    } = p;
    drop(task_r);
    drop(result_w);
    let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            kill(pid);
            let _ = reap(pid);
            return Err(errno(e));
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
pub(crate) fn kill(pid: Pid) {
    let _ = rustix::process::kill_process(pid, Signal::KILL);
}

/// Waits for the worker to end and returns how; `None` if it was reaped elsewhere (ECHILD).
pub(crate) fn reap(pid: Pid) -> Option<ExitStatus> {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => return Some(ExitStatus::from_raw(status.as_raw())),
            Ok(None) => return None,
            Err(rustix::io::Errno::INTR) => continue,
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
        let st = rustix::fs::fstat(&owned).map_err(errno)?;
        if !rustix::fs::FileType::from_raw_mode(st.st_mode).is_fifo() {
            // Not ours after all: hand it back unclosed rather than closing someone's file.
            let _ = std::os::fd::IntoRawFd::into_raw_fd(owned);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {fd} named in {WORKER_ENV} is not a pipe"),
            ));
        }
        rustix::io::fcntl_setfd(&owned, FdFlags::CLOEXEC).map_err(errno)?;
        out.push(File::from(owned));
    }
    let result = out.pop().expect("two fds");
    let task = out.pop().expect("two fds");
    Ok((task, result))
}

/// The raw numbers of a worker's parent-side fds (to close in later forked siblings).
pub(crate) fn parent_fds(c: &Child) -> [RawFd; 3] {
    [
        c.pidfd.as_fd().as_raw_fd(),
        c.task_w.as_raw_fd(),
        c.result_r.as_raw_fd(),
    ]
}
