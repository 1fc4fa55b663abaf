//! Helpers shared by the integration tests: the workspace's test kit (`shmarena-testkit`:
//! unique names, and checks that a test leaves `/dev/shm` and its temporary directory as it
//! found them), and `fork_and_wait`, which needs `unsafe` and so lives here, in `crates/shmarena`.
#![allow(dead_code, unused_imports, unreachable_pub)]

pub use shmarena_testkit::*;

/// Forks; the child runs `f` and exits with its return code (without unwinding or running
/// destructors); the parent waits and returns the raw wait status.
///
/// The child must only touch memory prepared before the fork and must not allocate: the test
/// harness is multi-threaded, and another thread may hold the allocator's lock.
pub fn fork_and_wait(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: fork has no memory-safety preconditions; the child only runs `f`, which by this
    // helper's contract does not allocate or take locks, and then calls _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: _exit ends the child at once, running no destructors or atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid pointer to `status`.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid failed");
    status
}
