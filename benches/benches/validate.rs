//! Validation on first access: a fresh load (a checked copy into a sealed memfd, the safe way
//! since issue 11) of a named segment or a file arena followed by
//! `get` of an archived `HashMap<String, u32>` (bytecheck runs over the whole entry), against
//! the sealed-memfd path that skips it. The throughput column is the entry's bytes over the
//! whole time, so it is a lower bound on bytecheck's own speed.

use std::os::fd::AsFd;

use criterion::{BenchmarkId, Criterion, Throughput};
use shmarena::{Arena, ArenaOptions, OpenOptions};
use shmarena_bench::{archive_entries, make_map, map_arena, unique_name, Map, TempDir};

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
        |b, a| {
            b.iter(|| {
                let fd = a.as_fd().try_clone_to_owned().expect("dup");
                read(
                    &OpenOptions::new()
                        .always_validate(true)
                        .open_fd(fd)
                        .expect("open_fd"),
                )
            })
        },
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

shmarena_bench::bench_main!(3; validate);
