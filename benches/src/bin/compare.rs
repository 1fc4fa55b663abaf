//! The seed scenario side by side: the `classify` workload (a lexicon of words, 1M rows of text
//! to label) run five ways, alternated over several rounds, each run in a fresh process so that
//! one variant's memory never shows in another's.
//!
//! - (a) shmarena, fork mode: the classifier in a sealed memfd, forked workers read it in place;
//! - (b) shmarena, spawn mode: the same, spawned workers attach by handle;
//! - (c) the classifier serialized to the workers with every chunk (the pickling anti-pattern);
//! - (d) the classifier copied once into each worker's heap (the initializer pattern);
//! - (e) the classifier built in the parent's private heap and inherited by fork (the globals
//!   trick).
//!
//! ```text
//! compare [--quick] [--rounds N] [--words N] [--rows N] [--workers N] [--no-sweeps] [--write FILE]
//! ```
//!
//! Memory is the sum over the parent and its workers of `Pss` plus `VmPTE`, sampled while the
//! results come in, at its peak. (c) runs on a hundredth of the rows (its rate is what counts).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shmarena::{ArenaOptions, Handle, SliceHandle};
use shmarena_pool::{Job, Mode, Pool, PoolBuilder};

// The classify example's dataset, memory figures and worker messages.
use shmarena_classify::data::{self, Classifier, DIMS, LABELS};
use shmarena_classify::metrics::ProcessMemory;
use shmarena_classify::tasks::{Counts, FatTask, Task};

static SHARED: Job<Task, Counts> = Job::new("compare_shared", shared_task);
static FAT: Job<FatTask, Counts> = Job::new("compare_fat", fat_task);
static COPY_ONCE: Job<Task, Counts> = Job::new("compare_copy_once", copy_once_task);

static SET_UP: OnceLock<()> = OnceLock::new();

fn count<F: Fn(&str) -> Option<(u16, f32)>>(rows: &[String], lookup: F, cents: &[f32]) -> Counts {
    let mut out = Counts {
        pid: std::process::id(),
        ..Counts::default()
    };
    for row in rows {
        out.labels[usize::from(data::classify_text(data::text_of(row), &lookup, cents))] += 1;
    }
    out.rows = rows.len() as u32;
    out
}

fn shared_task(task: Task) -> Counts {
    let t = Instant::now();
    let (lex, cents) = match (task.lexicon.get(), task.centroids.get()) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(e), _) | (_, Err(e)) => panic!("cannot attach: {e}"),
    };
    let setup = t.elapsed();
    let lookup = |w: &str| {
        lex.lexicon
            .get(w)
            .map(|v| (v.0.to_native(), v.1.to_native()))
    };
    let mut out = count(&task.rows, lookup, &cents);
    if SET_UP.set(()).is_ok() {
        out.setup_ns = setup.as_nanos() as u64;
    }
    out
}

fn fat_task(task: FatTask) -> Counts {
    let t = Instant::now();
    let classifier = rkyv::from_bytes::<Classifier, rkyv::rancor::Error>(&task.classifier)
        .expect("classifier bytes");
    let setup = t.elapsed();
    let mut out = count(
        &task.rows,
        |w: &str| classifier.lexicon.get(w).copied(),
        &task.centroids,
    );
    out.setup_ns = setup.as_nanos() as u64;
    out
}

/// A classifier in private memory: the lexicon and the centroids.
type PrivateCopy = (HashMap<String, (u16, f32)>, Vec<f32>);

/// The worker's private copy for (d), made on its first chunk.
static PRIVATE: OnceLock<PrivateCopy> = OnceLock::new();

fn copy_once_task(task: Task) -> Counts {
    let t = Instant::now();
    let mut fresh = false;
    let (lex, cents) = PRIVATE.get_or_init(|| {
        fresh = true;
        let view = task.lexicon.get().expect("attach");
        let lex: HashMap<String, (u16, f32)> = view
            .lexicon
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), (v.0.to_native(), v.1.to_native())))
            .collect();
        let cents = task.centroids.get().expect("attach").to_vec();
        shmarena::detach_all();
        (lex, cents)
    });
    let setup = t.elapsed();
    let mut out = count(&task.rows, |w: &str| lex.get(w).copied(), cents);
    if fresh {
        out.setup_ns = setup.as_nanos() as u64;
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Variant {
    A,
    B,
    C,
    D,
    E,
    F,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::A,
        Variant::B,
        Variant::C,
        Variant::D,
        Variant::E,
        Variant::F,
    ];

    fn letter(self) -> &'static str {
        match self {
            Variant::A => "a",
            Variant::B => "b",
            Variant::C => "c",
            Variant::D => "d",
            Variant::E => "e",
            Variant::F => "f",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Variant::A => "(a) shmarena, fork",
            Variant::B => "(b) shmarena, spawn",
            Variant::C => "(c) classifier serialized with every chunk",
            Variant::D => "(d) classifier copied once into each worker",
            Variant::E => "(e) private heap inherited by fork (globals)",
            Variant::F => "(f) shmarena, spawn, no trust rows (each worker validates once)",
        }
    }

    /// A label short enough for a chart's legend.
    fn short(self) -> &'static str {
        match self {
            Variant::A => "(a) shmarena, fork",
            Variant::B => "(b) shmarena, spawn",
            Variant::C => "(c) serialized per chunk",
            Variant::D => "(d) copy per worker",
            Variant::E => "(e) globals, fork",
            Variant::F => "(f) spawn, validates",
        }
    }

    fn parse(s: &str) -> Result<Variant> {
        Variant::ALL
            .into_iter()
            .find(|v| v.letter() == s)
            .with_context(|| format!("unknown variant {s:?} (a to f)"))
    }
}

/// What one run of one variant measured.
#[derive(Clone, Debug, Default)]
struct Run {
    wall: Duration,
    rows: u64,
    label_sum: u64,
    setup: Vec<Duration>,
    peak: ProcessMemory,
    /// The parent's own `Pss + VmPTE` at the peak sample, in KiB.
    parent_kib: u64,
    /// The workers' `Pss - Pss_Shmem + VmPTE` at the peak sample, in KiB: what they hold
    /// besides the shared segment (in fork mode this includes their share of pages still
    /// shared copy-on-write with the parent).
    workers_own_kib: u64,
    dataset: u64,
}

impl Run {
    fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.wall.as_secs_f64()
    }

    fn to_line(&self) -> String {
        let setup: Vec<String> = self
            .setup
            .iter()
            .map(|d| d.as_nanos().to_string())
            .collect();
        format!(
            "RESULT {} {} {} {} {} {} {} {} {} {}",
            self.wall.as_nanos(),
            self.rows,
            self.label_sum,
            self.peak.pss_kib,
            self.peak.pss_shmem_kib,
            self.peak.pte_kib,
            self.parent_kib,
            self.workers_own_kib,
            self.dataset,
            setup.join(",")
        )
    }

    fn from_line(line: &str) -> Option<Run> {
        let mut f = line.strip_prefix("RESULT ")?.split(' ');
        let mut num = || f.next()?.parse::<u64>().ok();
        let wall = Duration::from_nanos(num()?);
        let rows = num()?;
        let label_sum = num()?;
        let peak = ProcessMemory {
            pss_kib: num()?,
            pss_shmem_kib: num()?,
            pte_kib: num()?,
            rss_kib: 0,
        };
        let parent_kib = num()?;
        let workers_own_kib = num()?;
        let dataset = num()?;
        let setup = f
            .next()
            .unwrap_or("")
            .split(',')
            .filter_map(|s| s.parse().ok())
            .map(Duration::from_nanos)
            .collect();
        Some(Run {
            wall,
            rows,
            label_sum,
            setup,
            peak,
            parent_kib,
            workers_own_kib,
            dataset,
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct Params {
    words: u64,
    rows: u64,
    workers: usize,
    chunk: usize,
}

fn batches(rows: u64, words: u64, chunk: usize) -> impl Iterator<Item = Vec<String>> {
    let mut gen = data::RowGen::new(rows, words);
    std::iter::from_fn(move || {
        let c: Vec<String> = gen.by_ref().take(chunk).collect();
        (!c.is_empty()).then_some(c)
    })
}

/// What a variant's run records as its results come in.
struct Meter {
    me: u32,
    run: Run,
    setups: HashMap<u32, Duration>,
}

impl Meter {
    fn new() -> Meter {
        Meter {
            me: std::process::id(),
            run: Run::default(),
            setups: HashMap::new(),
        }
    }

    /// On every fourth result, the memory of this process and the workers `pids`, kept at its
    /// peak.
    fn sample(&mut self, pids: Vec<u32>, n: u64) {
        if n % 4 != 1 {
            return;
        }
        let m = ProcessMemory::sum(std::iter::once(self.me).chain(pids.iter().copied()));
        if m.total_kib() > self.run.peak.total_kib() {
            self.run.peak = m;
            self.run.parent_kib = ProcessMemory::of(self.me).map_or(0, |p| p.total_kib());
            let w = ProcessMemory::sum(pids);
            self.run.workers_own_kib = w.pss_kib.saturating_sub(w.pss_shmem_kib) + w.pte_kib;
        }
    }

    fn add(&mut self, c: Counts) {
        self.run.rows += u64::from(c.rows);
        // The sum of the labels, to check that every variant computes the same thing.
        self.run.label_sum += (0u64..)
            .zip(c.labels)
            .map(|(label, n)| label * u64::from(n))
            .sum::<u64>();
        if c.setup_ns > 0 {
            self.setups
                .entry(c.pid)
                .or_insert(Duration::from_nanos(c.setup_ns));
        }
    }

    fn finish(mut self) -> Run {
        let mut setup: Vec<_> = self.setups.into_values().collect();
        setup.sort();
        self.run.setup = setup;
        self.run
    }
}

/// A pool for one variant. Each task is already a batch of `chunk` rows: one task per frame, as
/// in the classify example (the automatic chunksize would group up to 64 batches a frame and
/// make the parent hold them).
fn pool_builder(mode: Mode, p: Params) -> PoolBuilder {
    Pool::builder().chunksize(1).mode(mode).workers(p.workers)
}

/// Runs one variant in this process (called in a fresh child of the orchestrator).
fn run_variant(v: Variant, p: Params) -> Result<Run> {
    let classifier = Classifier {
        lexicon: data::lexicon(p.words),
    };
    let mut cents = vec![0f32; LABELS * DIMS];
    data::fill_centroids(&mut cents);
    let mut meter = Meter::new();
    // Takes a call's results as they come in, sampling memory, and times the call from `t`
    // (a macro: the calls' iterator types differ by job).
    macro_rules! drain {
        ($results:expr, $t:expr) => {{
            let mut results = $results;
            let mut n = 0;
            while let Some(r) = results.next() {
                meter.add(r?);
                n += 1;
                meter.sample(results.worker_pids(), n);
            }
            drop(results);
            meter.run.wall = $t.elapsed();
        }};
    }
    match v {
        Variant::A | Variant::B | Variant::D | Variant::F => {
            let mut b = ArenaOptions::new().capacity(64 << 20).create()?;
            b.put("classifier", &classifier)?;
            b.put_slice("centroids", &cents)?;
            let arena = b.seal()?;
            drop(classifier);
            // The lexicon's strings are ~50 MiB of small blocks that glibc keeps after the drop
            // (and that fork would copy the page tables of): give their pages back.
            shmarena::release_free_memory();
            meter.run.dataset = arena.byte_len();
            let lexicon: Handle<Classifier> = arena.handle("classifier")?;
            let centroids: SliceHandle<f32> = arena.slice_handle("centroids")?;
            let (mode, job) = match v {
                Variant::A => (Mode::Fork, &SHARED),
                Variant::B | Variant::F => (Mode::Spawn, &SHARED),
                _ => (Mode::Spawn, &COPY_ONCE),
            };
            let t = Instant::now();
            // Spawned workers get the arena through the trusted channel (inherited memfd and
            // trust rows, which the pool's workers take): O(1) attach, no bytecheck, as in fork
            // mode. (f) shares nothing: its workers reach the memfd by its handle alone
            // (`/proc`) with no rows, as a worker that did not opt into its launcher's rows,
            // and validate the classifier once each.
            let shared = (v != Variant::F).then(|| arena.clone());
            let mut pool = pool_builder(mode, p)
                .on_spawn(move |cmd| {
                    if let Some(shared) = &shared {
                        shared.share_with(cmd)?;
                    }
                    Ok(())
                })
                .build()?;
            let tasks = batches(p.rows, p.words, p.chunk).map(|rows| Task {
                lexicon,
                centroids,
                rows,
            });
            drain!(pool.imap_unordered(job, tasks)?, t);
        }
        Variant::C => {
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&classifier)?.to_vec();
            meter.run.dataset = bytes.len() as u64;
            drop(classifier);
            shmarena::release_free_memory();
            let t = Instant::now();
            let mut pool = pool_builder(Mode::Spawn, p).build()?;
            let tasks =
                batches((p.rows / 100).max(p.chunk as u64), p.words, p.chunk).map(|rows| FatTask {
                    classifier: bytes.clone(),
                    centroids: cents.clone(),
                    rows,
                });
            drain!(pool.imap_unordered(&FAT, tasks)?, t);
        }
        Variant::E => {
            meter.run.dataset = 0;
            let t = Instant::now();
            let mut pool = pool_builder(Mode::Fork, p).build()?;
            let lex = &classifier.lexicon;
            let cents = &cents;
            let job = move |rows: Vec<String>| count(&rows, |w: &str| lex.get(w).copied(), cents);
            drain!(
                pool.imap_unordered(job, batches(p.rows, p.words, p.chunk))?,
                t
            );
        }
    }
    Ok(meter.finish())
}

/// Runs one variant in a fresh child process and reads its result line.
fn spawn_run(v: Variant, p: Params) -> Result<Run> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let out = std::process::Command::new(exe)
        .args([
            "--run-variant",
            v.letter(),
            "--words",
            &p.words.to_string(),
            "--rows",
            &p.rows.to_string(),
            "--workers",
            &p.workers.to_string(),
            "--chunk",
            &p.chunk.to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running a variant")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("variant {} failed ({}): {text}", v.letter(), out.status);
    }
    text.lines()
        .find_map(Run::from_line)
        .with_context(|| format!("variant {} printed no result: {text}", v.letter()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The main table: every variant alternated over `rounds` rounds, with median figures.
fn main_table(p: Params, rounds: usize) -> Result<String> {
    let mut runs: HashMap<Variant, Vec<Run>> = HashMap::new();
    for round in 0..rounds {
        let mut order = Variant::ALL.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        for v in order {
            eprintln!("round {}/{rounds}: {}", round + 1, v.describe());
            runs.entry(v).or_default().push(spawn_run(v, p)?);
        }
    }
    let rate = |v: Variant| median(runs[&v].iter().map(Run::rows_per_s).collect());
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "{} words, {} rows ((c): {} rows), {} workers, {} rows per chunk, median of {rounds} rounds \
         (variants alternated, each run in a fresh process).\n",
        p.words,
        p.rows,
        (p.rows / 100).max(p.chunk as u64),
        p.workers,
        p.chunk
    );
    let _ = writeln!(
        out,
        "| variant | wall time | rows/s | worker attach / setup (median) | peak memory: Pss + VmPTE, all processes | of which the parent | of which shared memory | of which page tables | workers' own (Pss − shared + page tables), all workers | dataset |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for v in Variant::ALL {
        let rs = &runs[&v];
        let wall = median(rs.iter().map(|r| r.wall.as_secs_f64()).collect());
        let setup = median(
            rs.iter()
                .flat_map(|r| r.setup.iter().map(|d| d.as_secs_f64() * 1e6))
                .collect(),
        );
        let mem = median(rs.iter().map(|r| mib(r.peak.total_kib())).collect());
        let pte = median(rs.iter().map(|r| mib(r.peak.pte_kib)).collect());
        let parent = median(rs.iter().map(|r| mib(r.parent_kib)).collect());
        let shmem = median(rs.iter().map(|r| mib(r.peak.pss_shmem_kib)).collect());
        let own = median(rs.iter().map(|r| mib(r.workers_own_kib)).collect());
        let setup = if setup.is_nan() {
            "none (inherited)".to_owned()
        } else if setup >= 1000.0 {
            format!("{:.1} ms", setup / 1000.0)
        } else {
            format!("{setup:.0} µs")
        };
        let dataset = rs[0].dataset;
        let _ = writeln!(
            out,
            "| {} | {wall:.3} s | {:.0} | {setup} | {mem:.1} MiB | {parent:.1} MiB | {shmem:.1} MiB | {pte:.1} MiB | {own:.1} MiB | {} |",
            v.describe(),
            rate(v),
            if dataset == 0 {
                "in the parent's heap".to_owned()
            } else {
                format!("{:.1} MiB", dataset as f64 / (1 << 20) as f64)
            }
        );
    }
    let sums: Vec<f64> = [Variant::A, Variant::B, Variant::D, Variant::E, Variant::F]
        .iter()
        .map(|v| runs[v][0].label_sum as f64)
        .collect();
    let same = sums.windows(2).all(|w| w[0] == w[1]);
    let ratio = |x: Variant, y: Variant| {
        median(
            runs[&x]
                .iter()
                .zip(&runs[&y])
                .map(|(a, b)| a.rows_per_s() / b.rows_per_s())
                .collect(),
        )
    };
    let _ = writeln!(
        out,
        "\nThroughput ratios (rows/s, median over rounds): (a)/(c) = {:.0}×, (a)/(e) = {:.2}×, (b)/(e) = {:.2}×, (b)/(f) = {:.2}×. \
         Every full-size variant labelled the rows identically: {}.",
        ratio(Variant::A, Variant::C),
        ratio(Variant::A, Variant::E),
        ratio(Variant::B, Variant::E),
        ratio(Variant::B, Variant::F),
        if same { "yes" } else { "NO" }
    );
    Ok(out)
}

/// One run of the worker-count sweep: the variant, the number of workers, what it measured.
type SweepRun = (Variant, usize, Run);

/// Worker-count sweep for (a), (b), (d) and (e), one run each: the table, and every run with
/// its variant and worker count (for the charts).
fn worker_sweep(p: Params, cores: usize) -> Result<(String, Vec<SweepRun>)> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut runs = Vec::new();
    let vs = [Variant::A, Variant::B, Variant::D, Variant::E];
    let _ = writeln!(
        out,
        "| workers | {} |",
        vs.iter()
            .map(|v| format!("{}: rows/s, memory", v.describe()))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|--:|{}", "--:|".repeat(vs.len()));
    for w in 1..=cores {
        let mut cells = Vec::new();
        for v in vs {
            eprintln!("workers {w}: {}", v.describe());
            let r = spawn_run(v, Params { workers: w, ..p })?;
            cells.push(format!(
                "{:.0}, {:.1} MiB",
                r.rows_per_s(),
                mib(r.peak.total_kib())
            ));
            runs.push((v, w, r));
        }
        let _ = writeln!(out, "| {w} | {} |", cells.join(" | "));
    }
    Ok((out, runs))
}

/// The two charts of the worker-count sweep, as (file name, SVG): total memory (with the
/// dataset's size as a reference line) and throughput, per variant against the worker count.
fn worker_charts(runs: &[SweepRun]) -> [(&'static str, String); 2] {
    use shmarena_bench::report::{svg_chart, Series, XAxis};
    let line = |v: Variant, y: &dyn Fn(&Run) -> f64| -> Series {
        let pts = runs
            .iter()
            .filter(|(rv, _, _)| *rv == v)
            .map(|(_, w, r)| (*w as f64, y(r)))
            .collect();
        (v.short().to_owned(), pts)
    };
    let variants: Vec<Variant> = {
        let mut vs: Vec<Variant> = runs.iter().map(|(v, _, _)| *v).collect();
        vs.sort();
        vs.dedup();
        vs
    };
    let mut memory: Vec<Series> = variants
        .iter()
        .map(|&v| line(v, &|r: &Run| mib(r.peak.total_kib())))
        .collect();
    let dataset = runs.iter().map(|(_, _, r)| r.dataset).max().unwrap_or(0);
    if dataset > 0 {
        let ws = runs.iter().map(|(_, w, _)| *w as f64);
        let (lo, hi) = ws.fold((f64::INFINITY, 0.0f64), |(lo, hi), w| {
            (lo.min(w), hi.max(w))
        });
        let d = dataset as f64 / (1 << 20) as f64;
        memory.push(("dataset (one copy)".to_owned(), vec![(lo, d), (hi, d)]));
    }
    let throughput: Vec<Series> = variants
        .iter()
        .map(|&v| line(v, &|r: &Run| r.rows_per_s() / 1e3))
        .collect();
    [
        (
            "memory-vs-workers.svg",
            svg_chart(
                "Total memory against workers (Pss + VmPTE, all processes, peak)",
                XAxis::Linear("workers"),
                "MiB",
                &memory,
            ),
        ),
        (
            "throughput-vs-workers.svg",
            svg_chart(
                "Throughput against workers (classify, one run each)",
                XAxis::Linear("workers"),
                "thousand rows/s",
                &throughput,
            ),
        ),
    ]
}

/// Dataset-size sweep for (a), (d) and (e), one run each.
fn size_sweep(p: Params, sizes: &[u64]) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let vs = [Variant::A, Variant::D, Variant::E];
    let _ = writeln!(
        out,
        "| lexicon words | dataset | {} |",
        vs.iter()
            .map(|v| format!("{}: wall, memory, setup", v.describe()))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|--:|--:|{}", "--:|".repeat(vs.len()));
    for &words in sizes {
        let mut cells = Vec::new();
        let mut dataset = 0;
        for v in vs {
            eprintln!("words {words}: {}", v.describe());
            let r = spawn_run(v, Params { words, ..p })?;
            dataset = dataset.max(r.dataset);
            let setup = r
                .setup
                .get(r.setup.len() / 2)
                .map_or("–".to_owned(), |d| format!("{:.2?}", d));
            cells.push(format!(
                "{:.3} s, {:.1} MiB, {setup}",
                r.wall.as_secs_f64(),
                mib(r.peak.total_kib())
            ));
        }
        let _ = writeln!(
            out,
            "| {words} | {:.1} MiB | {} |",
            dataset as f64 / (1 << 20) as f64,
            cells.join(" | ")
        );
    }
    Ok(out)
}

fn run() -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut p = Params {
        words: 1_000_000,
        rows: 1_000_000,
        workers: cores,
        chunk: 2000,
    };
    let mut rounds = 3;
    let mut quick = false;
    let mut sweeps = true;
    let mut write: Option<std::path::PathBuf> = None;
    let mut variant: Option<Variant> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => quick = true,
            "--no-sweeps" => sweeps = false,
            "--rounds" => rounds = value("--rounds")?.parse()?,
            "--words" => p.words = value("--words")?.parse()?,
            "--rows" => p.rows = value("--rows")?.parse()?,
            "--workers" => p.workers = value("--workers")?.parse()?,
            "--chunk" => p.chunk = value("--chunk")?.parse()?,
            "--write" => write = Some(value("--write")?.into()),
            "--run-variant" => variant = Some(Variant::parse(&value("--run-variant")?)?),
            "-h" | "--help" => {
                println!(
                    "usage: compare [--quick] [--rounds N] [--words N] [--rows N] [--workers N] \
                     [--chunk N] [--no-sweeps] [--write FILE]"
                );
                return Ok(());
            }
            other => bail!("unexpected argument {other:?} (try --help)"),
        }
    }
    if let Some(v) = variant {
        println!("{}", run_variant(v, p)?.to_line());
        return Ok(());
    }
    if quick {
        p.words = p.words.min(20_000);
        p.rows = p.rows.min(20_000);
        rounds = rounds.min(1);
        sweeps = false;
    }
    let mut doc = String::from("### The main comparison\n\n");
    doc += &main_table(p, rounds)?;
    let mut charts = None;
    if sweeps {
        doc += "\n### Worker-count sweep (one run each)\n\n";
        let (table, runs) = worker_sweep(p, cores)?;
        doc += &table;
        if write.is_some() {
            doc += "\n![Total memory (Pss + VmPTE) against the number of workers, per variant, \
                    with the dataset's size](charts/memory-vs-workers.svg)\n\n\
                    ![Rows per second against the number of workers, per variant]\
                    (charts/throughput-vs-workers.svg)\n\n\
                    (`docs/charts/memory-vs-workers.svg` and `docs/charts/throughput-vs-workers.svg`, \
                    drawn by `compare` from the runs of this table.)\n";
            charts = Some(worker_charts(&runs));
        }
        doc += "\n### Dataset-size sweep (one run each)\n\n";
        doc += &size_sweep(p, &[p.words / 10, p.words])?;
    }
    print!("{doc}");
    if let Some(file) = write {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let text = shmarena_bench::report::splice(&text, "compare", &doc)?;
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        eprintln!("wrote {}", file.display());
        if let Some(charts) = charts {
            let dir = file.with_file_name("charts");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, svg) in charts {
                let path = dir.join(name);
                std::fs::write(&path, svg)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    shmarena_pool::serve_worker_if_child(&[&SHARED, &FAT, &COPY_ONCE]);
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e:#}");
            ExitCode::FAILURE
        }
    }
}
