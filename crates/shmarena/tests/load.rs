//! Load: many processes attaching, reading and dropping at once, and threads sharing the
//! attach cache; no errors, and no growth in descriptors or mappings.
//!
//! CI runs 16 processes × 200 cycles; `SHMARENA_LONG=1` runs 64 processes × 1000 cycles.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use common::Scope;
use shmarena::{detach_all, Arena, ArenaOptions, Handle, Locator, SliceHandle};

type Lexicon = HashMap<String, u32>;

fn long() -> bool {
    std::env::var("SHMARENA_LONG").is_ok_and(|v| v == "1")
}

fn build(builder: ArenaOptions) -> Arena {
    let lexicon: Lexicon = (0..2000u32).map(|i| (format!("w{i}"), i * 5)).collect();
    let mut b = builder.create().unwrap();
    b.put("lexicon", &lexicon).unwrap();
    b.put_slice(
        "weights",
        &(0..10_000).map(|i| i as f64).collect::<Vec<_>>(),
    )
    .unwrap();
    b.seal().unwrap()
}

/// Open descriptors and mapping lines of this process.
fn fds_and_maps() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count();
    (fds, maps)
}

/// One attach / get / drop cycle. Even cycles open the arena by its locator; odd cycles
/// resolve a handle through the attach cache and then detach everything.
fn cycle(i: usize, locator: &Locator, lex: &Handle<Lexicon>, w: &SliceHandle<f64>) {
    let key = format!("w{}", i % 2000);
    let want = (i % 2000) as u32 * 5;
    if i % 2 == 0 {
        let arena = Arena::open(locator).unwrap();
        let m = arena.get::<Lexicon>("lexicon").unwrap();
        assert_eq!(m.get(key.as_str()).map(|v| v.to_native()), Some(want));
        assert_eq!(
            arena.slice::<f64>("weights").unwrap()[i % 10_000],
            (i % 10_000) as f64
        );
    } else {
        let m = lex.get().unwrap();
        assert_eq!(m.get(key.as_str()).map(|v| v.to_native()), Some(want));
        assert_eq!(w.get().unwrap()[i % 10_000], (i % 10_000) as f64);
        drop(m);
        detach_all();
    }
}

/// Entry point of the load children: runs the cycles the parent asks for and reports its
/// descriptor and mapping counts after warm-up and at the end.
#[test]
#[ignore = "entry point for spawned load children"]
fn load_child() {
    let Ok(spec) = std::env::var("SHMARENA_LOAD_LOCATOR") else {
        return;
    };
    let cycles: usize = std::env::var("SHMARENA_LOAD_CYCLES")
        .unwrap()
        .parse()
        .unwrap();
    let locator: Locator = spec.parse().unwrap();
    let lex: Handle<Lexicon> = std::env::var("SHMARENA_LOAD_LEXICON")
        .unwrap()
        .parse()
        .unwrap();
    let w: SliceHandle<f64> = std::env::var("SHMARENA_LOAD_WEIGHTS")
        .unwrap()
        .parse()
        .unwrap();
    // Warm up: the first cycles of each kind allocate what stays (the cache's table, say).
    for i in 0..4 {
        cycle(i, &locator, &lex, &w);
    }
    let before = fds_and_maps();
    for i in 4..cycles {
        cycle(i, &locator, &lex, &w);
    }
    let after = fds_and_maps();
    assert_eq!(before, after, "(fds, maps) grew over {cycles} cycles");
    println!("@load-ok cycles {cycles} fds {} maps {}", after.0, after.1);
}

#[test]
fn many_processes_attach_get_and_drop_at_once() {
    let (procs, cycles) = if long() { (64, 1000) } else { (16, 200) };
    let scope = Scope::new();
    let named = build(ArenaOptions::new().named(scope.name("load")));
    let memfd = build(ArenaOptions::new());
    let mut children = Vec::new();
    for p in 0..procs {
        let arena = if p % 2 == 0 { &named } else { &memfd };
        let spec = arena.locator().to_string();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "load_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SHMARENA_LOAD_LOCATOR", spec)
        .env("SHMARENA_LOAD_CYCLES", cycles.to_string())
        .env(
            "SHMARENA_LOAD_LEXICON",
            arena.handle::<Lexicon>("lexicon").unwrap().to_string(),
        )
        .env(
            "SHMARENA_LOAD_WEIGHTS",
            arena.slice_handle::<f64>("weights").unwrap().to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        children.push(cmd.spawn().unwrap());
    }
    let mut ok = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("@load-ok"),
            "a load child failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        ok += 1;
    }
    eprintln!(
        "{ok} processes x {cycles} attach/get/drop cycles: no errors, no fd or mapping growth"
    );
    drop((named, memfd));
    scope.finish();
}

/// Descriptors, and mappings of arenas (memfds and /dev/shm segments). With many threads the
/// allocator maps per-thread heaps as contention grows, so the threaded test counts only the
/// mappings that are ours.
fn fds_and_arena_maps() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("/memfd:shmarena") || l.contains("/dev/shm/"))
        .count();
    (fds, maps)
}

#[test]
fn threads_share_the_attach_cache_without_leaks() {
    common::run_isolated(
        "threads_share_the_attach_cache_isolated",
        &[("SHMARENA_TEST_ISOLATED", "1".into())],
    );
}

/// Runs in its own process (see above), so no other test maps arenas meanwhile.
#[test]
#[ignore = "entry point: runs single-threaded in its own process"]
fn threads_share_the_attach_cache_isolated() {
    if std::env::var("SHMARENA_TEST_ISOLATED").is_err() {
        return;
    }
    let (threads, cycles) = if long() { (16, 5000) } else { (16, 500) };
    let scope = Scope::new();
    let named = build(ArenaOptions::new().named(scope.name("threads")));
    let memfd = build(ArenaOptions::new());
    let handles: Vec<(Locator, Handle<Lexicon>, SliceHandle<f64>)> = [&named, &memfd]
        .iter()
        .map(|a| {
            (
                a.locator().clone(),
                a.handle("lexicon").unwrap(),
                a.slice_handle("weights").unwrap(),
            )
        })
        .collect();
    let round = |cycles: usize| {
        std::thread::scope(|s| {
            for t in 0..threads {
                let handles = &handles;
                s.spawn(move || {
                    let (loc, lex, w) = &handles[t % 2];
                    for i in 0..cycles {
                        cycle(i * threads + t, loc, lex, w);
                    }
                });
            }
        })
    };
    // A short warm-up round: the allocator's per-thread arenas and the cached thread stacks
    // it leaves mapped are the allocator's, not ours.
    round(4);
    let before = fds_and_arena_maps();
    round(cycles);
    let after = fds_and_arena_maps();
    assert_eq!(before, after, "(fds, arena mappings) grew");
    println!(
        "{threads} threads x {cycles} cycles: no errors, no fd or arena mapping growth \
         (fds {}, arena mappings {})",
        after.0, after.1
    );
    drop((named, memfd));
    scope.finish();
    println!("OK:threads_share_the_attach_cache_isolated");
}
