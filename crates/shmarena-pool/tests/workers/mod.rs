//! Helpers shared by the pool's integration tests: ending a worker the hard way, a panic hook
//! that forked workers can use safely, and checking that no worker is left behind.
#![allow(dead_code, unreachable_pub)]

use rustix::process::Signal;

/// SIGKILLs this process (a worker, in the tests).
pub fn kill_self() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
    unreachable!("SIGKILL is not survivable")
}

/// Installs, once per process, a panic hook that writes the message straight to fd 2 and takes
/// no lock. Call it before the first fork: forked workers inherit it. (The default hook holds
/// std's backtrace lock while it prints; a worker forked while another thread holds it would
/// hang the first time its own job panics.)
pub fn lock_free_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let msg = format!("panic in pid {}: {info}\n", std::process::id());
            let _ = rustix::io::write(rustix::stdio::stderr(), msg.as_bytes());
        }));
    });
}

/// True if `pid` is a child of this process that has not been reaped (alive or zombie).
pub fn is_our_child(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Field 4 (ppid) follows the parenthesized command name, which may contain spaces.
    let after = &stat[stat.rfind(')').expect("stat has a comm field") + 2..];
    let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
    ppid == std::process::id()
}
