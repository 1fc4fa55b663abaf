//! `shmarena::service::generations` without a pool: a publisher in this process replaces the
//! arena while tasks run on threads (each thread holds its own subscription); every task sees
//! one generation from start to end, the next task the newest one, and `release` and errors
//! behave as documented. The worker-process side (spawned and forked workers of a real pool)
//! is `crates/shmarena-pool/tests/generations.rs`, through the pool's re-export.
//!
//! The arenas are memfds and the names abstract sockets: nothing here touches /dev/shm.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Barrier;

use shmarena::service::generations;
use shmarena::{Arena, ArenaOptions};

const LEN: usize = 16 * 1024;

/// A published name unique to this process and call.
fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("gen{}-{n}{tag}", std::process::id())
}

fn build(generation: u64) -> Arena {
    let mut b = ArenaOptions::new().create().expect("create");
    b.put_slice_with::<u64>("gen", LEN, |d| d.fill(generation))
        .expect("fill");
    b.seal().expect("seal")
}

/// The generation number and the value every element of the arena's slice holds (asserting
/// that they all hold the same one).
fn read(arena: &Arena) -> u64 {
    let s = arena.slice::<u64>("gen").expect("gen");
    let first = s[0];
    assert!(s.iter().all(|&v| v == first), "a mixed read");
    first
}

#[test]
fn a_task_keeps_its_generation_and_the_next_task_gets_the_newest() {
    let name = unique_name("keep");
    let publisher = build(1).publish(&name).expect("publish");
    generations::with_generation(&name, |arena, generation| {
        assert_eq!((generation, read(arena)), (1, 1));
        // Replaced while the task runs: the task's arena does not change.
        publisher.publish(build(2)).expect("publish 2");
        assert_eq!(read(arena), 1);
    })
    .expect("published");
    let (arena, generation) = generations::current(&name).expect("current");
    assert_eq!((generation, read(&arena)), (2, 2));
    drop(arena);
    assert!(generations::release(&name));
    assert!(!generations::release(&name), "released twice");
    drop(publisher);
}

#[test]
fn each_thread_follows_the_generations_on_its_own_subscription() {
    let name = unique_name("thr");
    let publisher = build(1).publish(&name).expect("publish");
    let threads = 3;
    let first = Barrier::new(threads + 1);
    let replaced = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..threads {
            handles.push(s.spawn(|| {
                let job = generations::generational(name.clone(), |arena, generation, ()| {
                    (generation, read(arena))
                });
                let before = job(()).expect("first task");
                first.wait();
                replaced.wait();
                let after = job(()).expect("second task");
                // This thread's subscription, not another's, is the one released.
                assert!(generations::release(&name));
                (before, after)
            }));
        }
        first.wait();
        publisher.publish(build(2)).expect("publish 2");
        replaced.wait();
        for h in handles {
            assert_eq!(h.join().expect("thread"), ((1, 1), (2, 2)));
        }
    });
    // This thread never subscribed.
    assert!(!generations::release(&name));
    drop(publisher);
}

#[test]
fn an_unpublished_name_is_an_error_and_the_task_does_not_run() {
    let name = unique_name("none");
    let mut ran = false;
    let err = generations::with_generation(&name, |_, _| ran = true).unwrap_err();
    assert!(!ran, "the task ran without an arena");
    assert!(
        matches!(
            err,
            shmarena::Error::Service(shmarena::service::ServiceError::NotPublished { .. })
        ),
        "{err:?}"
    );
    let job = generations::generational(name.clone(), |_, _, ()| ());
    let message = job(()).unwrap_err();
    assert!(message.contains(&name), "{message}");
    assert!(
        !generations::release(&name),
        "a failed subscribe is not kept"
    );
}
