//! Reads in place against the same data in private memory:
//! - a scan (sum) of a POD `u64` slice in an arena against a `Vec<u64>` (target ≥ 0.95× the
//!   throughput, so time ÷ baseline ≤ 1.05);
//! - `get` in an archived `HashMap<String, u32>` of 1M entries against
//!   `std::collections::HashMap` (target ≤ 1.2× the time).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use shmarena::ArenaOptions;
use shmarena_bench::{lookup_keys, make_map, map_arena, map_entries, size_label, test_mode, MIB};

const LOOKUPS: usize = 1000;

fn scan(c: &mut Criterion) {
    let sizes = if test_mode() {
        vec![MIB]
    } else {
        vec![MIB, 64 * MIB]
    };
    for size in sizes {
        let n = size / 8;
        let vec: Vec<u64> = (0..n as u64).collect();
        let mut b = ArenaOptions::new()
            .capacity(size as u64 + MIB as u64)
            .create()
            .expect("create");
        b.put_slice("data", &vec).expect("put");
        let arena = b.seal().expect("seal");
        let slice = arena.slice::<u64>("data").expect("slice");
        let label = size_label(size);
        let mut g = c.benchmark_group("reads/scan-u64");
        g.throughput(Throughput::Bytes(size as u64));
        // Both are warm: the first iterations fault the pages in.
        g.bench_with_input(
            BenchmarkId::new("baseline: Vec<u64>", &label),
            &vec,
            |b, v| b.iter(|| black_box(black_box(v.as_slice()).iter().sum::<u64>())),
        );
        g.bench_with_input(
            BenchmarkId::new("arena slice (sealed memfd)", &label),
            &slice,
            |b, s| b.iter(|| black_box(black_box(&s[..]).iter().sum::<u64>())),
        );
        g.finish();
    }
}

fn map_get(c: &mut Criterion) {
    let n = map_entries();
    let map = make_map(n);
    let keys = lookup_keys(n, LOOKUPS);
    let arena = map_arena(ArenaOptions::new(), &map);
    let archived = arena
        .get::<std::collections::HashMap<String, u32>>("map")
        .expect("get");
    let label = format!("{n} entries");
    let mut g = c.benchmark_group("reads/map-get");
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    g.bench_with_input(
        BenchmarkId::new("baseline: std HashMap (SipHash)", &label),
        &keys,
        |b, keys| {
            b.iter(|| {
                let mut sum = 0u64;
                for k in keys {
                    sum += u64::from(*map.get(k.as_str()).expect("hit"));
                }
                black_box(sum)
            })
        },
    );
    g.bench_with_input(
        BenchmarkId::new("archived HashMap in arena", &label),
        &keys,
        |b, keys| {
            b.iter(|| {
                let mut sum = 0u64;
                for k in keys {
                    sum += u64::from(archived.get(k.as_str()).expect("hit").to_native());
                }
                black_box(sum)
            })
        },
    );
    g.finish();
}

shmarena_bench::bench_main!(2; scan, map_get);
