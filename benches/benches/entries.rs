//! Many entries: the cost per entry of building, sealing, opening, finding a name and reading
//! an entry's first value, from
//! 1,000 to 1,000,000 small entries (16-byte POD slices; up to 100,000 archived `u64`s through
//! `put`, shown with payload 0), beside 1,000 large ones (64 KiB each).
//! Not a criterion benchmark: each size is built 3 times (once in test mode), interleaved with
//! the others, and the medians printed, with the time per entry, so the curve shows whether a
//! build stays linear. Writes `target/entries/results.json`.
//!
//! Run: `cargo bench -p shmarena-bench --bench entries` (`-- --test` for a quick pass;
//! `SHMARENA_BENCH_ENTRIES=1000,20000` for other counts).

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::json;
use shmarena::{Arena, ArenaOptions};
use shmarena_bench::test_mode;

struct Run {
    build: Duration,
    seal: Duration,
    open: Duration,
    /// Finding the names only (`Arena::contains`: the table, no payload).
    lookup: Duration,
    /// Reading each entry's first value (`Arena::slice`: find, type check, first touch).
    read: Duration,
    lookups: usize,
}

fn entry_name(i: usize) -> String {
    format!("entry-{i:07}")
}

/// Builds `n` entries of `payload` bytes each (POD slices, or with `payload` 0 one archived
/// `u64` each, written with `put`: serialized, validated, checksummed), seals, opens the sealed
/// memfd again (header and table parsed and checked), and looks up names.
fn run(n: usize, payload: usize) -> Run {
    let data: Vec<u64> = (0..(payload / 8) as u64).collect();
    let t = Instant::now();
    let mut b = ArenaOptions::new().create().expect("create");
    for i in 0..n {
        if payload == 0 {
            b.put(&entry_name(i), &(i as u64)).expect("put");
        } else {
            b.put_slice(&entry_name(i), &data).expect("put");
        }
    }
    let build = t.elapsed();
    let t = Instant::now();
    let arena = b.seal().expect("seal");
    let seal = t.elapsed();
    let t = Instant::now();
    let fd = std::os::fd::AsFd::as_fd(&arena)
        .try_clone_to_owned()
        .expect("dup");
    let opened = Arena::open_fd(fd).expect("open");
    let open = t.elapsed();
    assert_eq!(opened.entry_count(), n);
    let lookups = 10_000.min(n * 10);
    let names: Vec<String> = (0..lookups)
        .map(|k| entry_name((k.wrapping_mul(7919)) % n))
        .collect();
    let t = Instant::now();
    for name in &names {
        assert!(opened.contains(black_box(name)));
    }
    let lookup = t.elapsed();
    let t = Instant::now();
    for name in &names {
        if payload == 0 {
            black_box(
                opened
                    .get::<u64>(black_box(name))
                    .expect("lookup")
                    .to_native(),
            );
        } else {
            black_box(opened.slice::<u64>(black_box(name)).expect("lookup")[0]);
        }
    }
    let read = t.elapsed();
    Run {
        build,
        seal,
        open,
        lookup,
        read,
        lookups,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let quick = test_mode();
    let rounds = if quick { 1 } else { 3 };
    // SHMARENA_BENCH_ENTRIES=1000,20000 replaces the small-entry counts (the large ones stay).
    let counts: Vec<usize> = match std::env::var("SHMARENA_BENCH_ENTRIES") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse().expect("SHMARENA_BENCH_ENTRIES: counts"))
            .collect(),
        Err(_) if quick => vec![1_000, 10_000, 100_000],
        Err(_) => vec![1_000, 10_000, 100_000, 1_000_000],
    };
    let mut cases: Vec<(usize, usize)> = counts.iter().map(|&n| (n, 16)).collect();
    // Archived entries (payload 0 in the table: one `u64` each through `put`).
    cases.extend(counts.iter().filter(|&&n| n <= 100_000).map(|&n| (n, 0)));
    cases.push((1_000, 64 << 10));
    let mut runs: Vec<Vec<Run>> = cases.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (k, &(n, payload)) in cases.iter().enumerate() {
            runs[k].push(run(n, payload));
        }
    }
    println!(
        "{:>9} {:>8} {:>10} {:>12} {:>10} {:>10} {:>12} {:>12}",
        "entries", "payload", "build", "build/entry", "seal", "open", "find/name", "read/name"
    );
    let mut rows = Vec::new();
    for ((n, payload), rs) in cases.iter().zip(runs) {
        let per_lookup: Vec<Duration> = rs.iter().map(|r| r.lookup / r.lookups as u32).collect();
        let build = median(rs.iter().map(|r| r.build).collect());
        let seal = median(rs.iter().map(|r| r.seal).collect());
        let open = median(rs.iter().map(|r| r.open).collect());
        let lookup = median(per_lookup);
        let read = median(rs.iter().map(|r| r.read / r.lookups as u32).collect());
        let per_entry = build / *n as u32;
        println!(
            "{n:>9} {payload:>8} {:>10.3?} {:>12.3?} {:>10.3?} {:>10.3?} {:>12.3?} {:>12.3?}",
            build, per_entry, seal, open, lookup, read
        );
        rows.push(json!({
            "entries": n, "payload_bytes": payload,
            "build_ns": build.as_nanos() as u64, "build_ns_per_entry": per_entry.as_nanos() as u64,
            "seal_ns": seal.as_nanos() as u64, "open_ns": open.as_nanos() as u64,
            "find_ns": lookup.as_nanos() as u64, "read_ns": read.as_nanos() as u64,
        }));
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/entries");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(&json!({ "rounds": rounds, "rows": rows })).unwrap(),
        );
    }
}
