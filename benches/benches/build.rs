//! Building entries against the raw floor:
//! - a POD entry (`put_slice` into a fresh arena) against creating a fresh memfd and copying the
//!   same bytes into a writable mapping of it (target ≥ 0.9× the throughput, so time ÷ baseline
//!   ≤ 1.11);
//! - an rkyv entry (`ArenaWriter::put`, which also validates what it wrote with bytecheck and
//!   checksums it; `put_unvalidated`, which does not validate) against what a two-step writer
//!   does: `rkyv::to_bytes`, then copy the bytes into a fresh memfd (target ≤ 1.0× the time).
//!   `rkyv::to_bytes` alone (no segment, no page faults) is the earlier baseline, kept as a part.
//!
//! Each iteration's output is freed right after it, outside the timing, on both sides (so a
//! sample never holds more than one segment).

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use shmarena::rkyv::{self, rancor};
use shmarena::ArenaOptions;
use shmarena_bench::{build_sizes, make_map, map_entries, pod_builder, size_label, MIB};

fn pod(c: &mut Criterion) {
    let sizes = build_sizes();
    for size in sizes {
        let data: Vec<u64> = (0..(size / 8) as u64).collect();
        let bytes: &[u8] = shmarena::bytemuck::cast_slice(&data);
        let label = size_label(size);
        let mut g = c.benchmark_group("build/pod-entry");
        g.throughput(Throughput::Bytes(size as u64));
        if size >= 64 * MIB {
            g.sample_size(10);
        }
        g.bench_with_input(
            BenchmarkId::new("baseline: memfd+fallocate+mmap+memcpy", &label),
            bytes,
            |b, bytes| {
                b.iter_batched(
                    || (),
                    |()| {
                        shmarena_bench::baseline::copy_into_fresh_segment(bytes).expect("baseline")
                    },
                    BatchSize::PerIteration,
                )
            },
        );
        // Not a variant: the part of `put_slice` that the baseline does not do, for the
        // breakdown in docs/BENCHMARKS.md.
        g.bench_with_input(
            BenchmarkId::new("part: xxh3 checksum of the data", &label),
            bytes,
            |b, bytes| b.iter(|| black_box(shmarena::format::checksum(black_box(bytes)))),
        );
        g.bench_with_input(
            BenchmarkId::new("part: ArenaOptions::create (empty)", &label),
            &size,
            |b, &size| {
                b.iter_batched(
                    || (),
                    |()| {
                        ArenaOptions::new()
                            .capacity(size as u64 + 64 * 1024)
                            .create()
                            .expect("create")
                    },
                    BatchSize::PerIteration,
                )
            },
        );
        g.bench_with_input(
            BenchmarkId::new("create+put_slice", &label),
            &data,
            |b, data| b.iter_batched(|| (), |()| pod_builder(data), BatchSize::PerIteration),
        );
        g.bench_with_input(
            BenchmarkId::new("create+put_slice+seal", &label),
            &data,
            |b, data| {
                b.iter_batched(
                    || (),
                    |()| pod_builder(data).seal().expect("seal"),
                    BatchSize::PerIteration,
                )
            },
        );
        g.finish();
    }
}

fn rkyv_entry(c: &mut Criterion) {
    let n = map_entries();
    let map = make_map(n);
    let archived_len = rkyv::to_bytes::<rancor::Error>(&map)
        .expect("to_bytes")
        .len();
    let label = format!("{n} entries");
    let mut g = c.benchmark_group("build/rkyv-entry");
    g.throughput(Throughput::Bytes(archived_len as u64));
    g.sample_size(if n >= 1_000_000 { 10 } else { 30 });
    g.bench_with_input(
        BenchmarkId::new("baseline: rkyv::to_bytes + copy into a fresh memfd", &label),
        &map,
        |b, map| {
            b.iter_batched(
                || (),
                |()| {
                    let bytes = rkyv::to_bytes::<rancor::Error>(map).expect("to_bytes");
                    shmarena_bench::baseline::copy_into_fresh_segment(&bytes).expect("copy")
                },
                BatchSize::PerIteration,
            )
        },
    );
    g.bench_with_input(
        BenchmarkId::new("part: rkyv::to_bytes (heap only)", &label),
        &map,
        |b, map| {
            b.iter_batched(
                || (),
                |()| rkyv::to_bytes::<rancor::Error>(map).expect("to_bytes"),
                BatchSize::PerIteration,
            )
        },
    );
    g.bench_with_input(
        BenchmarkId::new("part: rkyv::to_bytes + access (bytecheck)", &label),
        &map,
        |b, map| {
            b.iter_batched(
                || (),
                |()| {
                    let bytes = rkyv::to_bytes::<rancor::Error>(map).expect("to_bytes");
                    black_box(
                        rkyv::access::<rkyv::Archived<HashMap<String, u32>>, rancor::Error>(&bytes)
                            .expect("access")
                            .len(),
                    );
                    bytes
                },
                BatchSize::PerIteration,
            )
        },
    );
    for (id, validated) in [
        ("ArenaWriter::put (serialize+bytecheck+checksum)", true),
        ("ArenaWriter::put_unvalidated (serialize+checksum)", false),
    ] {
        g.bench_with_input(BenchmarkId::new(id, &label), &map, |b, map| {
            b.iter_batched(
                || (),
                |()| {
                    // The segment's creation is timed, as in the baseline.
                    let mut builder = ArenaOptions::new().create().expect("create");
                    if validated {
                        builder.put("map", map)
                    } else {
                        builder.put_unvalidated("map", map)
                    }
                    .expect("put");
                    builder
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

shmarena_bench::bench_main!(3; pod, rkyv_entry);
