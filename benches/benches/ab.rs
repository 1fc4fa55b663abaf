//! The headline ratios of docs/BENCHMARKS.md, measured with A and B interleaved in short rounds
//! (see `shmarena_bench::ab`) so that load from other work on a shared machine hits both sides
//! alike. Writes `target/ab/results.json`, which `bench-report` turns into a table.
//!
//! The same pairs as the criterion benches; criterion gives the absolute figures and spreads.

use std::fs::File;
use std::hint::black_box;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use shmarena::rkyv::{self, rancor};
use shmarena::{Arena, ArenaOptions, Handle};
use shmarena_bench::ab::{self, batched, each, AbResult, Routine};
use shmarena_bench::echo::{self, frame, Echo};
use shmarena_bench::{
    attach_sizes, build_sizes, builder_for_archive, first_value, lookup_keys, make_map, map_arena,
    map_entries, pod_arena, pod_builder, size_label, test_mode, unique_name, Map, GIB, MIB,
};
use shmarena_pool::{Job, Mode, Pool};

fn echo_msg(m: [u8; 64]) -> [u8; 64] {
    m
}
static ECHO: Job<[u8; 64], [u8; 64]> = Job::new("echo64", echo_msg);

struct Plan {
    rounds: usize,
    round: Duration,
    /// Rounds for the build pairs (one iteration takes milliseconds or more).
    build_rounds: usize,
}

impl Plan {
    /// Rounds for slow routines (one iteration takes milliseconds or more).
    fn slow(&self) -> Plan {
        Plan {
            rounds: self.build_rounds,
            round: self.round * 4,
            build_rounds: self.build_rounds,
        }
    }
}

/// Comparisons to run: the arguments that are not flags, matched as substrings of the
/// comparison's name (`cargo bench --bench ab -- attach`); all of them if there are none.
fn wanted(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

/// The name stems of each section's comparisons, so that a filtered run skips the setup of the
/// sections it does not want (building a 1 GiB arena for nothing would load the machine while
/// the wanted pair runs).
const SECTIONS: [(&str, &[&str]); 5] = [
    (
        "attach",
        &[
            "attach, sealed memfd from a descriptor",
            "attach, named segment",
        ],
    ),
    ("resolve", &["cached handle resolve, sealed memfd"]),
    ("reads", &["scan (sum) of u64", "map get"]),
    (
        "build",
        &[
            "build a POD entry",
            "checksum share: baseline + xxh3",
            "build an rkyv entry",
        ],
    ),
    (
        "pool",
        &[
            "round trip of a 64 B task to another process",
            "tiny tasks, u64 -> u64",
        ],
    ),
];

/// Whether section `name` has a wanted comparison: no filter, a filter that is part of one of
/// its name stems (or the section's name), or filters that match no stem of any section.
fn section_wanted(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let hits = |stems: &[&str], section: &str, f: &str| {
        section == f || stems.iter().any(|s| s.contains(f) || f.contains(s))
    };
    if filters.is_empty()
        || !filters
            .iter()
            .any(|f| SECTIONS.iter().any(|(n, stems)| hits(stems, n, f)))
    {
        return true;
    }
    let (_, stems) = SECTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a known section");
    filters.iter().any(|f| hits(stems, name, f))
}

/// A section of comparisons: runs them and appends their results.
type Section = fn(&Plan, &mut Vec<AbResult>);

/// [`ab::compare`] if `name` is wanted; otherwise an empty result that `main` drops.
fn compare(
    name: &str,
    a: (&str, Routine<'_>),
    b: (&str, Routine<'_>),
    rounds: usize,
    round: Duration,
) -> AbResult {
    if wanted(name) {
        ab::compare(name, a, b, rounds, round)
    } else {
        AbResult {
            name: name.to_owned(),
            a: a.0.to_owned(),
            b: b.0.to_owned(),
            rounds: 0,
            a_ns: f64::NAN,
            b_ns: f64::NAN,
            ratio: f64::NAN,
            ratio_range: (f64::NAN, f64::NAN),
            per_iter: None,
        }
    }
}

fn attach(plan: &Plan, out: &mut Vec<AbResult>) {
    for size in attach_sizes() {
        let label = size_label(size);
        if !wanted(&format!("attach, sealed memfd from a descriptor, {label}"))
            && !wanted(&format!("attach, named segment, {label}"))
        {
            continue;
        }
        let arena = pod_arena(ArenaOptions::new(), size);
        out.push(compare(
            &format!("attach, sealed memfd from a descriptor, {label}"),
            (
                "dup+mmap+touch",
                each(|| {
                    let f = File::from(arena.as_fd().try_clone_to_owned().expect("dup"));
                    black_box(shmarena_bench::baseline::map_and_touch(&f).expect("map"));
                }),
            ),
            (
                "Arena::open_fd + first value",
                each(|| {
                    let fd = arena.as_fd().try_clone_to_owned().expect("dup");
                    black_box(first_value(&Arena::open_fd(fd).expect("open_fd")));
                }),
            ),
            plan.rounds,
            plan.round,
        ));
        drop(arena);
        // The safe API copies a named segment (issue 11): O(size), measured up to 64 MiB.
        if size > 64 << 20 {
            continue;
        }
        let name = unique_name("ab-attach");
        let arena = pod_arena(ArenaOptions::new().named(&name), size);
        out.push(compare(
            &format!("attach, named segment, {label}"),
            (
                "shm_open+mmap+touch",
                each(|| {
                    let fd = rustix::shm::open(
                        name.as_str(),
                        rustix::shm::OFlags::RDONLY,
                        rustix::fs::Mode::empty(),
                    )
                    .expect("shm_open");
                    black_box(
                        shmarena_bench::baseline::map_and_touch(&File::from(fd)).expect("map"),
                    );
                }),
            ),
            (
                "Arena::load_named (copies) + first value",
                each(|| {
                    black_box(first_value(&Arena::load_named(&name).expect("load_named")));
                }),
            ),
            plan.rounds,
            plan.round,
        ));
        drop(arena);
    }
}

fn resolve(plan: &Plan, out: &mut Vec<AbResult>) {
    let map: Map = (0..1000).map(|i| (format!("k{i}"), i)).collect();
    let mut b = ArenaOptions::new().create().expect("create");
    b.put("map", &map).expect("put");
    let arena = b.seal().expect("seal");
    let handle: Handle<Map> = arena.handle("map").expect("handle");
    let floor = Arc::new(0u64);
    out.push(compare(
        "cached handle resolve, sealed memfd",
        (
            "Arc::clone + deref",
            each(|| {
                black_box(*Arc::clone(black_box(&floor)));
            }),
        ),
        (
            "Handle::get + len",
            each(|| {
                black_box(black_box(&handle).get().expect("get").len());
            }),
        ),
        plan.rounds,
        plan.round,
    ));
}

fn reads(plan: &Plan, out: &mut Vec<AbResult>) {
    let sizes = if test_mode() {
        vec![MIB]
    } else {
        vec![MIB, 64 * MIB]
    };
    for size in sizes {
        let vec: Vec<u64> = (0..(size / 8) as u64).collect();
        let mut b = ArenaOptions::new()
            .capacity((size + MIB) as u64)
            .create()
            .expect("create");
        b.put_slice("data", &vec).expect("put");
        let arena = b.seal().expect("seal");
        let slice = arena.slice::<u64>("data").expect("slice");
        let mut r = compare(
            &format!("scan (sum) of u64, {}", size_label(size)),
            (
                "private Vec<u64>",
                each(|| {
                    black_box(black_box(vec.as_slice()).iter().sum::<u64>());
                }),
            ),
            (
                "arena slice",
                each(|| {
                    black_box(black_box(&slice[..]).iter().sum::<u64>());
                }),
            ),
            plan.rounds,
            plan.round,
        );
        r.per_iter = Some((size as u64, "bytes"));
        out.push(r);
    }

    let n = map_entries();
    let map = make_map(n);
    let keys = lookup_keys(n, 1000);
    let arena = map_arena(ArenaOptions::new(), &map);
    let archived = arena.get::<Map>("map").expect("get");
    let mut r = compare(
        &format!("map get, {n} entries, 1000 lookups"),
        (
            "std HashMap (SipHash)",
            each(|| {
                let mut sum = 0u64;
                for k in &keys {
                    sum += u64::from(*map.get(k.as_str()).expect("hit"));
                }
                black_box(sum);
            }),
        ),
        (
            "archived HashMap in arena",
            each(|| {
                let mut sum = 0u64;
                for k in &keys {
                    sum += u64::from(archived.get(k.as_str()).expect("hit").to_native());
                }
                black_box(sum);
            }),
        ),
        plan.rounds,
        plan.round,
    );
    r.per_iter = Some((1000, "elements"));
    out.push(r);
}

fn build(plan: &Plan, out: &mut Vec<AbResult>) {
    build_pod(plan, out);
    build_rkyv(plan, out);
}

/// The raw floor of a POD build: a fresh memfd, `fallocate`, `mmap`, and a copy of `bytes`.
fn copy_baseline(bytes: &[u8]) -> (&'static str, Routine<'_>) {
    (
        "memfd+fallocate+mmap+memcpy",
        batched(
            || (),
            |()| shmarena_bench::baseline::copy_into_fresh_segment(bytes).expect("baseline"),
        ),
    )
}

/// A POD entry built, with and without `seal`, and the checksum's share, at each build size.
fn build_pod(plan: &Plan, out: &mut Vec<AbResult>) {
    let slow = plan.slow();
    for size in build_sizes() {
        let label = size_label(size);
        let names = [
            format!("build a POD entry, {label}"),
            format!("checksum share: baseline + xxh3, {label}"),
            format!("build a POD entry, {label}, without seal"),
            format!("build a POD entry, {label}, named segment"),
        ];
        if !names.iter().any(|n| wanted(n)) {
            // Not even the source vector: at 8 GiB it alone takes seconds and 8 GiB.
            continue;
        }
        let data: Vec<u64> = (0..(size / 8) as u64).collect();
        let bytes: &[u8] = shmarena::bytemuck::cast_slice(&data);
        let rounds = if size >= GIB { 7 } else { slow.rounds };
        let mut r = compare(
            &format!("build a POD entry, {}", size_label(size)),
            copy_baseline(bytes),
            (
                "create+put_slice+seal",
                batched(|| (), |()| pod_builder(&data).seal().expect("seal")),
            ),
            rounds,
            slow.round,
        );
        r.per_iter = Some((size as u64, "bytes"));
        out.push(r);
        // The baseline plus an xxh3 pass over the same bytes: how much of the gap the payload
        // checksum that the builder computes explains on its own.
        let mut r = compare(
            &format!("checksum share: baseline + xxh3, {}", size_label(size)),
            copy_baseline(bytes),
            (
                "the same + xxh3 of the bytes",
                batched(
                    || (),
                    |()| {
                        let seg = shmarena_bench::baseline::copy_into_fresh_segment(bytes)
                            .expect("baseline");
                        black_box(shmarena::format::checksum(bytes));
                        seg
                    },
                ),
            ),
            rounds,
            slow.round,
        );
        r.per_iter = Some((size as u64, "bytes"));
        out.push(r);
        // The same without `seal`, to separate its cost (unmapping the writable mapping,
        // sealing, mapping read-only and parsing) from that of `create` + `put_slice`.
        let mut r = compare(
            &format!("build a POD entry, {}, without seal", size_label(size)),
            copy_baseline(bytes),
            ("create+put_slice", batched(|| (), |()| pod_builder(&data))),
            rounds,
            slow.round,
        );
        r.per_iter = Some((size as u64, "bytes"));
        out.push(r);
        // A named segment against the default memfd, both create + put_slice + seal: what the
        // named target adds (its space reserved alongside, and the bytes written out to it at
        // `seal`). Dropping the arena (which unlinks the segment) is outside the timing.
        let name = shmarena_bench::unique_name("ab-named-build");
        let mut r = compare(
            &format!("build a POD entry, {}, named segment", size_label(size)),
            (
                "memfd: create+put_slice+seal",
                batched(|| (), |()| pod_builder(&data).seal().expect("seal")),
            ),
            (
                "named: create+put_slice+seal",
                batched(
                    || (),
                    |()| {
                        let mut b = ArenaOptions::new()
                            .named(&name)
                            .capacity(std::mem::size_of_val(&data[..]) as u64 + 64 * 1024)
                            .create()
                            .expect("create");
                        b.put_slice("data", &data).expect("put_slice");
                        b.seal().expect("seal")
                    },
                ),
            ),
            rounds,
            slow.round,
        );
        r.per_iter = Some((size as u64, "bytes"));
        out.push(r);
    }
}

/// An rkyv entry built in place (validated, unvalidated, trusted) against a two-step writer.
fn build_rkyv(plan: &Plan, out: &mut Vec<AbResult>) {
    let slow = plan.slow();
    // The rkyv entry against what a two-step writer does (mmap-sync, or any writer that
    // serializes into its own heap first): `rkyv::to_bytes`, then copy the bytes into a fresh
    // memfd, paying the same first-touch page faults as the in-place `put` pays.
    let n = map_entries();
    if !wanted(&format!("build an rkyv entry, HashMap<String, u32> of {n}")) {
        let any = [
            "ArenaWriter::put",
            "ArenaWriter::put_unvalidated",
            "ArenaWriter::put_trusted",
            "vs to_bytes alone",
        ]
        .iter()
        .any(|v| {
            wanted(&format!(
                "build an rkyv entry, HashMap<String, u32> of {n}, {v}"
            ))
        });
        if !any {
            return;
        }
    }
    let map = make_map(n);
    let len = rkyv::to_bytes::<rancor::Error>(&map)
        .expect("to_bytes")
        .len();
    let two_step = || {
        batched(
            || (),
            |()| {
                let bytes = rkyv::to_bytes::<rancor::Error>(&map).expect("to_bytes");
                shmarena_bench::baseline::copy_into_fresh_segment(&bytes).expect("copy")
            },
        )
    };
    #[derive(Clone, Copy)]
    enum Put {
        Validated,
        Unvalidated,
        Trusted,
    }
    for (variant, put) in [
        ("ArenaWriter::put", Put::Validated),
        ("ArenaWriter::put_unvalidated", Put::Unvalidated),
        ("ArenaWriter::put_trusted", Put::Trusted),
    ] {
        let mut r = compare(
            &format!("build an rkyv entry, HashMap<String, u32> of {n}, {variant}"),
            ("rkyv::to_bytes + copy into a fresh memfd", two_step()),
            (
                "ArenaOptions::create + put",
                batched(
                    || (),
                    |()| {
                        let mut b = ArenaOptions::new().create().expect("create");
                        match put {
                            Put::Validated => b.put("map", &map).expect("put"),
                            Put::Unvalidated => b.put_unvalidated("map", &map).expect("put"),
                            // SAFETY: `HashMap<String, u32>` is serialized by rkyv's own impls.
                            Put::Trusted => unsafe { b.put_trusted("map", &map).expect("put") },
                        }
                        b
                    },
                ),
            ),
            slow.rounds,
            slow.round,
        );
        r.per_iter = Some((len as u64, "bytes"));
        out.push(r);
    }
    // The old baseline, serializing into the heap without any segment (it hides the page
    // faults that a shared segment pays), for continuity with earlier reports.
    let mut r = compare(
        &format!("build an rkyv entry, HashMap<String, u32> of {n}, vs to_bytes alone"),
        (
            "rkyv::to_bytes",
            batched(
                || (),
                |()| rkyv::to_bytes::<rancor::Error>(&map).expect("to_bytes"),
            ),
        ),
        ("ArenaWriter::put", put_map(&map, len)),
        slow.rounds,
        slow.round,
    );
    r.per_iter = Some((len as u64, "bytes"));
    out.push(r);
}

/// `ArenaWriter::put` of `map` (`len` bytes archived) into a fresh memfd builder, made outside the
/// timing; the builder is dropped outside it too.
fn put_map(map: &Map, len: usize) -> Routine<'_> {
    batched(
        move || builder_for_archive(len),
        |mut b| {
            b.put("map", map).expect("put");
            b
        },
    )
}

fn add_one(x: u64) -> u64 {
    x.wrapping_add(1)
}
static ADD_ONE: Job<u64, u64> = Job::new("add_one", add_one);

/// A spawned pool of `workers` with one batch of `chunksize` in flight per worker.
fn spawn_pool(workers: usize, chunksize: usize, prefetch: usize) -> Pool {
    Pool::builder()
        .mode(Mode::Spawn)
        .workers(workers)
        .chunksize(chunksize)
        .prefetch(prefetch)
        .build()
        .expect("spawn the pool")
}

fn pool(plan: &Plan, out: &mut Vec<AbResult>) {
    // Round trips are bimodal here (LIMITS.md): both sides run with the same placement. The
    // parent is pinned to CPU 0; the echo child and the pool worker to CPU 0 ("same CPU") or
    // to CPU 1 ("across CPUs"); the unpinned row is what an application sees by default.
    let mut regimes: Vec<(&str, Option<usize>)> = vec![("unpinned", None), ("same CPU", Some(0))];
    if shmarena_bench::cpus() >= 2 {
        regimes.push(("across CPUs", Some(1)));
    }
    for (placement, cpu) in regimes {
        let name = format!("round trip of a 64 B task to another process, {placement}");
        if !wanted(&name) {
            continue;
        }
        if cpu.is_some() {
            shmarena_bench::pin(None, 0).expect("pin the parent");
        }
        let mut echo = Echo::spawn();
        let mut pool = spawn_pool(1, 1, 1);
        if let Some(cpu) = cpu {
            shmarena_bench::pin(Some(echo.pid()), cpu).expect("pin the echo child");
            for pid in pool.worker_pids() {
                shmarena_bench::pin(Some(pid), cpu).expect("pin the worker");
            }
        }
        let msg = frame(&[7u8; 64]);
        out.push(compare(
            &name,
            (
                "raw pipe to an echo process",
                each(|| {
                    black_box(echo.round_trip(&msg)[4]);
                }),
            ),
            (
                "pool, spawn, 1 worker, one task in flight",
                Box::new(|iters| {
                    let start = std::time::Instant::now();
                    let it = pool
                        .imap(&ECHO, (0..iters).map(|_| [7u8; 64]))
                        .expect("imap");
                    for r in it {
                        black_box(r.expect("task")[0]);
                    }
                    start.elapsed()
                }),
            ),
            plan.rounds,
            plan.round,
        ));
        drop((echo, pool));
        shmarena_bench::unpin(None).expect("unpin the parent");
    }

    // Throughput of tiny tasks with chunking, unpinned: each iteration is 1000 `u64` tasks.
    const CHUNK: usize = 1000;
    for workers in [1usize, 2] {
        let name = format!("tiny tasks, u64 -> u64, chunksize {CHUNK}, {workers} worker(s)");
        if !wanted(&name) {
            continue;
        }
        let mut echo = Echo::spawn();
        let batch = frame(&[1u8; CHUNK * 8]);
        let mut pool = spawn_pool(workers, CHUNK, 2);
        let mut r = compare(
            &name,
            (
                "raw pipe, batches of 1000 u64, 1 echo process",
                each(|| {
                    black_box(echo.round_trip(&batch)[4]);
                }),
            ),
            (
                "pool, spawn, imap_unordered",
                Box::new(|iters| {
                    let start = std::time::Instant::now();
                    let mut sum = 0u64;
                    let n = iters * CHUNK as u64;
                    for r in pool.imap_unordered(&ADD_ONE, 0..n).expect("imap") {
                        sum = sum.wrapping_add(r.expect("task"));
                    }
                    black_box(sum);
                    start.elapsed()
                }),
            ),
            plan.rounds,
            plan.round,
        );
        r.per_iter = Some((CHUNK as u64, "elements"));
        out.push(r);
    }
}

fn main() {
    shmarena_pool::serve_worker_if_child(&[&ECHO, &ADD_ONE]);
    echo::serve_if_child();
    let plan = if test_mode() {
        Plan {
            rounds: 3,
            round: Duration::from_millis(1),
            build_rounds: 3,
        }
    } else {
        Plan {
            rounds: 41,
            round: Duration::from_millis(10),
            build_rounds: 21,
        }
    };
    let mut results = Vec::new();
    let sections: [(&str, Section); 5] = [
        ("attach", attach),
        ("resolve", resolve),
        ("reads", reads),
        ("build", build),
        ("pool", pool),
    ];
    for (name, section) in sections {
        if section_wanted(name) {
            section(&plan, &mut results);
        }
    }
    results.retain(|r| r.rounds > 0);
    for r in &results {
        println!(
            "{:<55} {:>10.0} ns {:>10.0} ns  B/A median {:.3} (range {:.3}–{:.3}, {} rounds)",
            r.name, r.a_ns, r.b_ns, r.ratio, r.ratio_range.0, r.ratio_range.1, r.rounds
        );
        if let Some((n, "elements")) = r.per_iter {
            println!(
                "{:<55} A {:.2} M/s, B {:.2} M/s",
                "",
                n as f64 * 1e3 / r.a_ns,
                n as f64 * 1e3 / r.b_ns
            );
        }
    }
    if test_mode() || std::env::args().skip(1).any(|a| !a.starts_with("--")) {
        // Test mode, or a filtered run: print only, keep the last full results.
        return;
    }
    // target/release/deps/ab-HASH -> target/ab/results.json
    let json = serde_json::Value::Array(results.iter().map(AbResult::to_json).collect());
    shmarena_bench::write_results("ab", &json);
}
