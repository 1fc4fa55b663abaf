//! The arena service: connect + first value, `Subscription::current()` when nothing changed, and
//! publish-to-visible, each against a floor measured in the same run; a whole swap cycle (new
//! data written, then read by a reader) side by side with mmap-sync's write + read on the same
//! map; and the memory each keeps, written to `target/service/results.json` for `bench-report`.
//!
//! Issue 12 targets: connect + first value ≤ 100 µs (median); `current()` with no change
//! ≤ 20 ns; publish-to-visible in a reader ≤ 1 ms.
//!
//! Besides criterion's timings, `main` measures (not timed, once per run):
//! - the bytes each keeps resident for the map: mmap-sync's state file and its two data files
//!   (it writes each new version into the copy readers are not on), against shmarena's current
//!   generation (one sealed memfd) and its 4 KiB generation page;
//! - `Shmem` of `/proc/meminfo` before publishing, with two generations alive, once the reader
//!   follows (the old generation's last reader let go), and after everyone lets go: the kernel
//!   frees a generation with its last reference. `Shmem` is machine-wide, so other processes
//!   creating shared memory meanwhile add noise: the arena is 64 MiB (1 MiB in test mode), and
//!   the run is repeated 3 times, the median reported.

use std::ffi::OsString;
use std::hint::black_box;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use mmap_sync::synchronizer::Synchronizer;
use serde_json::json;
use shmarena::{Arena, ArenaOptions, Handle};
use shmarena_bench::{
    archive_entries, lookup_keys, make_map, map_arena, pod_arena, test_mode, unique_name, Map, MIB,
};

/// The size of the arenas of the connect and publish benchmarks.
const ARENA_BYTES: usize = MIB;

fn first_value(arena: &Arena) -> u64 {
    arena.slice::<u64>("data").expect("read data")[0]
}

/// The three files mmap-sync makes for a path prefix; removed on drop.
struct PeerFiles(OsString);

impl PeerFiles {
    fn paths(&self) -> Vec<OsString> {
        ["_state", "_data_0", "_data_1"]
            .iter()
            .map(|suffix| {
                let mut p = self.0.clone();
                p.push(suffix);
                p
            })
            .collect()
    }

    /// Bytes of memory its files occupy (`st_blocks * 512`, in /dev/shm).
    fn resident(&self) -> u64 {
        self.paths()
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.blocks() * 512)
            .sum()
    }
}

impl Drop for PeerFiles {
    fn drop(&mut self) {
        for p in self.paths() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Bytes of memory an arena's memfd occupies (`st_blocks * 512`).
fn allocated(arena: &Arena) -> u64 {
    let path = format!("/proc/self/fd/{}", arena.as_fd().as_raw_fd());
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// `Shmem:` of `/proc/meminfo`, in bytes.
fn shmem() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    text.lines()
        .find_map(|l| l.strip_prefix("Shmem:"))
        .and_then(|v| v.split_ascii_whitespace().next()?.parse::<u64>().ok())
        .expect("Shmem in /proc/meminfo")
        * 1024
}

fn service(c: &mut Criterion) {
    let name = unique_name("svc");
    let arena = pod_arena(ArenaOptions::new(), ARENA_BYTES);
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

    let next = [
        pod_arena(ArenaOptions::new(), ARENA_BYTES),
        pod_arena(ArenaOptions::new(), ARENA_BYTES),
    ];
    let next_fds = [next[0].as_fd().as_raw_fd(), next[1].as_fd().as_raw_fd()];
    let mut i = 0;
    let mut g = c.benchmark_group("service/publish-to-visible");
    // The floor: a reader that is handed the new memfd by other means still attaches it.
    g.bench_function("baseline: Arena::open_memfd + first value", |b| {
        b.iter(|| {
            i += 1;
            first_value(&Arena::open_memfd(pid, next_fds[i % 2]).expect("open_memfd"))
        })
    });
    g.bench_function("publish + current + first value", |b| {
        b.iter(|| {
            i += 1;
            publisher.publish(next[i % 2].clone()).expect("publish");
            first_value(&sub.current().expect("current"))
        })
    });
    g.finish();
}

/// A whole swap cycle on the same map: new data written where readers find it, then read.
fn swap_cycle(c: &mut Criterion) {
    let n = archive_entries();
    let map = make_map(n);
    let keys = lookup_keys(n, 1024);
    let label = format!("{n} entries");
    let mut k = 0usize;

    let prefix = OsString::from(format!("/dev/shm/{}", unique_name("svcpeer")));
    let _files = PeerFiles(prefix.clone());
    let mut writer = Synchronizer::new(&prefix);
    let mut reader = Synchronizer::new(&prefix);

    let name = unique_name("svcswap");
    let publisher = map_arena(ArenaOptions::new(), &map)
        .publish(&name)
        .expect("publish");
    let mut sub = shmarena::subscribe(&name).expect("subscribe");

    let mut g = c.benchmark_group("service/swap-cycle");
    g.sample_size(10);
    g.bench_function(
        BenchmarkId::new("baseline: mmap-sync write + read + get", &label),
        |b| {
            b.iter(|| {
                writer
                    .write(&map, Duration::from_secs(1))
                    .expect("mmap-sync write");
                k = (k + 1) % keys.len();
                // SAFETY: mmap-sync's contract: the result is dropped (at the end of this
                // closure) long before the writer's 1 s grace period could let it reuse this
                // copy, and the bytes are an archive of exactly `Map`, written just above by
                // `writer.write(&map)` with the same rkyv 0.7 that reads it.
                let data = unsafe { reader.read::<Map>(false) }.expect("read");
                black_box(data.get(keys[k].as_str()).copied())
            })
        },
    );
    g.bench_function(
        BenchmarkId::new("shmarena build + seal + publish + current + get", &label),
        |b| {
            b.iter(|| {
                publisher
                    .publish(map_arena(ArenaOptions::new(), &map))
                    .expect("publish");
                k = (k + 1) % keys.len();
                let handle: Handle<Map> = sub
                    .current()
                    .expect("current")
                    .handle("map")
                    .expect("handle");
                let view = handle.get().expect("get");
                black_box(view.get(keys[k].as_str()).map(|v| v.to_native()))
            })
        },
    );
    g.finish();
}

/// The memory figures of the module docs, written to `target/service/results.json`.
fn memory() {
    let n = archive_entries();
    let map = make_map(n);

    // Resident bytes for the same map: mmap-sync after two writes (both data files used)...
    let prefix = OsString::from(format!("/dev/shm/{}", unique_name("svcmem")));
    let files = PeerFiles(prefix.clone());
    let mut writer = Synchronizer::new(&prefix);
    let mut archived = 0;
    for _ in 0..2 {
        archived = writer
            .write(&map, Duration::from_secs(1))
            .expect("mmap-sync write")
            .0;
    }
    let mmap_sync_resident = files.resident();
    drop((writer, files));
    // ... and shmarena with a reader on the current generation, after a swap.
    let name = unique_name("svcmem");
    let publisher = map_arena(ArenaOptions::new(), &map)
        .publish(&name)
        .expect("publish");
    let mut sub = shmarena::subscribe(&name).expect("subscribe");
    publisher
        .publish(map_arena(ArenaOptions::new(), &map))
        .expect("publish");
    let current = sub.current().expect("current").arena().clone();
    let shmarena_arena = current.byte_len();
    let shmarena_resident = allocated(&current) + 4096;
    drop((current, sub, publisher));

    // Shmem: generations are freed with their last reader.
    let size = if test_mode() { MIB } else { 64 * MIB };
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let base = shmem();
        let name = unique_name("svcfree");
        let publisher = pod_arena(ArenaOptions::new(), size)
            .publish(&name)
            .expect("publish");
        let mut sub = shmarena::subscribe(&name).expect("subscribe");
        black_box(
            sub.current()
                .expect("current")
                .slice::<u64>("data")
                .expect("data")
                .iter()
                .sum::<u64>(),
        );
        publisher
            .publish(pod_arena(ArenaOptions::new(), size))
            .expect("publish");
        let two = shmem();
        let after_follow = {
            let arena = sub.current().expect("current");
            black_box(
                arena
                    .slice::<u64>("data")
                    .expect("data")
                    .iter()
                    .sum::<u64>(),
            );
            shmem()
        };
        drop((sub, publisher));
        let released = shmem();
        let d = |x: u64| x as i64 - base as i64;
        rounds.push([d(two), d(after_follow), d(released)]);
    }
    let median = |i: usize| {
        let mut v: Vec<i64> = rounds.iter().map(|r| r[i]).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let results = json!({
        "entries": n,
        "mmap_sync": { "archived_bytes": archived, "resident_bytes": mmap_sync_resident },
        "shmarena": { "arena_bytes": shmarena_arena, "resident_bytes": shmarena_resident },
        "shmem": {
            "arena_bytes": size,
            "two_generations_delta": median(0),
            "following_delta": median(1),
            "released_delta": median(2),
            "rounds": rounds,
        },
    });
    println!("service memory: {results}");
    if test_mode() {
        return;
    }
    // target/release/deps/service-HASH -> target/service/results.json
    shmarena_bench::write_results("service", &results);
}

/// Connect + first value against the raw floor (a bare `SCM_RIGHTS` handshake on an abstract
/// socket + `mmap` + a touch of the first page, `shmarena_bench::handshake`), interleaved A B
/// in rounds under the same load (`shmarena_bench::ab`); and `current()` with no change against
/// a relaxed load + compare. Printed, and written to `target/service/ab.json`. Issue 24 target:
/// connect ≤ 2× the floor.
fn connect_against_floor() {
    use shmarena_bench::ab::{self, each};
    let name = unique_name("svcab");
    let arena = pod_arena(ArenaOptions::new(), ARENA_BYTES);
    let _publisher = arena.publish(&name).expect("publish");
    let floor_name = format!("shmarena-bench-floor/{}", unique_name("floor"));
    let file = std::fs::File::from(arena.as_fd().try_clone_to_owned().expect("dup"));
    let floor = shmarena_bench::handshake::FdServer::start(&floor_name, file).expect("floor");
    let (rounds, round) = if test_mode() {
        (2, Duration::from_millis(20))
    } else {
        (20, Duration::from_millis(200))
    };
    let connect = ab::compare(
        "service connect + first value, 1 MiB arena",
        (
            "raw: SCM_RIGHTS handshake + mmap + touch",
            each(|| {
                black_box(floor.fetch_and_touch().expect("floor"));
            }),
        ),
        (
            "shmarena::connect + first value",
            each(|| {
                black_box(first_value(&shmarena::connect(&name).expect("connect")));
            }),
        ),
        rounds,
        round,
    );
    let mut sub = shmarena::subscribe(&name).expect("subscribe");
    let local = AtomicU32::new(1);
    let current = ab::compare(
        "service Subscription::current, no change",
        (
            "relaxed load + compare",
            each(|| {
                black_box(black_box(&local).load(Ordering::Relaxed) == 1);
            }),
        ),
        (
            "Subscription::current + byte_len",
            each(|| {
                black_box(sub.current().expect("current").byte_len());
            }),
        ),
        rounds,
        round,
    );
    for r in [&connect, &current] {
        println!(
            "{}: {} {:.0} ns, {} {:.0} ns, ratio {:.2} (range {:.2}..{:.2}, {} rounds)",
            r.name, r.a, r.a_ns, r.b, r.b_ns, r.ratio, r.ratio_range.0, r.ratio_range.1, r.rounds
        );
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/service");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(
            dir.join("ab.json"),
            serde_json::to_string_pretty(&json!([connect.to_json(), current.to_json()]))
                .expect("json"),
        );
    }
}

fn main() {
    connect_against_floor();
    // Modest sample counts: 30 samples of about a second each.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
        .configure_from_args();
    service(&mut c);
    swap_cycle(&mut c);
    c.final_summary();
    memory();
}
