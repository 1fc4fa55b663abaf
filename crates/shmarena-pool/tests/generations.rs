//! `shmarena_pool::generations` with real worker processes: a publisher in this process
//! replaces the arena every few dozen results while spawned (named job) and forked (closure)
//! workers run tasks; every task sees exactly one generation, and after the last replacement
//! every worker reads the last generation.
//!
//! Each arena holds a 512 KiB `u64` slice filled with its generation number, so a task that
//! read a mix of generations, or a generation other than the one it was told, would see it.

mod workers;

use std::collections::BTreeSet;
use std::time::Duration;

use shmarena::{Arena, ArenaOptions};
use shmarena_pool::{generations, Job, Mode, Pool};
use shmarena_testkit::Scope;
use workers::{is_our_child, lock_free_panic_hook};

const LEN: usize = 64 * 1024;

fn build(generation: u64) -> Arena {
    let mut b = ArenaOptions::new().create().expect("create");
    b.put_slice_with::<u64>("gen", LEN, |d| d.fill(generation))
        .expect("fill");
    b.seal().expect("seal")
}

/// Reads the whole slice twice, with a pause between, on the generation current at the task's
/// start; returns (generation, value read, task index).
fn read_generation((name, index): (String, u64)) -> (u64, u64, u64) {
    generations::with_generation(&name, |arena, generation| {
        let s = arena.slice::<u64>("gen").expect("gen");
        let first = s[0];
        assert!(s.iter().all(|&v| v == first), "a mixed read");
        std::thread::sleep(Duration::from_micros(300));
        assert!(
            s.iter().all(|&v| v == first),
            "the arena changed under a task"
        );
        (generation, first, index)
    })
    .expect("the arena is published")
}

static READ_GENERATION: Job<(String, u64), (u64, u64, u64)> =
    Job::new("read_generation", read_generation);

/// The worker entry point: a no-op in a normal run; in a spawned worker it serves and exits.
#[test]
fn generations_worker_entry() {
    shmarena_pool::serve_worker_if_child(&[&READ_GENERATION]);
}

/// The two tests build memfd arenas (sealing fails while a just-forked child still maps the
/// builder writable) and fork: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn spawned_workers_follow_generations() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    lock_free_panic_hook();
    let scope = Scope::new();
    let name = scope.name("gens");
    let publisher = build(1).publish(&name).expect("publish");
    let mut pool = Pool::builder()
        .mode(Mode::Spawn)
        .workers(3)
        .worker_args([
            "--exact",
            "generations_worker_entry",
            "--nocapture",
            "--quiet",
        ])
        .build()
        .expect("pool");
    let pids = pool.worker_pids();

    let mut seen = BTreeSet::new();
    let tasks = (0..300u64).map(|i| (name.clone(), i));
    for r in pool.imap(&READ_GENERATION, tasks).expect("imap") {
        let (generation, value, index) = r.expect("task");
        assert_eq!(
            generation, value,
            "task {index} read another generation than it was given"
        );
        assert!(generation <= publisher.generation());
        seen.insert(generation);
        if index % 40 == 39 {
            publisher
                .publish(build(publisher.generation() + 1))
                .expect("publish a generation");
        }
    }
    assert!(
        seen.len() >= 3,
        "only generations {seen:?} were seen mid-run"
    );

    // Every worker moves to the last generation at its next task.
    let last = publisher.generation();
    assert_eq!(last, 8);
    let after = pool
        .map(&READ_GENERATION, (0..30u64).map(|i| (name.clone(), i)))
        .expect("map");
    assert!(
        after.iter().all(|&(g, v, _)| g == last && v == last),
        "{after:?}"
    );

    drop(pool);
    assert!(pids.iter().all(|&p| !is_our_child(p)));
    drop(publisher);
    scope.finish();
}

#[test]
fn forked_workers_with_a_closure() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    lock_free_panic_hook();
    let scope = Scope::new();
    let name = scope.name("genc");
    let publisher = build(1).publish(&name).expect("publish");
    // The publisher's serving thread takes no lock a worker needs: the workers only connect.
    let mut pool = Pool::builder()
        .mode(Mode::Fork)
        .workers(2)
        .allow_threads_at_fork(true)
        .build()
        .expect("pool");
    let job = generations::generational(name.clone(), |arena, generation, i: u64| {
        let s = arena.slice::<u64>("gen").expect("gen");
        assert!(s.iter().all(|&v| v == s[0]), "a mixed read");
        (generation, s[0], i)
    });
    let mut seen = BTreeSet::new();
    for r in pool.imap(&job, 0..200u64).expect("imap") {
        let (generation, value, i) = r.expect("task").expect("with_generation");
        assert_eq!(generation, value);
        seen.insert(generation);
        if i % 50 == 49 {
            publisher
                .publish(build(publisher.generation() + 1))
                .expect("publish a generation");
        }
    }
    assert!(seen.len() >= 2, "only generations {seen:?} were seen");
    let last = publisher.generation();
    let after = pool.map(&job, 0..10u64).expect("map");
    assert!(
        after.iter().all(|r| r.as_ref().unwrap().0 == last),
        "{after:?}"
    );

    // Not published: the task gets the typed error's message, not a panic.
    drop(publisher);
    let missing = generations::generational(scope.name("none"), |_, g, _: u64| g);
    let r = pool.map(&missing, 0..2u64).expect("map");
    let e = r[0].as_ref().unwrap_err();
    assert!(e.contains("no arena is published"), "{e}");
    scope.finish();
}

/// `generations` exists only with the `shmarena` feature, so the crate asks docs.rs to build
/// its documentation with every feature (issue 24): keep that setting.
#[test]
fn docs_rs_documents_every_feature() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("read Cargo.toml");
    let section = manifest
        .split("[package.metadata.docs.rs]")
        .nth(1)
        .expect("a [package.metadata.docs.rs] section");
    let section = section.split("\n[").next().unwrap_or(section);
    assert!(
        section.lines().any(|l| l.trim() == "all-features = true"),
        "{section}"
    );
}
