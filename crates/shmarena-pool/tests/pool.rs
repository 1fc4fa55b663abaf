//! The process pool with real worker processes, in fork and spawn mode: results complete and
//! correct, chunking, workers that die (SIGKILL, panic, abort) reported and replaced, and no
//! child process left behind.
//!
//! Spawn-mode workers re-execute this test binary with `--exact pool_worker_entry`: that test
//! calls the hook, which serves the worker role when the pool's marker variable is set, and
//! does nothing in a normal run. This works the same under `cargo test` and `cargo nextest`.
//!
//! The libtest harness runs tests on several threads, so fork-mode pools here opt in with
//! `allow_threads_at_fork(true)`; the jobs take no lock that another test thread could hold.
//! One such lock is std's: the default panic hook holds a process-wide backtrace lock while it
//! prints, so a worker forked while any other thread is printing a panic inherits that lock
//! locked, and hangs when its own job panics. Every pool test therefore first installs (once,
//! before any fork) a panic hook that takes no lock; forked workers inherit it.

mod workers;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;

use rustix::process::Signal;

use shmarena::{Arena, ArenaOptions};
use shmarena_pool::{Job, Mode, Pool, PoolBuilder, PoolError};
use shmarena_testkit::Scope;
use workers::{is_our_child, kill_self, lock_free_panic_hook};

fn square(x: u64) -> u64 {
    x * x
}

/// Dies in various ways on chosen inputs: 1_000_013 SIGKILLs itself, 1_000_005 panics,
/// 1_000_010 aborts; everything else is squared.
fn fragile(x: u64) -> u64 {
    match x {
        1_000_013 => kill_self(),
        1_000_005 => panic!("boom on {x}"),
        1_000_010 => std::process::abort(),
        _ => x * x,
    }
}

/// Sums the `u64` slice "numbers" of a named arena, opened in the worker.
fn sum_named(name: String) -> u64 {
    let arena = Arena::load_named(&name).expect("worker loads the named arena");
    arena
        .slice::<u64>("numbers")
        .expect("numbers entry")
        .iter()
        .sum()
}

/// Resolves a handle to an archived `Vec<u64>` "numbers": returns its sum
/// times 2, plus 1 if the worker trusted the entry before reading it (no bytecheck).
fn sum_trusted(handle: String) -> u64 {
    let h: shmarena::Handle<Vec<u64>> = handle.parse().expect("a handle");
    let trusted = h.arena().expect("attach").trusts::<Vec<u64>>("numbers");
    let sum: u64 = h
        .get()
        .expect("numbers")
        .iter()
        .map(|x| x.to_native())
        .sum();
    sum * 2 + u64::from(trusted)
}

/// Resolves a handle to an archived `Vec<u64>` "numbers" and says whether the worker trusted it
/// and what reading it gave: `trusted:<bool> read:<sum or error kind>`.
fn trust_and_read(handle: String) -> String {
    let h: shmarena::Handle<Vec<u64>> = handle.parse().expect("a handle");
    let trusted = h.arena().expect("attach").trusts::<Vec<u64>>("numbers");
    let read = match h.get() {
        Ok(v) => v.iter().map(|x| x.to_native()).sum::<u64>().to_string(),
        Err(shmarena::Error::Format {
            source: shmarena::format::FormatError::Corrupted { .. },
            ..
        }) => "corrupted".to_owned(),
        Err(e) => format!("other error: {e}"),
    };
    format!("trusted:{trusted} read:{read}")
}

static SQUARE: Job<u64, u64> = Job::new("square", square);
static TRUST_AND_READ: Job<String, String> = Job::new("trust_and_read", trust_and_read);
static SUM_TRUSTED: Job<String, u64> = Job::new("sum_trusted", sum_trusted);
static FRAGILE: Job<u64, u64> = Job::new("fragile", fragile);
static SUM_NAMED: Job<String, u64> = Job::new("sum_named", sum_named);
/// Same name as SQUARE, other output type: the workers must refuse it.
static SQUARE_AS_STRING: Job<u64, String> = Job::new("square", |x| (x * x).to_string());
static UNREGISTERED: Job<u64, u64> = Job::new("unregistered", square);

/// The worker entry point: a no-op in a normal run; in a spawned worker it serves and exits.
#[test]
fn pool_worker_entry() {
    shmarena_pool::serve_worker_if_child(&[
        &SQUARE,
        &FRAGILE,
        &SUM_NAMED,
        &TWO_THEN_HANG,
        &SUM_TRUSTED,
        &TRUST_AND_READ,
    ]);
}

/// Held for reading by every test while it may fork, and for writing while a test builds a
/// memfd arena: sealing a memfd fails with EBUSY while any process maps it writable, and a
/// worker forked by another test during the build would inherit the builder's mapping.
static FORKS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn forks_allowed() -> std::sync::RwLockReadGuard<'static, ()> {
    FORKS.read().unwrap_or_else(|e| e.into_inner())
}

/// The tests here place tasks on workers one at a time (a task that hangs must not hold back
/// the results batched with it), so they set chunksize 1; tests/setup.rs covers the automatic
/// chunksize.
fn fork_pool(workers: usize) -> PoolBuilder {
    lock_free_panic_hook();
    Pool::builder()
        .mode(Mode::Fork)
        .workers(workers)
        .chunksize(1)
        .allow_threads_at_fork(true)
}

fn spawn_pool(workers: usize) -> PoolBuilder {
    lock_free_panic_hook();
    Pool::builder()
        .mode(Mode::Spawn)
        .workers(workers)
        .chunksize(1)
        .worker_args(["--exact", "pool_worker_entry", "--nocapture", "--quiet"])
}

fn assert_gone(pids: &[u32]) {
    assert!(!pids.is_empty(), "no worker pids were observed");
    let left: Vec<u32> = pids.iter().copied().filter(|&p| is_our_child(p)).collect();
    assert!(
        left.is_empty(),
        "workers left as children (alive or zombie): {left:?}"
    );
}

fn expect_died(r: &Result<u64, PoolError>) -> (u64, u32, std::process::ExitStatus, Option<String>) {
    match r {
        Err(PoolError::WorkerDied {
            index,
            pid,
            status,
            panic,
        }) => (*index, *pid, status.expect("status known"), panic.clone()),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
}

fn check_results(mode: Mode, mut pool: Pool) {
    let n = 300u64;
    let want: Vec<u64> = (0..n).map(square).collect();

    // Ordered, through a named job (both modes).
    assert_eq!(pool.map(&SQUARE, 0..n).unwrap(), want, "{mode:?} map");

    // Unordered: complete and correct as a set.
    let mut got: Vec<u64> = pool
        .imap_unordered(&SQUARE, 0..n)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    got.sort_unstable();
    assert_eq!(got, want, "{mode:?} imap_unordered");

    // Chunked: several chunk sizes, including one that does not divide n.
    for chunk in [7, 64, 1000] {
        pool.set_chunksize(Some(chunk));
        let ordered: Vec<u64> = pool
            .imap(&SQUARE, 0..n)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ordered, want, "{mode:?} imap chunksize {chunk}");
        let mut unordered: Vec<u64> = pool
            .imap_unordered(&SQUARE, 0..n)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        unordered.sort_unstable();
        assert_eq!(unordered, want, "{mode:?} imap_unordered chunksize {chunk}");
    }

    // No input, no output.
    assert!(pool.map(&SQUARE, std::iter::empty()).unwrap().is_empty());
}

#[test]
fn fork_results_are_complete_and_correct() {
    let _forks = forks_allowed();
    check_results(Mode::Fork, fork_pool(3).build().unwrap());
}

#[test]
fn spawn_results_are_complete_and_correct() {
    let _forks = forks_allowed();
    let pool = spawn_pool(3).build().unwrap();
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 3);
    check_results(Mode::Spawn, pool);
    assert_gone(&pids);
}

#[test]
fn spawn_workers_persist_across_calls() {
    let _forks = forks_allowed();
    let mut pool = spawn_pool(2).build().unwrap();
    let before: BTreeSet<u32> = pool.worker_pids().into_iter().collect();
    for _ in 0..3 {
        assert_eq!(pool.map(&SQUARE, 0..20u64).unwrap()[19], 361);
    }
    let after: BTreeSet<u32> = pool.worker_pids().into_iter().collect();
    assert_eq!(
        before, after,
        "idle spawn workers are reused, not restarted"
    );
}

#[test]
fn fork_closures_capture_borrowed_state_and_views() {
    // A borrowed local and a view into a sealed memfd arena, both inherited by fork.
    let offsets: Vec<u64> = (0..10).map(|i| i * 1000).collect();
    let arena = {
        let _no_forks = FORKS.write().unwrap_or_else(|e| e.into_inner());
        let mut b = ArenaOptions::new().create().unwrap();
        b.put_slice("numbers", &(0..1000u64).collect::<Vec<_>>())
            .unwrap();
        b.seal().unwrap()
    };
    let _forks = forks_allowed();
    let numbers = arena.slice::<u64>("numbers").unwrap();

    let mut pool = fork_pool(2).chunksize(16).build().unwrap();
    let got = pool
        .map(
            |i: u64| offsets[(i % 10) as usize] + numbers[i as usize],
            0..1000u64,
        )
        .unwrap();
    let want: Vec<u64> = (0..1000).map(|i| (i % 10) * 1000 + i).collect();
    assert_eq!(got, want);
}

#[test]
fn spawn_workers_attach_a_named_arena() {
    let _forks = forks_allowed();
    let scope = Scope::new();
    let name = scope.name("pool");
    {
        let mut b = ArenaOptions::new().named(name.clone()).create().unwrap();
        b.put_slice("numbers", &(1..=100u64).collect::<Vec<_>>())
            .unwrap();
        let _arena = b.seal().unwrap();
        let mut pool = spawn_pool(2).build().unwrap();
        let sums = pool.map(&SUM_NAMED, vec![name.clone(); 4]).unwrap();
        assert_eq!(sums, vec![5050; 4]);
    }
    scope.finish();
}

/// Spawned workers keep O(1) attach: an arena shared through `on_spawn` + `share_with` (the
/// trusted channel) is read without bytecheck; the same handle sent as text alone reaches the
/// arena through `/proc` and is validated on first read (issue 11).
#[test]
fn spawn_workers_trust_only_arenas_shared_with_them() {
    let arena = {
        let _building = FORKS.write().unwrap_or_else(|e| e.into_inner());
        let mut b = ArenaOptions::new().create().unwrap();
        b.put("numbers", &(1..=100u64).collect::<Vec<_>>()).unwrap();
        b.seal().unwrap()
    };
    let _forks = forks_allowed();
    let handle = arena.handle::<Vec<u64>>("numbers").unwrap().to_string();
    let shared = arena.clone();
    let mut pool = spawn_pool(2)
        .on_spawn(move |cmd| {
            shared.share_with(cmd)?;
            Ok(())
        })
        .build()
        .unwrap();
    let got = pool.map(&SUM_TRUSTED, vec![handle.clone(); 4]).unwrap();
    assert_eq!(got, vec![5050 * 2 + 1; 4], "shared: trusted, no bytecheck");
    drop(pool);
    // One worker: its first read validates (and caches the row), the next ones are trusted.
    let mut pool = spawn_pool(1).build().unwrap();
    let got = pool.map(&SUM_TRUSTED, vec![handle; 3]).unwrap();
    assert_eq!(
        got,
        vec![5050 * 2, 5050 * 2 + 1, 5050 * 2 + 1],
        "by text only: validated on first read"
    );
}

/// An `on_spawn` hook that edits `share_with`'s entry (pointing it at a crafted sealed memfd
/// whose close-on-exec flag it cleared, keeping the genuine rows) does not make the workers
/// trust the crafted bytes: the pool keeps only the rows it holds for the descriptor named, so
/// the workers validate and get a typed error (issue 20, path 5 through the pool).
#[test]
fn spawn_workers_do_not_trust_an_entry_a_hook_edited() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let arena = {
        let _building = FORKS.write().unwrap_or_else(|e| e.into_inner());
        let mut b = ArenaOptions::new().create().unwrap();
        b.put("numbers", &(1..=100u64).collect::<Vec<_>>()).unwrap();
        b.seal().unwrap()
    };
    let _forks = forks_allowed();
    // The same bytes with the Vec's length patched to 2^28: same id, same table of contents.
    let mut bytes = arena.as_bytes().to_vec();
    let e = &arena.layout().entries[0];
    let root = (e.offset + e.root_pos) as usize;
    assert_eq!(
        u32::from_le_bytes(bytes[root + 4..root + 8].try_into().unwrap()),
        100
    );
    bytes[root + 4..root + 8].copy_from_slice(&(1u32 << 28).to_le_bytes());
    let fd = rustix::fs::memfd_create(
        "forged",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(&bytes).unwrap();
    use rustix::fs::SealFlags;
    rustix::fs::fcntl_add_seals(&f, SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK)
        .unwrap();
    rustix::io::fcntl_setfd(&f, rustix::io::FdFlags::empty()).unwrap();
    let forged = (f.as_raw_fd(), f.metadata().unwrap().ino());
    let handle = arena.handle::<Vec<u64>>("numbers").unwrap().to_string();
    let shared = arena.clone();
    let mut pool = spawn_pool(1)
        .on_spawn(move |cmd| {
            shared.share_with(cmd)?;
            let entry = cmd
                .get_envs()
                .find(|(k, _)| *k == shmarena::handle::INHERITED_FDS_ENV)
                .and_then(|(_, v)| v)
                .and_then(|v| v.to_str())
                .expect("share_with's entry")
                .to_owned();
            let (id, rest) = entry.split_once('=').expect("ID=FD:INODE:TRUST");
            let trust = rest.splitn(3, ':').nth(2).expect("rows");
            let (fd, ino) = forged;
            cmd.env(
                shmarena::handle::INHERITED_FDS_ENV,
                format!("{id}={fd}:{ino}:{trust}"),
            );
            Ok(())
        })
        .build()
        .unwrap();
    let got = pool.map(&TRUST_AND_READ, vec![handle]).unwrap();
    assert_eq!(got, vec!["trusted:false read:corrupted".to_owned()]);
    drop(pool);
    drop(f);
}

/// Runs FRAGILE (or the same logic as a closure in fork mode) over inputs with three killers
/// and checks: exactly the right tasks fail, with the right causes, and everything else
/// succeeds; the pool then still works.
fn check_deaths(mode: Mode, mut pool: Pool) {
    let base = 1_000_000u64;
    let inputs: Vec<u64> = (base..base + 20).collect();
    let results: Vec<Result<u64, PoolError>> = match mode {
        Mode::Fork => pool.imap(fragile, inputs.clone()).unwrap().collect(),
        Mode::Spawn => pool.imap(&FRAGILE, inputs.clone()).unwrap().collect(),
    };
    assert_eq!(results.len(), 20, "{mode:?}: one result per input");
    let chunk = pool.chunksize().expect("the death tests set a chunksize") as u64;
    let abort_batch = (10 / chunk) * chunk..(10 / chunk + 1) * chunk;
    let kill_batch = (13 / chunk) * chunk..(13 / chunk + 1) * chunk;
    let mut dead_pids = BTreeSet::new();
    for (i, r) in results.iter().enumerate() {
        let i = i as u64;
        let x = base + i;
        if i == 5 {
            // A panic fails only its own task, with the message and exit code 101.
            let (index, pid, status, panic) = expect_died(r);
            assert_eq!(index, 5);
            assert_eq!(status.code(), Some(101), "{mode:?}: {status}");
            assert!(panic.unwrap().contains("boom on 1000005"));
            dead_pids.insert(pid);
        } else if abort_batch.contains(&i) {
            // A hard death fails the unfinished tasks of the batch the worker was running.
            let (index, pid, status, panic) = expect_died(r);
            assert_eq!(index, i);
            assert_eq!(status.signal(), Some(libc::SIGABRT), "{mode:?}: {status}");
            assert!(panic.is_none());
            dead_pids.insert(pid);
        } else if kill_batch.contains(&i) {
            let (index, pid, status, _) = expect_died(r);
            assert_eq!(index, i);
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{mode:?}: {status}");
            dead_pids.insert(pid);
        } else {
            assert_eq!(r.as_ref().unwrap(), &(x * x), "{mode:?}: task {i}");
        }
    }
    assert_eq!(dead_pids.len(), 3, "three workers died: {dead_pids:?}");
    let err = results[13].as_ref().unwrap_err().to_string();
    assert!(err.contains("died running task 13"), "{err}");

    // Replaced: the pool goes on with healthy workers.
    assert_eq!(pool.map(&SQUARE, 0..50u64).unwrap()[49], 2401);
    let live: BTreeSet<u32> = pool.worker_pids().into_iter().collect();
    assert!(live.is_disjoint(&dead_pids));
    let pids: Vec<u32> = dead_pids.into_iter().collect();
    assert_gone(&pids);
}

#[test]
fn fork_dead_workers_are_reported_and_replaced() {
    let _forks = forks_allowed();
    check_deaths(Mode::Fork, fork_pool(2).build().unwrap());
    check_deaths(Mode::Fork, fork_pool(2).chunksize(4).build().unwrap());
}

#[test]
fn spawn_dead_workers_are_reported_and_replaced() {
    let _forks = forks_allowed();
    let pool = spawn_pool(2).chunksize(4).build().unwrap();
    let first = pool.worker_pids();
    check_deaths(Mode::Spawn, pool);
    assert_gone(&first);
}

#[test]
fn a_worker_killed_from_outside_is_reported() {
    let _forks = forks_allowed();
    // The parent kills the worker that holds a task which never ends on its own.
    let mut pool = fork_pool(1).build().unwrap();
    let mut it = pool
        .imap_unordered(
            |x: u64| {
                if x == 1 {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
                x
            },
            0..3u64,
        )
        .unwrap();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    let victim = it.worker_pids()[0];
    // `victim` is our unreaped child, so its pid cannot have been recycled.
    let victim_pid = rustix::process::Pid::from_raw(victim as i32).expect("a positive pid");
    rustix::process::kill_process(victim_pid, Signal::KILL).expect("kill the worker");
    let (index, pid, status, _) = expect_died(&it.next().unwrap());
    assert_eq!((index, pid), (1, victim));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(
        it.next().unwrap().unwrap(),
        2,
        "the replacement took task 2"
    );
    assert!(it.next().is_none());
}

#[test]
fn dropping_the_pool_leaves_no_children() {
    let _forks = forks_allowed();
    let slow = |x: u64| {
        std::thread::sleep(std::time::Duration::from_millis(if x == 0 {
            0
        } else {
            3_600_000
        }));
        x
    };

    // Fork mode: the iterator is dropped with tasks in flight.
    let mut pool = fork_pool(3).build().unwrap();
    let mut it = pool.imap_unordered(slow, 0..100u64).unwrap();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    let pids = it.worker_pids();
    assert_eq!(pids.len(), 3);
    drop(it);
    assert_gone(&pids);
    assert!(pool.worker_pids().is_empty());

    // Spawn mode: busy workers are killed when the call is abandoned; the pool then restarts
    // them, and dropping the pool ends the rest.
    let mut pool = spawn_pool(2).build().unwrap();
    let first = pool.worker_pids();
    let mut it = pool.imap_unordered(&FRAGILE, [1_000_013, 1u64]).unwrap();
    let _ = it.next();
    drop(it);
    assert_eq!(pool.map(&SQUARE, 0..4u64).unwrap(), vec![0, 1, 4, 9]);
    let second = pool.worker_pids();
    drop(pool);
    assert_gone(&first);
    assert_gone(&second);

    // A panic in the parent unwinds through the iterator and the pool.
    let mut seen = Vec::new();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut pool = fork_pool(2).build().unwrap();
        let mut it = pool.imap_unordered(slow, 0..10u64).unwrap();
        let _ = it.next();
        seen = it.worker_pids();
        // Unwinds like a panic, but without the panic hook: a hook printing a backtrace holds
        // std's backtrace lock, and a concurrent test forking at that moment would hand its
        // worker a lock that never unlocks (the hazard the module docs describe).
        std::panic::resume_unwind(Box::new("parent panics mid-iteration"));
    }));
    assert!(caught.is_err());
    assert_gone(&seen);
}

#[test]
fn spawn_mode_rejects_closures_and_unknown_jobs() {
    let _forks = forks_allowed();
    let mut pool = spawn_pool(1).build().unwrap();
    assert!(matches!(
        pool.imap_unordered(|x: u64| x, 0..1u64),
        Err(PoolError::UnnamedJob)
    ));
    let err = pool.map(&UNREGISTERED, 0..1u64).unwrap_err();
    assert!(matches!(err, PoolError::UnknownJob { .. }), "{err}");
    let err = pool.map(&SQUARE_AS_STRING, 0..1u64).unwrap_err();
    assert!(
        err.to_string().contains("other input or output types"),
        "{err}"
    );
    // Still usable.
    assert_eq!(pool.map(&SQUARE, [3u64]).unwrap(), vec![9]);
}

#[test]
fn spawn_without_the_hook_fails_fast() {
    let _forks = forks_allowed();
    // The re-executed binary runs no test that calls the hook: it exits at once, and the
    // pool says so instead of waiting.
    let err = spawn_pool(2)
        .worker_args(["--exact", "no_such_test", "--quiet"])
        .build()
        .unwrap_err();
    assert!(matches!(err, PoolError::WorkerStart { .. }), "{err}");
    assert!(err.to_string().contains("exited before serving"), "{err}");
}

#[test]
fn fork_mode_refuses_a_threaded_process() {
    let _forks = forks_allowed();
    // Make sure another thread exists while the pool checks.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv());
    let mut pool = fork_pool(1).allow_threads_at_fork(false).build().unwrap();
    let err = pool.map(square, 0..3u64).unwrap_err();
    assert!(
        matches!(err, PoolError::ThreadsAtFork { threads } if threads >= 2),
        "{err}"
    );
    drop(tx);
    let _ = t.join();
}

/// Set in the sub-parent that `workers_die_with_a_killed_parent` starts and then SIGKILLs.
const SUB_PARENT_ENV: &str = "SHMARENA_POOL_TEST_SUB_PARENT";

/// Answers inputs 0 and 1 at once and sleeps for an hour on the others: after two results,
/// both workers of a two-worker pool are known to be serving and then stay busy.
fn two_then_hang(x: u64) -> u64 {
    if x >= 2 {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
    x
}
static TWO_THEN_HANG: Job<u64, u64> = Job::new("two_then_hang", two_then_hang);

/// A no-op in a normal run. In the sub-parent: starts a fork-mode and a spawn-mode pool whose
/// workers are all busy in a job, prints their pids, and waits to be killed.
#[test]
fn sub_parent_entry() {
    if std::env::var_os(SUB_PARENT_ENV).is_none() {
        return;
    }
    let mut fork = fork_pool(2).build().unwrap();
    let mut spawn = spawn_pool(2).build().unwrap();
    let mut a = fork.imap_unordered(&TWO_THEN_HANG, 0..10u64).unwrap();
    let mut b = spawn.imap_unordered(&TWO_THEN_HANG, 0..10u64).unwrap();
    // The first dispatch round hands inputs 0 and 1 to different workers.
    for it in [&mut a as &mut dyn Iterator<Item = _>, &mut b] {
        it.next().unwrap().unwrap();
        it.next().unwrap().unwrap();
    }
    let mut pids = a.worker_pids();
    pids.extend(b.worker_pids());
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("PIDS {}", list.join(" "));
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    let _ = a.next(); // blocks until this process is killed
    unreachable!("the sub-parent is SIGKILLed while it waits");
}

/// Gone, or a zombie waiting for its new parent (init) to reap it: either way, not running.
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            after.starts_with('Z') || after.starts_with('X')
        }
    }
}

#[test]
fn workers_die_with_a_killed_parent() {
    let _forks = forks_allowed();
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sub_parent_entry", "--nocapture", "--quiet"])
        .env(SUB_PARENT_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let pids: Vec<u32> = out
        .lines()
        .map(Result::unwrap)
        .find_map(|l| {
            l.strip_prefix("PIDS ")
                .map(|p| p.split(' ').map(|x| x.parse().unwrap()).collect())
        })
        .expect("the sub-parent prints its workers' pids");
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert!(
        pids.iter().all(|&p| !is_dead(p)),
        "workers run before the kill"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // PR_SET_PDEATHSIG makes the kernel SIGKILL each worker when its parent dies; give the
    // kernel a bounded moment to deliver it (this is a liveness bound, not a timing claim).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !pids.iter().all(|&p| is_dead(p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "orphaned workers still running: {:?}",
            pids.iter().filter(|&&p| !is_dead(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
