//! A peer in the same run: `mmap-sync` (Cloudflare's wait-free single-writer, many-reader
//! crate, which archives with rkyv 0.7) against shmarena on the same `HashMap<String, u32>`.
//! Each iteration resolves the shared data and makes one lookup, which is how a worker uses
//! either per request:
//! - mmap-sync `read(check_bytes = false)` (the baseline) and `read(check_bytes = true)`,
//!   which validates the whole archive with bytecheck on every read;
//! - shmarena `Handle::get()` on a sealed memfd (never validated: the kernel forbids changes)
//!   and on a named segment (validated once per process, then cached).
//!
//! This file and service.rs hold the only `unsafe` outside crates/shmarena: mmap-sync's `read` is an
//! `unsafe fn`, so measuring the peer means calling it. shmarena's side is all safe code.

use std::ffi::OsString;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use mmap_sync::synchronizer::Synchronizer;
use shmarena::{ArenaOptions, Handle};
use shmarena_bench::{archive_entries, lookup_keys, make_map, map_arena, unique_name, Map};

/// The three files mmap-sync makes for a path prefix; removed on drop.
struct PeerFiles(OsString);

impl Drop for PeerFiles {
    fn drop(&mut self) {
        for suffix in ["_state", "_data_0", "_data_1"] {
            let mut p = self.0.clone();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

fn peer(c: &mut Criterion) {
    let n = archive_entries();
    let map = make_map(n);
    let keys = lookup_keys(n, 1024);
    let label = format!("{n} entries");

    // mmap-sync, in /dev/shm as its README advises.
    let prefix = OsString::from(format!("/dev/shm/{}", unique_name("peer")));
    let _files = PeerFiles(prefix.clone());
    let mut writer = Synchronizer::new(&prefix);
    writer
        .write(&map, Duration::from_secs(1))
        .expect("mmap-sync write");
    let mut reader = Synchronizer::new(&prefix);

    // shmarena, the same map in a sealed memfd and in a named segment.
    let memfd = map_arena(ArenaOptions::new(), &map);
    let memfd_handle: Handle<Map> = memfd.handle("map").expect("handle");
    let name = unique_name("peer");
    let named = map_arena(ArenaOptions::new().named(&name), &map);
    let named_handle: Handle<Map> = named.handle("map").expect("handle");

    let mut g = c.benchmark_group("peer/resolve+get");
    let mut i = 0usize;
    let mut next_key = move || {
        i = (i + 1) % keys.len();
        keys[i].clone()
    };
    g.bench_function(
        BenchmarkId::new("baseline: mmap-sync read (unchecked)", &label),
        |b| {
            b.iter_batched_ref(
                &mut next_key,
                |k| {
                    // SAFETY: mmap-sync's contract: the result is dropped before the writer's
                    // grace period (1 s) could let it reuse this copy of the data, which it never
                    // does here (it writes once, before any read), and the bytes are an archive
                    // of exactly `Map`, written by `writer.write(&map)` above with the same
                    // rkyv 0.7 that reads it.
                    let data = unsafe { reader.read::<Map>(false) }.expect("read");
                    black_box(data.get(k.as_str()).copied())
                },
                criterion::BatchSize::SmallInput,
            )
        },
    );
    g.bench_function(
        BenchmarkId::new("mmap-sync read (check_bytes)", &label),
        |b| {
            b.iter_batched_ref(
                &mut next_key,
                |k| {
                    // SAFETY: as above; this call also validates the archive with bytecheck.
                    let data = unsafe { reader.read::<Map>(true) }.expect("read");
                    black_box(data.get(k.as_str()).copied())
                },
                criterion::BatchSize::SmallInput,
            )
        },
    );
    g.bench_function(
        BenchmarkId::new("shmarena Handle::get (sealed memfd)", &label),
        |b| {
            b.iter_batched_ref(
                &mut next_key,
                |k| {
                    let view = memfd_handle.get().expect("get");
                    black_box(view.get(k.as_str()).map(|v| v.to_native()))
                },
                criterion::BatchSize::SmallInput,
            )
        },
    );
    g.bench_function(
        BenchmarkId::new("shmarena Handle::get (named, validated once)", &label),
        |b| {
            b.iter_batched_ref(
                &mut next_key,
                |k| {
                    let view = named_handle.get().expect("get");
                    black_box(view.get(k.as_str()).map(|v| v.to_native()))
                },
                criterion::BatchSize::SmallInput,
            )
        },
    );
    g.finish();
    drop((memfd, named));
}

shmarena_bench::bench_main!(2; peer);
