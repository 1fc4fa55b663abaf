//! Cached handle resolve: `Handle::get()` and `SliceHandle::get()` once the arena is attached,
//! against looking the entry up by name on an `Arena` the caller already holds, and against
//! the floor of cloning the `Arc` that a view holds.
//!
//! Issue 6 target: ≤ 100 ns.

use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use shmarena::{Arena, ArenaOptions, Handle, SliceHandle};
use shmarena_bench::{unique_name, Map};

fn build(builder: ArenaOptions) -> Arena {
    let map: Map = (0..1000).map(|i| (format!("k{i}"), i)).collect();
    let mut b = builder.create().expect("create");
    b.put("map", &map).expect("put map");
    b.put_slice("data", &[7u64; 1024]).expect("put data");
    b.seal().expect("seal")
}

fn bench_arena(c: &mut Criterion, group: &str, arena: &Arena) {
    let handle: Handle<Map> = arena.handle("map").expect("handle");
    let slice_handle: SliceHandle<u64> = arena.slice_handle("data").expect("slice handle");
    // The first get attaches (here: finds the arena this process holds) and, for a named
    // segment, validates the entry once; everything after that is the cached path.
    assert_eq!(handle.get().expect("get").len(), 1000);
    let floor = Arc::new(0u64);
    let mut g = c.benchmark_group(group);
    g.bench_function("baseline: Arc::clone + deref", |b| {
        b.iter(|| black_box(*Arc::clone(black_box(&floor))))
    });
    g.bench_function("Arena::get by name", |b| {
        b.iter(|| black_box(arena.get::<Map>(black_box("map")).expect("get").len()))
    });
    g.bench_function("Handle::get", |b| {
        b.iter(|| black_box(black_box(&handle).get().expect("get").len()))
    });
    g.bench_function("SliceHandle::get", |b| {
        b.iter(|| black_box(black_box(&slice_handle).get().expect("get")[0]))
    });
    g.finish();
}

fn resolve(c: &mut Criterion) {
    let memfd = build(ArenaOptions::new());
    bench_arena(c, "resolve/memfd", &memfd);
    drop(memfd);
    let name = unique_name("resolve");
    let named = build(ArenaOptions::new().named(&name));
    bench_arena(c, "resolve/named", &named);
    drop(named);
}

shmarena_bench::bench_main!(2; resolve);
