//! Workers dying in the pool, many times over: tasks that panic, abort or SIGKILL their worker,
//! mixed at random among healthy ones, in fork-mode pools of varied sizes and chunk sizes.
//! Every task is reported exactly once (a result, or `WorkerDied` naming it), nothing hangs,
//! the pool works afterwards, and no worker is left running or as a zombie.
//!
//! CI runs about 150 worker deaths; `SHMARENA_LONG=1` runs at least 1000.

mod workers;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use shmarena_pool::{Mode, Pool, PoolError};
use workers::{is_our_child, kill_self, lock_free_panic_hook};

fn long() -> bool {
    std::env::var("SHMARENA_LONG").is_ok_and(|v| v == "1")
}

const FINE: u8 = 0;
const PANIC: u8 = 1;
const ABORT: u8 = 2;
const KILL: u8 = 3;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

#[test]
fn workers_dying_in_the_pool() {
    let long = if long() { "1" } else { "0" };
    let out = shmarena_testkit::run_isolated(
        "workers_dying_in_the_pool_isolated",
        &[
            ("SHMARENA_TEST_ISOLATED", "1".into()),
            ("SHMARENA_LONG", long.into()),
        ],
    );
    for line in out.lines().filter(|l| l.contains("worker deaths")) {
        eprintln!("{line}");
    }
}

/// Runs in its own process (see above), so the forks race no other test's threads.
#[test]
#[ignore = "entry point: runs in its own process"]
fn workers_dying_in_the_pool_isolated() {
    if std::env::var("SHMARENA_TEST_ISOLATED").is_err() {
        return;
    }
    // A panic hook that takes no lock: forked workers inherit it.
    lock_free_panic_hook();
    // No hang: the whole run has a deadline.
    let limit = if long() { 900 } else { 240 };
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(limit));
        eprintln!("HANG: the pool trials did not finish in {limit} s");
        std::process::exit(3);
    });
    let target_deaths = if long() { 1000 } else { 150 };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let (mut tasks, mut rounds, mut collateral) = (0usize, 0usize, 0usize);
    let mut dead_pids = BTreeSet::new();
    let mut kinds = [0usize; 4];
    let mut every_pid = BTreeSet::new();
    while dead_pids.len() < target_deaths {
        let workers = 1 + rng.below(4) as usize;
        let chunk = 1 + rng.below(4) as usize;
        let n = 50 + rng.below(150) as usize;
        // About one task in eight kills its worker, one way or another.
        let fates: Vec<u8> = (0..n)
            .map(|_| match rng.below(24) {
                0 => PANIC,
                1 => ABORT,
                2 => KILL,
                _ => FINE,
            })
            .collect();
        let mut pool = Pool::builder()
            .mode(Mode::Fork)
            .workers(workers)
            .chunksize(chunk)
            .allow_threads_at_fork(true)
            .build()
            .unwrap();
        let fates_ref = &fates;
        let job = move |i: u64| match fates_ref[i as usize] {
            PANIC => panic!("planned panic on {i}"),
            ABORT => std::process::abort(),
            KILL => kill_self(),
            _ => i * i,
        };
        let mut it = pool.imap(job, 0..n as u64).unwrap();
        let mut results = Vec::with_capacity(n);
        for r in &mut it {
            every_pid.extend(it_pids(&r));
            results.push(r);
        }
        every_pid.extend(it.worker_pids());
        drop(it);
        // Every task reported exactly once, in order.
        assert_eq!(results.len(), n, "one result per task");
        for (i, r) in results.iter().enumerate() {
            let fate = fates[i];
            // A hard death fails every unfinished task of its worker's batch, and a batch
            // holding task i lies within chunk - 1 tasks of it (after a panic the rest of a
            // batch is re-sent, so batches need not stay aligned).
            let window = &fates[(i + 1).saturating_sub(chunk)..(i + chunk).min(n)];
            let hard_near = window.iter().any(|f| *f == ABORT || *f == KILL);
            match r {
                Ok(v) => {
                    assert_eq!(fate, FINE, "task {i} with fate {fate} returned");
                    assert_eq!(*v, (i * i) as u64);
                }
                Err(PoolError::WorkerDied {
                    index,
                    pid,
                    status,
                    panic,
                }) => {
                    assert_eq!(*index, i as u64);
                    let status = status.expect("exit status known");
                    let own = match fate {
                        PANIC => {
                            status.code() == Some(101)
                                && panic
                                    .as_deref()
                                    .is_some_and(|p| p.contains(&format!("planned panic on {i}")))
                        }
                        ABORT => status.signal() == Some(libc::SIGABRT),
                        KILL => status.signal() == Some(libc::SIGKILL),
                        _ => false,
                    };
                    // Otherwise it went down with its batch: a hard death earlier in it.
                    let hard = matches!(status.signal(), Some(libc::SIGABRT | libc::SIGKILL));
                    assert!(
                        own || (hard && hard_near),
                        "task {i} (fate {fate}, chunk {chunk}) failed with {status} {panic:?}"
                    );
                    if own {
                        dead_pids.insert(*pid);
                        kinds[usize::from(fate)] += 1;
                    } else {
                        collateral += 1;
                    }
                }
                Err(other) => panic!("task {i} with fate {fate}: {other:?}"),
            }
        }
        // The pool works afterwards.
        let squares = pool.map(|i: u64| i * i, 0..100u64).unwrap();
        assert_eq!(squares[99], 9801);
        drop(pool);
        tasks += n;
        rounds += 1;
    }
    // No worker left running or as a zombie.
    let left: Vec<u32> = every_pid
        .iter()
        .copied()
        .filter(|p| is_our_child(*p))
        .collect();
    assert!(left.is_empty(), "workers left as children: {left:?}");
    let deaths = dead_pids.len();
    println!(
        "{deaths} worker deaths ({} panics, {} aborts, {} SIGKILLs) in {tasks} tasks over \
         {rounds} pools; {collateral} more tasks failed with their batch; {} workers seen, \
         none left; OK:workers_dying_in_the_pool_isolated",
        kinds[1],
        kinds[2],
        kinds[3],
        every_pid.len()
    );
}

fn it_pids(r: &Result<u64, PoolError>) -> Option<u32> {
    match r {
        Err(PoolError::WorkerDied { pid, .. }) => Some(*pid),
        _ => None,
    }
}
