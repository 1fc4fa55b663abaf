//! How a pool is set up and fed: built on a thread that later ends (a tokio blocking thread),
//! a per-worker initializer in both modes, and the automatic chunksize.
//!
//! Spawn-mode workers re-execute this test binary with `--exact setup_worker_entry`.

mod workers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmarena_pool::{Job, Mode, Pool, PoolBuilder, PoolError};
use workers::{is_our_child, lock_free_panic_hook};

fn square(x: u64) -> u64 {
    x * x
}

/// What the initializer left in this worker (0 if it did not run).
static INITIALIZED: AtomicU64 = AtomicU64::new(0);

fn set_up(value: u64) {
    INITIALIZED.store(value, Ordering::SeqCst);
}

fn read_setup(x: u64) -> u64 {
    INITIALIZED.load(Ordering::SeqCst) + x
}

fn my_pid(_: u64) -> u32 {
    std::process::id()
}

fn my_pid_big(_: Vec<u8>) -> u32 {
    std::process::id()
}

fn refuse_to_set_up(_: u64) {
    panic!("this initializer always fails");
}

static SQUARE: Job<u64, u64> = Job::new("square", square);
static SET_UP: Job<u64, ()> = Job::new("set_up", set_up);
static READ_SETUP: Job<u64, u64> = Job::new("read_setup", read_setup);
static MY_PID: Job<u64, u32> = Job::new("my_pid", my_pid);
static MY_PID_BIG: Job<Vec<u8>, u32> = Job::new("my_pid_big", my_pid_big);
static BAD_SETUP: Job<u64, ()> = Job::new("bad_setup", refuse_to_set_up);

/// The worker entry point: a no-op in a normal run; in a spawned worker it serves and exits.
#[test]
fn setup_worker_entry() {
    shmarena_pool::serve_worker_if_child(&[
        &SQUARE,
        &SET_UP,
        &READ_SETUP,
        &MY_PID,
        &MY_PID_BIG,
        &BAD_SETUP,
    ]);
}

fn spawn_pool(workers: usize) -> PoolBuilder {
    lock_free_panic_hook();
    Pool::builder()
        .mode(Mode::Spawn)
        .workers(workers)
        .worker_args(["--exact", "setup_worker_entry", "--nocapture", "--quiet"])
}

fn fork_pool(workers: usize) -> PoolBuilder {
    lock_free_panic_hook();
    Pool::builder()
        .mode(Mode::Fork)
        .workers(workers)
        .allow_threads_at_fork(true)
}

/// This thread's id, from `/proc/thread-self` (a link to `<pid>/task/<tid>`).
fn thread_id() -> String {
    let link = std::fs::read_link("/proc/thread-self").expect("read /proc/thread-self");
    link.file_name().unwrap().to_string_lossy().into_owned()
}

fn wait_for_thread_exit(tid: &str) {
    let path = format!("/proc/self/task/{tid}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&path).exists() {
        assert!(
            Instant::now() < deadline,
            "tokio never retired thread {tid}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_keep_alive(Duration::from_millis(50))
        .build()
        .unwrap()
}

#[test]
fn spawn_pool_outlives_the_tokio_blocking_thread_that_built_it() {
    let rt = runtime();
    let (mut pool, tid) = rt.block_on(async {
        tokio::task::spawn_blocking(|| (spawn_pool(2).build().unwrap(), thread_id()))
            .await
            .unwrap()
    });
    // Tokio retires an idle blocking thread after `thread_keep_alive`.
    wait_for_thread_exit(&tid);
    std::thread::sleep(Duration::from_millis(100));
    let pids = pool.worker_pids();
    assert_eq!(
        pids.len(),
        2,
        "the workers died with the thread that built the pool"
    );
    let results: Vec<Result<u64, PoolError>> =
        pool.imap_unordered(&SQUARE, 0..1000u64).unwrap().collect();
    let died = results
        .iter()
        .filter(|r| matches!(r, Err(PoolError::WorkerDied { .. })))
        .count();
    assert_eq!(died, 0, "tasks lost to dead workers");
    let mut values: Vec<u64> = results.into_iter().map(Result::unwrap).collect();
    values.sort_unstable();
    assert_eq!(values, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(pool.worker_pids(), pids, "no worker was replaced");
    drop(pool);
    assert!(
        pids.iter().all(|&p| !is_our_child(p)),
        "workers left behind"
    );
}

#[test]
fn a_pool_used_from_tokio_blocking_threads_in_both_modes() {
    let rt = runtime();
    for mode in [Mode::Spawn, Mode::Fork] {
        let (pool, tid) = rt.block_on(async move {
            tokio::task::spawn_blocking(move || {
                let pool = match mode {
                    Mode::Spawn => spawn_pool(2),
                    Mode::Fork => fork_pool(2),
                };
                (pool.build().unwrap(), thread_id())
            })
            .await
            .unwrap()
        });
        wait_for_thread_exit(&tid);
        // Another blocking thread runs the call.
        let sum: u64 = rt.block_on(async move {
            tokio::task::spawn_blocking(move || {
                let mut pool = pool;
                pool.map(&SQUARE, 0..1000u64).unwrap().into_iter().sum()
            })
            .await
            .unwrap()
        });
        assert_eq!(sum, (0..1000u64).map(|x| x * x).sum::<u64>(), "{mode:?}");
    }
}

#[test]
fn worker_pids_lists_only_live_workers() {
    let pool = spawn_pool(2).build().unwrap();
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pids[0] as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.worker_pids().len() == 2 {
        assert!(Instant::now() < deadline, "a killed worker is still listed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pool.worker_pids(), [pids[1]]);
}

#[test]
fn a_worker_killed_between_calls_gets_no_tasks() {
    let mut pool = spawn_pool(2).build().unwrap();
    let pids = pool.worker_pids();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pids[0] as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    while pool.worker_pids().len() == 2 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let results: Vec<_> = pool.imap_unordered(&SQUARE, 0..100u64).unwrap().collect();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(pool.worker_pids().len(), 2, "the dead worker was replaced");
}

#[test]
fn the_initializer_runs_once_in_every_worker_in_both_modes() {
    for mode in [Mode::Spawn, Mode::Fork] {
        let builder = match mode {
            Mode::Spawn => spawn_pool(2),
            Mode::Fork => fork_pool(2),
        };
        let mut pool = builder.initializer(&SET_UP, 1000).unwrap().build().unwrap();
        let out = pool.map(&READ_SETUP, 0..50u64).unwrap();
        assert_eq!(out, (1000..1050u64).collect::<Vec<_>>(), "{mode:?}");
    }
    // Without one, nothing ran.
    let mut pool = fork_pool(1).build().unwrap();
    assert_eq!(pool.map(&READ_SETUP, [7u64]).unwrap(), [7]);
}

#[test]
fn a_failing_initializer_is_a_start_error() {
    let err = spawn_pool(1)
        .initializer(&BAD_SETUP, 0)
        .unwrap()
        .startup_timeout(Duration::from_secs(20))
        .build()
        .unwrap_err();
    assert!(matches!(err, PoolError::WorkerStart { .. }), "{err:?}");
    let mut pool = fork_pool(1)
        .initializer(&BAD_SETUP, 0)
        .unwrap()
        .build()
        .unwrap();
    let err = pool.map(&SQUARE, 0..4u64).unwrap_err();
    assert!(matches!(err, PoolError::NoWorkers { .. }), "{err:?}");
}

/// Index order of `pids`: how many times the worker changes from one task to the next.
fn switches(pids: &[u32]) -> usize {
    pids.windows(2).filter(|w| w[0] != w[1]).count()
}

#[test]
fn chunksize_is_picked_from_the_input_length() {
    let mut pool = spawn_pool(2).build().unwrap();
    assert_eq!(pool.chunksize(), None);
    // 1000 tasks, 2 workers: batches of 125, so at most 7 switches in index order.
    let pids = pool.map(&MY_PID, 0..1000u64).unwrap();
    assert!(switches(&pids) <= 7, "{} switches", switches(&pids));
    // An iterator of unknown length still gets growing batches.
    let pids = pool.map(&MY_PID, (0..1000u64).filter(|_| true)).unwrap();
    assert!(switches(&pids) < 100, "{} switches", switches(&pids));
    // A chunksize set by hand is kept.
    pool.set_chunksize(Some(1));
    assert_eq!(pool.chunksize(), Some(1));
}

#[test]
fn automatic_batches_of_large_tasks_stop_at_a_mebibyte() {
    let mut pool = spawn_pool(2).build().unwrap();
    // 40 tasks of 600 KiB: by count alone, batches of 5 (at most 7 switches in index order);
    // the 1 MiB cap closes each batch after 2 tasks, 20 batches shared by the two workers.
    let tasks = (0..40).map(|i| vec![i as u8; 600 << 10]);
    let tasks: Vec<Vec<u8>> = tasks.collect();
    let pids = pool.map(&MY_PID_BIG, tasks.clone()).unwrap();
    assert_eq!(pids.len(), 40);
    assert!(
        switches(&pids) > 7,
        "{} switches: {pids:?}",
        switches(&pids)
    );
    // A chunksize set by hand is kept, whatever the bytes.
    pool.set_chunksize(Some(20));
    let pids = pool.map(&MY_PID_BIG, tasks).unwrap();
    assert!(switches(&pids) <= 1, "{} switches", switches(&pids));
}
