//! Real child processes: forked children read inherited views, spawned children attach by
//! locator, and a write through a view kills only the writer.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::{exited_with, fork_and_wait, killed_by, run_checked, Scope};
use shmarena::{Arena, ArenaOptions, Locator};

fn lexicon() -> HashMap<String, u32> {
    (0..10_000u32).map(|i| (format!("w{i}"), i * 3)).collect()
}

fn build(builder: ArenaOptions) -> Arena {
    let mut b = builder.create().unwrap();
    b.put("lexicon", &lexicon()).unwrap();
    b.put_slice("weights", &(0..4096).map(|i| i as f64).collect::<Vec<_>>())
        .unwrap();
    b.seal().unwrap()
}

#[test]
fn forked_child_reads_inherited_views() {
    let arena = build(ArenaOptions::new());
    let lex = arena.get::<HashMap<String, u32>>("lexicon").unwrap();
    let w = arena.slice::<f64>("weights").unwrap();
    let status = fork_and_wait(|| {
        // Only reads of memory prepared before the fork: no allocation in the child.
        let ok = lex.get("w1234").map(|v| v.to_native()) == Some(3702)
            && lex.len() == 10_000
            && w[4095] == 4095.0;
        if ok {
            0
        } else {
            1
        }
    });
    assert_eq!(exited_with(status), Some(0), "child status {status:#x}");
}

/// Entry point of the spawned children below; does nothing unless the parent set the variable.
#[test]
#[ignore = "entry point for spawned children"]
fn spawned_child_entry() {
    let Ok(spec) = std::env::var("SHMARENA_TEST_LOCATOR") else {
        return;
    };
    let locator: Locator = spec.parse().unwrap();
    let arena = Arena::open(&locator).unwrap();
    assert_eq!(
        arena.id().to_string(),
        std::env::var("SHMARENA_TEST_ID").unwrap()
    );
    let lex = arena.get::<HashMap<String, u32>>("lexicon").unwrap();
    assert_eq!(lex.get("w9999").map(|v| v.to_native()), Some(29997));
    assert_eq!(arena.slice::<f64>("weights").unwrap()[100], 100.0);
    println!("OK:spawned_child_entry");
}

/// Runs [`spawned_child_entry`] on the arena `arena` at its locator.
fn run_child(arena: &Arena) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "spawned_child_entry", "--ignored", "--nocapture"])
        .env("SHMARENA_TEST_LOCATOR", arena.locator().to_string())
        .env("SHMARENA_TEST_ID", arena.id().to_string());
    run_checked(&mut cmd, "spawned_child_entry");
}

#[test]
fn spawned_children_attach_in_every_backing() {
    let scope = Scope::new();
    let memfd = build(ArenaOptions::new());
    assert!(matches!(memfd.locator(), Locator::Memfd { .. }));
    run_child(&memfd);

    let name = scope.name("spawn");
    let named = build(ArenaOptions::new().named(&name));
    run_child(&named);

    let path = scope.path("spawn.arena");
    let file = build(ArenaOptions::new().file(&path));
    run_child(&file);
    drop((named, file));
    std::fs::remove_file(&path).unwrap();
    scope.finish();
}

/// The address range and permission flags of the mapping that contains `addr`.
fn mapping_flags(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let range = parts.next().unwrap();
        let perms = parts.next().unwrap();
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).unwrap(),
            usize::from_str_radix(hi, 16).unwrap(),
        );
        if (lo..hi).contains(&addr) {
            return perms.to_owned();
        }
    }
    panic!("no mapping contains {addr:#x}");
}

#[test]
fn readers_never_hold_a_writable_mapping() {
    let scope = Scope::new();
    let name = scope.name("ro");
    for arena in [
        build(ArenaOptions::new()),
        build(ArenaOptions::new().named(&name)),
    ] {
        let w = arena.slice::<f64>("weights").unwrap();
        assert_eq!(
            mapping_flags(w.as_ptr() as usize),
            "r--s",
            "{}",
            arena.locator()
        );
        let reopened = Arena::open(arena.locator()).unwrap();
        let w2 = reopened.slice::<f64>("weights").unwrap();
        assert_eq!(
            mapping_flags(w2.as_ptr() as usize),
            "r--s",
            "{}",
            reopened.locator()
        );
    }
    scope.finish();
}

#[test]
fn a_write_through_a_view_kills_only_the_writer() {
    let scope = Scope::new();
    let name = scope.name("segv");
    for arena in [
        build(ArenaOptions::new()),
        build(ArenaOptions::new().named(&name)),
    ] {
        let w = arena.slice::<f64>("weights").unwrap();
        let target = w.as_ptr() as *mut f64;
        let status = fork_and_wait(|| {
            // SAFETY: deliberately unsound: this child writes through a shared view to prove the
            // mapping is read-only; the write faults and the child dies with SIGSEGV.
            unsafe { std::ptr::write_volatile(target, -1.0) };
            0
        });
        assert_eq!(killed_by(status), Some(libc::SIGSEGV), "status {status:#x}");
        assert_eq!(w[0], 0.0, "data intact after the failed write");
        arena.verify().unwrap();
    }
    scope.finish();
}

#[test]
fn a_sealed_memfd_refuses_truncate_and_write() {
    use std::io::Write;
    let arena = build(ArenaOptions::new());
    let Locator::Memfd { pid, fd } = arena.locator().clone() else {
        unreachable!()
    };
    // Even a writable descriptor to the same memfd cannot change it.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/fd/{fd}"))
        .unwrap();
    let e = f.set_len(0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "truncate: {e}");
    let e = f.write_all(b"garbage").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "write: {e}");
    arena.verify().unwrap();
    assert_eq!(arena.slice::<f64>("weights").unwrap()[1], 1.0);
}

#[test]
fn a_child_forked_mid_build_does_not_block_sealing() {
    let mut b = ArenaOptions::new().create().unwrap();
    b.put_slice("x", &[1u32; 100_000]).unwrap();
    // SAFETY: the child only sleeps and exits, touching no shared state.
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        // SAFETY: plain libc calls in the child; _exit runs no destructors.
        unsafe {
            libc::sleep(30);
            libc::_exit(0);
        }
    }
    // The child is alive while we seal; it did not inherit the builder's writable mapping.
    let sealed = b.seal();
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    let arena = sealed.expect("sealing with a forked child alive");
    assert!(arena.is_kernel_sealed());
    assert_eq!(arena.slice::<u32>("x").unwrap()[99_999], 1);
}
