//! Pool overhead (issue 6, item 6):
//! - per-task round trip through `shmarena_pool` against a raw pipe round trip of the same 64
//!   bytes between this process and a child that echoes them (target ≤ 1.5×);
//! - throughput of tiny tasks (`u64 -> u64`) with chunking, against the same batches echoed
//!   over a raw pipe (target ≥ 1M tasks/s).
//!
//! The echo child is this binary re-executed with `SHMARENA_BENCH_ECHO=1`; spawn-mode pool
//! workers are this binary re-executed too, served by the hook on the first line of `main`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use shmarena_bench::echo::{self, frame, Echo};
use shmarena_bench::test_mode;
use shmarena_pool::{Job, Mode, Pool, PoolError};

const MSG: usize = 64;

fn echo_msg(m: [u8; MSG]) -> [u8; MSG] {
    m
}
static ECHO: Job<[u8; MSG], [u8; MSG]> = Job::new("echo64", echo_msg);

fn add_one(x: u64) -> u64 {
    x.wrapping_add(1)
}
static ADD_ONE: Job<u64, u64> = Job::new("add_one", add_one);

fn round_trip(c: &mut Criterion) {
    let mut echo = Echo::spawn();
    let msg = frame(&[7u8; MSG]);
    let mut pool = Pool::builder()
        .mode(Mode::Spawn)
        .workers(1)
        .chunksize(1)
        .prefetch(1)
        .build()
        .expect("spawn the pool");
    let mut g = c.benchmark_group("pool/round-trip");
    g.bench_function("baseline: raw pipe round trip, 64 B, two processes", |b| {
        b.iter(|| black_box(echo.round_trip(black_box(&msg))[4]))
    });
    // One batch in flight at a time (prefetch 1, chunksize 1), so each task is a full round
    // trip; the call's setup is spread over the `iters` tasks of the stream.
    g.bench_function(
        "pool, spawn, 1 worker: a stream of 64 B tasks, one in flight",
        |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let it = pool
                    .imap(&ECHO, (0..iters).map(|_| [7u8; MSG]))
                    .expect("imap");
                for r in it {
                    black_box(r.expect("task")[0]);
                }
                start.elapsed()
            })
        },
    );
    g.bench_function("pool, spawn, 1 worker: Pool::map of one 64 B task", |b| {
        b.iter(|| black_box(pool.map(&ECHO, [[7u8; MSG]]).expect("map")[0][0]))
    });
    g.finish();
}

fn tiny_tasks(c: &mut Criterion) {
    let n: u64 = if test_mode() { 2_000 } else { 200_000 };
    let chunk = 1000usize;
    let mut g = c.benchmark_group("pool/tiny-tasks");
    g.sample_size(20);

    // Baseline: the same u64s in batches of `chunk`, echoed over a raw pipe by one process.
    let mut echo = Echo::spawn();
    let batch = frame(&vec![1u8; chunk * 8]);
    g.throughput(Throughput::Elements(n));
    g.bench_function(
        BenchmarkId::new("baseline: raw pipe, batches of 1000 u64, 1 echo process", n),
        |b| {
            b.iter(|| {
                for _ in 0..n / chunk as u64 {
                    black_box(echo.round_trip(&batch)[4]);
                }
            })
        },
    );
    drop(echo);

    for workers in [1usize, 2] {
        let mut pool = Pool::builder()
            .mode(Mode::Spawn)
            .workers(workers)
            .chunksize(chunk)
            .build()
            .expect("spawn the pool");
        g.bench_function(
            BenchmarkId::new(
                format!("pool, spawn, {workers} worker(s), chunksize {chunk}"),
                n,
            ),
            |b| b.iter(|| black_box(sum_of(pool.imap_unordered(&ADD_ONE, 0..n).expect("imap")))),
        );
    }
    let mut pool = Pool::builder()
        .mode(Mode::Fork)
        .workers(2)
        .chunksize(chunk)
        .build()
        .expect("fork pool");
    g.bench_function(
        BenchmarkId::new(
            format!("pool, fork (workers forked per call), 2 workers, chunksize {chunk}"),
            n,
        ),
        |b| b.iter(|| black_box(sum_of(pool.imap_unordered(add_one, 0..n).expect("imap")))),
    );
    // Why chunk: the same with one task per pipe write (fewer tasks, or it takes seconds).
    let small = n / 20;
    let mut pool = Pool::builder()
        .mode(Mode::Spawn)
        .workers(2)
        .chunksize(1)
        .build()
        .expect("spawn the pool");
    g.throughput(Throughput::Elements(small));
    g.bench_function(
        BenchmarkId::new("pool, spawn, 2 workers, chunksize 1", small),
        |b| {
            b.iter(|| {
                black_box(sum_of(
                    pool.imap_unordered(&ADD_ONE, 0..small).expect("imap"),
                ))
            })
        },
    );
    g.finish();
}

fn main() {
    shmarena_pool::serve_worker_if_child(&[&ECHO, &ADD_ONE]);
    echo::serve_if_child();
    let mut c = shmarena_bench::criterion_config(Duration::from_secs(2));
    round_trip(&mut c);
    tiny_tasks(&mut c);
    c.final_summary();
}

/// The sum of a call's results (each task's success checked).
fn sum_of(results: impl Iterator<Item = Result<u64, PoolError>>) -> u64 {
    results.fold(0u64, |sum, r| sum.wrapping_add(r.expect("task")))
}
