//! The arena service: connect + first value, `Subscription::current()` when nothing changed, and
//! publish-to-visible, each against a floor measured in the same run.
//!
//! Issue 12 targets: connect + first value ≤ 100 µs (median); `current()` with no change
//! ≤ 20 ns; publish-to-visible in a reader ≤ 1 ms.

use std::hint::black_box;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use criterion::Criterion;
use shmarena::{Arena, ArenaOptions};

fn build(tag: u64) -> Arena {
    let mut b = ArenaOptions::new().create().expect("create the arena");
    b.put_slice_with::<u64>("data", 128 * 1024, |d| d.fill(tag))
        .expect("fill the arena");
    b.seal().expect("seal the arena")
}

fn first_value(arena: &Arena) -> u64 {
    arena.slice::<u64>("data").expect("read data")[0]
}

fn service(c: &mut Criterion) {
    let name = format!("bench-svc-{}", std::process::id());
    let arena = build(1);
    let publisher = arena.publish(&name).expect("publish");

    let mut g = c.benchmark_group("service/connect");
    let pid = std::process::id();
    let fd = arena.as_fd().as_raw_fd();
    g.bench_function("baseline: Arena::open_memfd + first value", |b| {
        b.iter(|| first_value(&Arena::open_memfd(pid, fd).expect("open_memfd")))
    });
    g.bench_function("connect + first value", |b| {
        b.iter(|| first_value(&shmarena::connect(&name).expect("connect")))
    });
    g.finish();

    let mut sub = shmarena::subscribe(&name).expect("subscribe");
    let mut g = c.benchmark_group("service/current");
    let local = AtomicU32::new(1);
    g.bench_function("baseline: relaxed load + compare", |b| {
        b.iter(|| black_box(black_box(&local).load(Ordering::Relaxed) == 1))
    });
    g.bench_function("Subscription::current (no change)", |b| {
        b.iter(|| black_box(sub.current().expect("current").byte_len()))
    });
    g.finish();

    let next = [build(2), build(3)];
    let mut i = 0;
    let mut g = c.benchmark_group("service/publish-to-visible");
    g.bench_function("publish + current + first value", |b| {
        b.iter(|| {
            i += 1;
            publisher.publish(next[i % 2].clone()).expect("publish");
            first_value(sub.current().expect("current"))
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    service(&mut c);
    c.final_summary();
}
