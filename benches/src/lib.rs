//! Shared pieces of the shmarena benchmarks: the one Criterion setup ([`criterion_config`],
//! [`bench_main!`]), the raw floors they compare with ([`baseline`]), sizes chosen from the
//! environment, unique segment names, deterministic data, and clean-up of what a benchmark made.
//!
//! Every benchmark pairs what it measures with a baseline measured in the same run; the
//! `bench-report` binary turns criterion's JSON into the tables of docs/BENCHMARKS.md.
//!
//! Environment variables:
//! - `SHMARENA_BENCH_BIG=1`: add the large sizes (1 GiB arenas, 1M-entry maps where the
//!   default is smaller).
//! - `SHMARENA_BENCH_4G=1`: add 4 GiB arenas to the attach benchmark.
//! - `SHMARENA_BENCH_HUGE=1`: the scale run: 1, 4 and 8 GiB arenas in the attach, POD-build and
//!   validation-per-GB benchmarks (`ab` included), and a 10M-entry map in the bytecheck-per-GB
//!   one. Needs about 2.1× the largest size in free memory (the source `Vec` and the segment
//!   built from it; the baseline's segment is freed before the library's is built) and as much
//!   room in /dev/shm for the named-segment attach.
//!
//! Run under `cargo bench -- --test` (as CI does) every benchmark uses only its smallest size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use criterion::Criterion;
use shmarena::{Arena, ArenaOptions, ArenaWriter};

pub mod ab;
pub mod baseline;
pub mod echo;
pub mod handshake;
pub mod report;

/// The Criterion setup of every benchmark: half a second of warm-up, `measurement` of
/// measurement per benchmark, then the command line (`--test`, filters, `--save-baseline`…).
pub fn criterion_config(measurement: Duration) -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(measurement)
        .configure_from_args()
}

/// The `main` of a benchmark file: runs each group function (`fn(&mut Criterion)`) with
/// [`criterion_config`] and `measurement_secs` seconds of measurement, then prints Criterion's
/// summary.
///
/// ```ignore
/// shmarena_bench::bench_main!(2; attach);
/// ```
#[macro_export]
macro_rules! bench_main {
    ($measurement_secs:expr; $($group:path),+ $(,)?) => {
        fn main() {
            let mut c = $crate::criterion_config(::std::time::Duration::from_secs($measurement_secs));
            $($group(&mut c);)+
            c.final_summary();
        }
    };
}

/// One MiB.
pub const MIB: usize = 1 << 20;
/// One GiB.
pub const GIB: usize = 1 << 30;

/// Whether criterion runs in test mode (`--test`): each benchmark once, to prove it works.
pub fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn env_on(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Writes a benchmark binary's results, as pretty JSON, to `target/<bench>/results.json`
/// (`bench` is its name, e.g. `ab`; the binary runs from `target/<profile>/deps`), where
/// `bench-report` reads them, and prints the path.
pub fn write_results(bench: &str, json: &serde_json::Value) {
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the bench runs from target/<profile>/deps");
    let dir = target.join(bench);
    std::fs::create_dir_all(&dir).expect("create target/<bench>");
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(json).expect("json"))
        .expect("write results.json");
    println!("wrote {}", path.display());
}

/// Whether the large sizes were asked for (`SHMARENA_BENCH_BIG=1`), and not in test mode.
pub fn big() -> bool {
    env_on("SHMARENA_BENCH_BIG") && !test_mode()
}

/// Whether the scale run was asked for (`SHMARENA_BENCH_HUGE=1`), and not in test mode.
pub fn huge() -> bool {
    env_on("SHMARENA_BENCH_HUGE") && !test_mode()
}

/// 1 GiB with `SHMARENA_BENCH_BIG=1` or the scale run, 4 GiB with `SHMARENA_BENCH_4G=1` or the
/// scale run, and 8 GiB with the scale run.
fn large_sizes() -> Vec<usize> {
    let mut sizes = Vec::new();
    if big() || huge() {
        sizes.push(GIB);
    }
    if (env_on("SHMARENA_BENCH_4G") && !test_mode()) || huge() {
        sizes.push(4 * GIB);
    }
    if huge() {
        sizes.push(8 * GIB);
    }
    sizes
}

/// Arena sizes for the attach benchmark: 1 MiB and 64 MiB by default, plus the large sizes of
/// the environment (see the crate docs); 1 MiB alone in test mode.
pub fn attach_sizes() -> Vec<usize> {
    if test_mode() {
        return vec![MIB];
    }
    let mut sizes = vec![MIB, 64 * MIB];
    sizes.extend(large_sizes());
    sizes
}

/// Sizes of the POD entries the build benchmarks write: 1 MiB and 64 MiB, plus 1 GiB with
/// `SHMARENA_BENCH_BIG=1`, and 4 and 8 GiB in the scale run (`SHMARENA_BENCH_HUGE=1`); 1 MiB
/// alone in test mode.
pub fn build_sizes() -> Vec<usize> {
    if test_mode() {
        return vec![MIB];
    }
    let mut sizes = vec![MIB, 64 * MIB];
    sizes.extend(
        large_sizes()
            .into_iter()
            .filter(|&s| s != 4 * GIB || huge()),
    );
    sizes
}

/// Payload sizes for the checksum-verification-per-GB benchmark: 64 MiB, plus the large sizes
/// of the environment; 1 MiB alone in test mode.
pub fn verify_sizes() -> Vec<usize> {
    if test_mode() {
        return vec![MIB];
    }
    let mut sizes = vec![64 * MIB];
    sizes.extend(large_sizes());
    sizes
}

/// Entries of the maps that the validate and peer benchmarks archive: 100K by default,
/// 1M with `SHMARENA_BENCH_BIG=1`, 1K in test mode.
pub fn archive_entries() -> usize {
    if test_mode() {
        1_000
    } else if big() {
        1_000_000
    } else {
        100_000
    }
}

/// Entries of the `HashMap<String, u32>` used by the map benchmarks: 1M by default (the size
/// issue 6 names), 10K in test mode.
pub fn map_entries() -> usize {
    if test_mode() {
        10_000
    } else {
        1_000_000
    }
}

/// A human label for a byte size: `1MiB`, `64MiB`, `1GiB`.
pub fn size_label(bytes: usize) -> String {
    if bytes >= GIB && bytes % GIB == 0 {
        format!("{}GiB", bytes / GIB)
    } else if bytes >= MIB && bytes % MIB == 0 {
        format!("{}MiB", bytes / MIB)
    } else {
        format!("{}KiB", bytes.div_ceil(1024))
    }
}

/// Pins process `pid` (`None`: this process, every thread created after it, and every child
/// it starts after it) to CPU `cpu`. Round trips between processes are bimodal on a 2-core VM
/// (about 2 µs when both ends share a CPU, about 50 µs when the reply wakes the other, idle, CPU),
/// so a comparison of two round trips means something only when both sides run with the same
/// placement.
pub fn pin(pid: Option<u32>, cpu: usize) -> std::io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let pid = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32));
    rustix::thread::sched_setaffinity(pid, &set).map_err(std::io::Error::from)
}

/// Lets process `pid` (`None`: this process) run on every CPU again.
pub fn unpin(pid: Option<u32>) -> std::io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    for cpu in 0..rustix::thread::CpuSet::MAX_CPU {
        set.set(cpu);
    }
    let pid = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32));
    rustix::thread::sched_setaffinity(pid, &set).map_err(std::io::Error::from)
}

/// The number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A segment name unique to this process and call, at most 30 bytes, in the `sa…-` form that
/// CI's leftover check looks for.
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag.chars().take(12).collect();
    format!("sab{:x}{n:x}-{tag}", std::process::id())
}

/// A private temporary directory for file arenas, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/shmarena-bench-<pid>-<n>`.
    pub fn new() -> std::io::Result<TempDir> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("shmarena-bench-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A small deterministic generator (SplitMix64), so every run measures the same data: the
/// seed scenario's, shared rather than copied.
pub use shmarena_classify::data::Rng;

/// The key of entry `i` of the benchmark maps: 8 to 23 bytes of lowercase letters and digits.
pub fn key(i: usize) -> String {
    let mut rng = Rng::new(i as u64);
    let len = 8 + (rng.next_u64() % 16) as usize;
    let mut s = format!("{i:x}-");
    while s.len() < len {
        s.push(char::from(b'a' + (rng.next_u64() % 26) as u8));
    }
    s
}

/// The map the benchmarks archive and read.
pub type Map = HashMap<String, u32>;

/// A [`Map`] of `n` entries: `key(i) -> i`.
pub fn make_map(n: usize) -> Map {
    (0..n).map(|i| (key(i), i as u32)).collect()
}

/// `count` keys of a map of `n` entries, in a scattered order, for lookups that hit.
pub fn lookup_keys(n: usize, count: usize) -> Vec<String> {
    let mut rng = Rng::new(0x5eed);
    (0..count)
        .map(|_| key((rng.next_u64() % n as u64) as usize))
        .collect()
}

/// A sealed arena of up to 64 MiB, created with `options` (a backing), holding `map` as its
/// entry `"map"`.
pub fn map_arena(options: ArenaOptions, map: &Map) -> Arena {
    let mut b = options.capacity(64 * MIB as u64).create().expect("create");
    b.put("map", map).expect("put");
    b.seal().expect("seal")
}

/// A sealed arena of `size` bytes (at least 64 KiB), created with `options` (a backing): one
/// `u64` slice named `"data"` holding 1, 2, 3, … that fills it but for 64 KiB.
pub fn pod_arena(options: ArenaOptions, size: usize) -> Arena {
    let count = (size - 64 * 1024) / 8;
    let mut b = options.capacity(size as u64).create().expect("create");
    b.put_slice_with::<u64>("data", count, |d| {
        for (i, x) in d.iter_mut().enumerate() {
            *x = i as u64 + 1;
        }
    })
    .expect("fill");
    b.seal().expect("seal")
}

/// The first value of a [`pod_arena`]'s `"data"`: what the attach benchmarks read.
pub fn first_value(arena: &Arena) -> u64 {
    arena.slice::<u64>("data").expect("data")[0]
}

/// A new, empty memfd builder with room to archive a value of `archived_len` bytes (twice that
/// plus 1 MiB): what the rkyv build benchmarks `put` into.
pub fn builder_for_archive(archived_len: usize) -> ArenaWriter {
    ArenaOptions::new()
        .capacity(2 * archived_len as u64 + MIB as u64)
        .create()
        .expect("create")
}

/// A new memfd builder with room for `data` (plus 64 KiB), holding `data` as its POD entry
/// `"data"`, not sealed: what the build benchmarks time, with or without the `seal`.
pub fn pod_builder(data: &[u64]) -> ArenaWriter {
    let mut b = ArenaOptions::new()
        .capacity(std::mem::size_of_val(data) as u64 + 64 * 1024)
        .create()
        .expect("create");
    b.put_slice("data", data).expect("put_slice");
    b
}
