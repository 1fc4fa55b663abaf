//! Validation on first access: a fresh load (a checked copy into a sealed memfd, the safe way
//! since issue 11) of a named segment or a file arena followed by
//! `get` of an archived `HashMap<String, u32>` (bytecheck runs over the whole entry), against
//! the sealed-memfd path that skips it. The throughput column is the entry's bytes over the
//! whole time, so it is a lower bound on bytecheck's own speed.
//!
//! The cost per GB of the two passes that validating paths make (`validate/per-GB`):
//! - bytecheck of a large archived `HashMap<String, u32>` (1M entries; 10M in the scale run,
//!   `SHMARENA_BENCH_HUGE=1`), opened with `always_validate` from a sealed memfd, against a
//!   `get` on the arena built in this process, which is trusted and skips it;
//! - payload checksum verification (`Arena::verify`, xxh3 over every payload) of a POD arena at
//!   64 MiB (and 1, 4, 8 GiB in the scale run), against a plain read (sum of the `u64`s) of the
//!   same bytes.

use std::os::fd::AsFd;

use criterion::{BenchmarkId, Criterion, Throughput};
use shmarena::{Arena, ArenaOptions, OpenOptions};
use shmarena_bench::{
    archive_entries, huge, make_map, map_arena, map_entries, pod_arena, size_label, unique_name,
    verify_sizes, Map, TempDir, MIB,
};

fn read(arena: &Arena) -> usize {
    arena.get::<Map>("map").expect("get").len()
}

fn validate(c: &mut Criterion) {
    let n = archive_entries();
    let map = make_map(n);
    let dir = TempDir::new().expect("temporary directory");
    let memfd = map_arena(ArenaOptions::new(), &map);
    let name = unique_name("validate");
    let named = map_arena(ArenaOptions::new().named(&name), &map);
    let path = dir.path().join("validate.arena");
    let file = map_arena(ArenaOptions::new().file(&path), &map);
    let entry_len = memfd.layout().entries[0].len;
    let label = format!("{n} entries");

    let mut g = c.benchmark_group("validate/first-access");
    g.throughput(Throughput::Bytes(entry_len));
    // The writer's own arena: its trust rows (issue 11) let `get` skip bytecheck, as in a fork
    // child or a spawned child it was shared with.
    g.bench_with_input(
        BenchmarkId::new(
            "baseline: sealed memfd built here, get (trusted: skips bytecheck)",
            &label,
        ),
        &memfd,
        |b, a| b.iter(|| read(a)),
    );
    // A descriptor with no provenance (issue 11): validated on first access.
    g.bench_with_input(
        BenchmarkId::new(
            "sealed memfd, open_fd+get (no provenance: validates)",
            &label,
        ),
        &memfd,
        |b, a| {
            b.iter(|| {
                let fd = a.as_fd().try_clone_to_owned().expect("dup");
                read(&Arena::open_fd(fd).expect("open_fd"))
            })
        },
    );
    g.bench_with_input(
        BenchmarkId::new("sealed memfd, always_validate", &label),
        &memfd,
        |b, a| b.iter(|| read(&reopen_validating(a))),
    );
    g.bench_with_input(
        BenchmarkId::new("named, load_named+get (copies)", &label),
        &name,
        |b, n| b.iter(|| read(&Arena::load_named(n).expect("load_named"))),
    );
    g.bench_with_input(
        BenchmarkId::new("file, load_file+get (copies)", &label),
        &path,
        |b, p| b.iter(|| read(&Arena::load_file(p).expect("load_file"))),
    );
    g.finish();
    drop((memfd, named, file));
}

/// `a` opened again from a duplicate of its descriptor, validating every archived entry on
/// first access (`always_validate`), as the timed part of a row.
fn reopen_validating(a: &Arena) -> Arena {
    let fd = a.as_fd().try_clone_to_owned().expect("dup");
    OpenOptions::new()
        .always_validate(true)
        .open_fd(fd)
        .expect("open_fd")
}

fn per_gb(c: &mut Criterion) {
    let mut counts = vec![map_entries()];
    if huge() {
        counts.push(10 * map_entries());
    }
    for n in counts {
        let map = make_map(n);
        let mut b = ArenaOptions::new()
            .capacity(64 * MIB as u64)
            .create()
            .expect("create");
        b.put("map", &map).expect("put");
        drop(map);
        let arena = b.seal().expect("seal");
        let entry_len = arena.layout().entries[0].len;
        let label = format!("{n} entries");
        let mut g = c.benchmark_group("validate/per-GB/bytecheck");
        g.throughput(Throughput::Bytes(entry_len));
        g.sample_size(10);
        // The writer's own arena (trusted, issue 11): `get` skips bytecheck. `open_fd` of a
        // descriptor with no provenance would validate on first access, like the row below.
        g.bench_with_input(
            BenchmarkId::new(
                "baseline: sealed memfd built here, get (trusted: skips bytecheck)",
                &label,
            ),
            &arena,
            |b, a| b.iter(|| read(a)),
        );
        g.bench_with_input(
            BenchmarkId::new("open_fd+get with always_validate (bytecheck)", &label),
            &arena,
            |b, a| b.iter(|| read(&reopen_validating(a))),
        );
        g.finish();
    }
    for size in verify_sizes() {
        let arena = pod_arena(ArenaOptions::new(), size);
        let label = size_label(size);
        let mut g = c.benchmark_group("validate/per-GB/checksum");
        g.throughput(Throughput::Bytes(size as u64));
        g.sample_size(10);
        g.bench_with_input(
            BenchmarkId::new("baseline: read every u64 (sum)", &label),
            &arena,
            |b, a| {
                let data = a.slice::<u64>("data").expect("data");
                b.iter(|| data.iter().fold(0u64, |s, &x| s.wrapping_add(x)))
            },
        );
        g.bench_with_input(
            BenchmarkId::new("Arena::verify (xxh3 of every payload)", &label),
            &arena,
            |b, a| b.iter(|| a.verify().expect("verify")),
        );
        g.finish();
    }
}

/// A small record: the "`Vec` of 1M small structs" seed shape.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Small {
    id: u32,
    weight: f32,
    label: u16,
    flag: bool,
}

/// A sequential read of `bytes`: the sum of its little-endian `u64`s (what any pass over the
/// entry costs at least).
fn read_bytes(bytes: &[u8]) -> u64 {
    bytes.chunks_exact(8).fold(0u64, |s, c| {
        s.wrapping_add(u64::from_le_bytes(c.try_into().expect("8 bytes")))
    })
}

/// The bytes of entry `index` of `arena`.
fn entry_bytes(arena: &Arena, index: usize) -> &[u8] {
    let e = &arena.layout().entries[index];
    &arena.as_bytes()[e.offset as usize..(e.offset + e.len) as usize]
}

/// An arena of `parts` entries `p0`, `p1`, … each holding `make(i)` for its share of `n`.
fn split_arena<T, F>(n: usize, parts: usize, make: F) -> Arena
where
    T: rkyv::Archive + for<'a, 'w> rkyv::Serialize<shmarena::ArenaSerializer<'a, 'w>>,
    T::Archived: rkyv::Portable + for<'a> rkyv::bytecheck::CheckBytes<shmarena::ArenaValidator<'a>>,
    F: Fn(std::ops::Range<usize>) -> T,
{
    let mut b = ArenaOptions::new().create().expect("create");
    for p in 0..parts {
        b.put(&format!("p{p}"), &make(p * n / parts..(p + 1) * n / parts))
            .expect("put");
    }
    b.seal().expect("seal")
}

/// Bytecheck per GB of the seed shapes against a sequential read of the same bytes: what a
/// process that did not opt into another process's trust rows pays on its first access to an
/// entry (issue 20). One thread validates one entry; the last row splits the data into one
/// entry per CPU and validates them from `std::thread::scope` threads (parallel over entries:
/// what `get` from several threads already gives).
fn shapes(c: &mut Criterion) {
    let n = map_entries();
    let threads = shmarena_bench::cpus().max(1);
    let small = |r: std::ops::Range<usize>| -> Vec<Small> {
        r.map(|i| Small {
            id: i as u32,
            weight: i as f32 * 0.5,
            label: (i % 1000) as u16,
            flag: i % 3 == 0,
        })
        .collect()
    };
    let map = |r: std::ops::Range<usize>| -> Map {
        r.map(|i| (shmarena_bench::key(i), i as u32)).collect()
    };
    let arenas = [
        (
            "HashMap<String,u32>",
            split_arena(n, 1, map),
            split_arena(n, threads, map),
        ),
        (
            "Vec<Small>",
            split_arena(n, 1, small),
            split_arena(n, threads, small),
        ),
    ];
    for (shape, whole, split) in &arenas {
        let len = whole.layout().entries[0].len;
        let label = format!("{shape}, {n} entries");
        let mut g = c.benchmark_group("validate/per-GB/shapes");
        g.throughput(Throughput::Bytes(len));
        g.sample_size(10);
        g.bench_with_input(
            BenchmarkId::new("baseline: sequential read of the entry's bytes", &label),
            whole,
            |b, a| b.iter(|| read_bytes(entry_bytes(a, 0))),
        );
        let fresh = |a: &Arena| {
            let fd = a.as_fd().try_clone_to_owned().expect("dup");
            Arena::open_fd(fd).expect("open_fd")
        };
        let check = |a: &Arena, name: &str| -> usize {
            if *shape == "Vec<Small>" {
                a.get::<Vec<Small>>(name).expect("get").len()
            } else {
                a.get::<Map>(name).expect("get").len()
            }
        };
        g.bench_with_input(
            BenchmarkId::new("open_fd + get, 1 thread (bytecheck once)", &label),
            whole,
            |b, a| b.iter(|| check(&fresh(a), "p0")),
        );
        g.bench_with_input(
            BenchmarkId::new(
                format!("open_fd + get of {threads} entries, {threads} threads"),
                &label,
            ),
            split,
            |b, a| {
                b.iter(|| {
                    let arena = fresh(a);
                    std::thread::scope(|s| {
                        let handles: Vec<_> = (0..threads)
                            .map(|p| {
                                let arena = &arena;
                                s.spawn(move || check(arena, &format!("p{p}")))
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| h.join().expect("thread"))
                            .sum::<usize>()
                    })
                })
            },
        );
        g.finish();
    }
}

shmarena_bench::bench_main!(3; validate, per_gb, shapes);
