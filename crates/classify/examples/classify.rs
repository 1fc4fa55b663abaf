//! The seeds' scenario, solved: a parent builds a large read-only classifier, worker processes
//! classify many CSV rows in parallel, with no globals and no per-task serialization of the
//! classifier, the same whether the workers are forked or spawned.
//!
//! Run: `cargo run --release --example classify` (an embedded, deterministic default dataset:
//! a 1M-word lexicon, a centroid matrix and 1M rows). `--help` lists the options.
//!
//! With `--reload-every N` the parent publishes the classifier by name
//! (`shmarena::Publisher`) and, every N rows classified, publishes a refreshed lexicon as a
//! new generation; workers follow it with `shmarena_pool::generations`, each batch is
//! classified with exactly one generation, and the summary counts rows per generation.

use shmarena_classify::{data, metrics, tasks};

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use shmarena::{Arena, ArenaOptions, Handle, SliceHandle};
use shmarena_pool::{generations, Job, Mode, Pool};

use data::{ArchivedClassifier, Classifier, DIMS, LABELS, LABEL_NAMES};
use metrics::ProcessMemory;
use tasks::{Counts, FatTask, LatestTask, Task};

#[derive(Parser, Debug)]
#[command(
    about = "Classify CSV rows in parallel worker processes that share one classifier in shared memory"
)]
struct Args {
    /// How workers start: forked (inheriting the arena) or spawned (attaching by handle).
    #[arg(long, value_enum, default_value_t = ModeArg::Fork)]
    mode: ModeArg,
    /// Worker processes (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Rows of the generated input (ignored with --input).
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Words in the generated lexicon.
    #[arg(long, default_value_t = 1_000_000)]
    words: u64,
    /// Read rows from this CSV file (`id,text` per line) instead of generating them.
    #[arg(long)]
    input: Option<std::path::PathBuf>,
    /// Rows per task sent to a worker.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Run the same job the slow way, for a side-by-side ratio: `serialize` sends the whole
    /// classifier to the workers with every task (the pickling anti-pattern).
    #[arg(long, value_enum)]
    baseline: Option<Baseline>,
    /// Publish the classifier by name and, every N rows classified, publish a refreshed
    /// lexicon as a new generation mid-run; workers follow the generations, each result says
    /// which one it was computed with, and the summary counts rows per generation.
    #[arg(long, value_name = "N", conflicts_with = "baseline")]
    reload_every: Option<u64>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Fork,
    Spawn,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Baseline {
    Serialize,
}

static CLASSIFY: Job<Task, Counts> = Job::new("classify", classify_task);
static CLASSIFY_SERIALIZED: Job<FatTask, Counts> =
    Job::new("classify_serialized", classify_fat_task);
static CLASSIFY_LATEST: Job<LatestTask, Counts> = Job::new("classify_latest", classify_latest);

/// Time of this process's first attach, reported once.
static ATTACHED: OnceLock<()> = OnceLock::new();

fn classify_task(task: Task) -> Counts {
    let mut out = Counts {
        pid: std::process::id(),
        ..Counts::default()
    };
    let t = Instant::now();
    let (lexicon, centroids) = match (task.lexicon.get(), task.centroids.get()) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("worker {}: cannot attach: {e}", out.pid);
            out.errors = task.rows.len() as u32;
            return out;
        }
    };
    if ATTACHED.set(()).is_ok() {
        out.setup_ns = t.elapsed().as_nanos() as u64;
    }
    classify_rows(&mut out, &task.rows, &lexicon, &centroids);
    out.rows = task.rows.len() as u32;
    out
}

/// Classifies `rows` with the shared classifier and counts their labels in `out`.
fn classify_rows(
    out: &mut Counts,
    rows: &[String],
    classifier: &ArchivedClassifier,
    centroids: &[f32],
) {
    let lookup = |w: &str| {
        classifier
            .lexicon
            .get(w)
            .map(|v| (v.0.to_native(), v.1.to_native()))
    };
    for row in rows {
        out.labels[usize::from(data::classify_text(data::text_of(row), lookup, centroids))] += 1;
    }
}

/// A `--reload-every` task: the batch is classified with the generation of the published
/// classifier that is current when the task starts, and only with it.
fn classify_latest(task: LatestTask) -> Counts {
    let mut out = Counts {
        pid: std::process::id(),
        ..Counts::default()
    };
    let t = Instant::now();
    let result = generations::with_generation(&task.name, |arena, generation| {
        let lexicon = arena.get::<Classifier>("classifier")?;
        let centroids = arena.slice::<f32>("centroids")?;
        if ATTACHED.set(()).is_ok() {
            out.setup_ns = t.elapsed().as_nanos() as u64;
        }
        classify_rows(&mut out, &task.rows, &lexicon, &centroids);
        out.generation = generation;
        shmarena::Result::Ok(())
    });
    match result {
        Ok(Ok(())) => out.rows = task.rows.len() as u32,
        Ok(Err(e)) | Err(e) => {
            eprintln!("worker {}: cannot read the classifier: {e}", out.pid);
            out.labels = Default::default();
            out.errors = task.rows.len() as u32;
        }
    }
    out
}

/// The arena of one classifier generation: the lexicon of that generation and the centroids.
fn build_classifier(words: u64, generation: u64) -> shmarena::Result<Arena> {
    let classifier = Classifier {
        lexicon: data::lexicon_generation(words, generation),
    };
    let mut b = ArenaOptions::new().capacity(64 << 20).create()?;
    b.put("classifier", &classifier)?;
    b.put_slice_with::<f32>("centroids", LABELS * DIMS, data::fill_centroids)?;
    Ok(b.seal()?)
}

fn classify_fat_task(task: FatTask) -> Counts {
    let mut out = Counts {
        pid: std::process::id(),
        ..Counts::default()
    };
    // The anti-pattern: rebuild the classifier from bytes for every batch.
    let classifier = match rkyv::from_bytes::<Classifier, rkyv::rancor::Error>(&task.classifier) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("worker {}: bad classifier bytes: {e}", out.pid);
            out.errors = task.rows.len() as u32;
            return out;
        }
    };
    let lookup = |w: &str| classifier.lexicon.get(w).copied();
    for row in &task.rows {
        out.labels[usize::from(data::classify_text(
            data::text_of(row),
            lookup,
            &task.centroids,
        ))] += 1;
    }
    out.rows = task.rows.len() as u32;
    out
}

fn main() -> std::process::ExitCode {
    // Spawned workers serve here and never return; a normal run goes on.
    shmarena_pool::serve_worker_if_child(&[&CLASSIFY, &CLASSIFY_SERIALIZED, &CLASSIFY_LATEST]);
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("classify: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!(
        "classify: {} workers ({:?} mode), lexicon of {} words, {}",
        workers,
        args.mode,
        args.words,
        match &args.input {
            Some(p) => format!("rows from {}", p.display()),
            None => format!("{} generated rows", args.rows),
        }
    );

    // Build the classifier once, in place in a sealed memfd.
    let t = Instant::now();
    let classifier = Classifier {
        lexicon: data::lexicon(args.words),
    };
    let generated = t.elapsed();
    let t = Instant::now();
    let mut b = ArenaOptions::new().capacity(64 << 20).create()?;
    b.put("classifier", &classifier)?;
    b.put_slice_with::<f32>("centroids", LABELS * DIMS, data::fill_centroids)?;
    let arena = b.seal()?;
    let built = t.elapsed();
    println!(
        "built the arena: {:.1} MiB in {:.2?} (generating the lexicon took {:.2?}), {}",
        arena.byte_len() as f64 / (1 << 20) as f64,
        built,
        generated,
        arena.locator()
    );
    let lexicon: Handle<Classifier> = arena.handle("classifier")?;
    let centroids: SliceHandle<f32> = arena.slice_handle("centroids")?;

    // The baseline needs the classifier as bytes; the real run does not need it at all.
    let fat = match args.baseline {
        Some(Baseline::Serialize) => Some((
            rkyv::to_bytes::<rkyv::rancor::Error>(&classifier)?.to_vec(),
            arena.slice::<f32>("centroids")?.to_vec(),
        )),
        None => None,
    };
    drop(classifier);

    let mode = match args.mode {
        ModeArg::Fork => Mode::Fork,
        ModeArg::Spawn => Mode::Spawn,
    };
    // With --reload-every, the classifier is published by name: the publisher serves it from
    // a thread of this process. That thread takes no lock a forked worker needs (workers only
    // connect to its socket), so fork mode may go ahead with it running.
    let publisher = match args.reload_every {
        Some(_) => {
            let name = format!("classify-{}", std::process::id());
            Some(arena.publish(&name)?)
        }
        None => None,
    };
    // Spawned workers get the arena through the trusted channel (its memfd inherited, with this
    // process's trust rows): they attach it with no `/proc` lookup and, since the pool is their
    // launcher and takes the rows for them (`serve_worker_if_child`), read it without bytecheck,
    // as forked workers do.
    let shared = arena.clone();
    let mut pool = Pool::builder()
        .mode(mode)
        .workers(workers)
        .chunksize(1)
        .allow_threads_at_fork(publisher.is_some())
        .on_spawn(move |cmd| {
            shared.share_with(cmd)?;
            Ok(())
        })
        .build()?;

    let total_rows = match &args.input {
        Some(_) => None,
        None => Some(args.rows),
    };
    let batches = row_batches(&args, args.batch)?;
    let mut run = Run::new(total_rows);
    match (fat, &publisher) {
        (None, Some(publisher)) => {
            let every = args.reload_every.unwrap_or(u64::MAX).max(1);
            let name = publisher.name().to_owned();
            let tasks = batches.map(|rows| LatestTask {
                name: name.clone(),
                rows,
            });
            let mut next_reload = every;
            let mut results = pool.imap_unordered(&CLASSIFY_LATEST, tasks)?;
            while let Some(r) = results.next() {
                run.record(r?, || results.worker_pids());
                let done = total_rows.is_some_and(|t| run.summary.rows >= t);
                if run.summary.rows >= next_reload && !done {
                    next_reload = run.summary.rows - run.summary.rows % every + every;
                    let t = Instant::now();
                    let next = build_classifier(args.words, publisher.generation() + 1)?;
                    let generation = publisher.publish(next)?;
                    run.progress.clear();
                    println!(
                        "after {} rows: published generation {generation} (a refreshed lexicon, \
                         built in {:.2?})",
                        run.summary.rows,
                        t.elapsed()
                    );
                }
            }
        }
        (None, None) => {
            let tasks = batches.map(|rows| Task {
                lexicon,
                centroids,
                rows,
            });
            let mut results = pool.imap_unordered(&CLASSIFY, tasks)?;
            while let Some(r) = results.next() {
                run.record(r?, || results.worker_pids());
            }
        }
        (Some((bytes, cents)), _) => {
            let tasks = batches.map(|rows| FatTask {
                classifier: bytes.clone(),
                centroids: cents.clone(),
                rows,
            });
            let mut results = pool.imap_unordered(&CLASSIFY_SERIALIZED, tasks)?;
            while let Some(r) = results.next() {
                run.record(r?, || results.worker_pids());
            }
        }
    }
    let Run {
        summary,
        progress,
        peak,
        started,
        ..
    } = run;
    let elapsed = started.elapsed();
    progress.finish();
    drop(pool);
    drop(publisher);

    summary.print(elapsed, arena.byte_len(), peak, args.baseline.is_some());
    Ok(())
}

/// Batches of CSV rows: generated lazily, or read from a file.
fn row_batches(
    args: &Args,
    batch: usize,
) -> std::io::Result<Box<dyn Iterator<Item = Vec<String>>>> {
    let batch = batch.max(1);
    match &args.input {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
            })?;
            let mut lines = std::io::BufReader::new(file).lines().map_while(Result::ok);
            Ok(Box::new(std::iter::from_fn(move || {
                let chunk: Vec<String> = lines.by_ref().take(batch).collect();
                (!chunk.is_empty()).then_some(chunk)
            })))
        }
        None => {
            let mut rows = data::RowGen::new(args.rows, args.words);
            Ok(Box::new(std::iter::from_fn(move || {
                let chunk: Vec<String> = rows.by_ref().take(batch).collect();
                (!chunk.is_empty()).then_some(chunk)
            })))
        }
    }
}

/// The state of a run: results so far, progress, and the memory peak sampled on the way.
struct Run {
    summary: Summary,
    progress: Progress,
    peak: ProcessMemory,
    started: Instant,
    last_sample: Option<Instant>,
}

impl Run {
    fn new(total_rows: Option<u64>) -> Run {
        Run {
            summary: Summary::default(),
            progress: Progress::new(total_rows),
            peak: ProcessMemory::default(),
            started: Instant::now(),
            last_sample: None,
        }
    }

    /// Adds a batch's counts; samples the memory of the parent and the live workers (given by
    /// `pids`) on the first batch and then every 100 ms.
    fn record(&mut self, counts: Counts, pids: impl FnOnce() -> Vec<u32>) {
        self.summary.add(counts);
        if self
            .last_sample
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100))
        {
            self.last_sample = Some(Instant::now());
            let m = ProcessMemory::sum(std::iter::once(std::process::id()).chain(pids()));
            if m.total_kib() > self.peak.total_kib() {
                self.peak = m;
            }
        }
        self.progress.update(self.summary.rows);
    }
}

#[derive(Default)]
struct Summary {
    labels: [u64; LABELS],
    rows: u64,
    errors: u64,
    batches: u64,
    attach: HashMap<u32, Duration>,
    /// Rows and label counts by classifier generation (`--reload-every`).
    by_generation: std::collections::BTreeMap<u64, (u64, [u64; LABELS])>,
}

impl Summary {
    fn add(&mut self, c: Counts) {
        for (a, b) in self.labels.iter_mut().zip(c.labels) {
            *a += u64::from(b);
        }
        self.rows += u64::from(c.rows);
        self.errors += u64::from(c.errors);
        self.batches += 1;
        if c.generation > 0 {
            let (rows, labels) = self.by_generation.entry(c.generation).or_default();
            *rows += u64::from(c.rows);
            for (a, b) in labels.iter_mut().zip(c.labels) {
                *a += u64::from(b);
            }
        }
        if c.setup_ns > 0 {
            self.attach.insert(c.pid, Duration::from_nanos(c.setup_ns));
        }
    }

    fn print(&self, elapsed: Duration, dataset: u64, peak: ProcessMemory, baseline: bool) {
        let rate = self.rows as f64 / elapsed.as_secs_f64();
        println!(
            "classified {} rows in {:.2?}: {:.0} rows/s{}",
            self.rows,
            elapsed,
            rate,
            if baseline {
                " (baseline: classifier serialized with every task)"
            } else {
                ""
            }
        );
        if self.errors > 0 {
            println!("rows that failed: {}", self.errors);
        }
        let mut attach: Vec<_> = self.attach.iter().collect();
        attach.sort();
        if !attach.is_empty() {
            let list: Vec<String> = attach
                .iter()
                .map(|(pid, d)| format!("{pid}: {d:.1?}"))
                .collect();
            println!(
                "worker attach times (first handle.get() in each worker): {}",
                list.join(", ")
            );
        } else if !baseline {
            println!("worker attach times: none (forked workers inherit the mapping and the attach cache)");
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "memory at peak, all processes: Pss {:.1} MiB (of which shared {:.1} MiB) + page tables {:.1} MiB \
             = {:.1} MiB; the dataset is {:.1} MiB (Rss summed would say {:.1} MiB)",
            mib(peak.pss_kib),
            mib(peak.pss_shmem_kib),
            mib(peak.pte_kib),
            mib(peak.total_kib()),
            dataset as f64 / (1 << 20) as f64,
            mib(peak.rss_kib)
        );
        if !self.by_generation.is_empty() {
            println!("rows by classifier generation (each batch used exactly one):");
            for (generation, (rows, labels)) in &self.by_generation {
                let top = (0..LABELS).max_by_key(|&l| labels[l]).unwrap_or(0);
                println!(
                    "  generation {generation:<4} {rows:>9} rows  (top label {} {:.1}%)",
                    LABEL_NAMES[top],
                    labels[top] as f64 * 100.0 / (*rows).max(1) as f64
                );
            }
        }
        println!("labels:");
        let mut order: Vec<usize> = (0..LABELS).collect();
        order.sort_by_key(|&l| std::cmp::Reverse(self.labels[l]));
        for l in order {
            let share = self.labels[l] as f64 * 100.0 / self.rows.max(1) as f64;
            println!(
                "  {:<10} {:>9}  {share:5.1}%",
                LABEL_NAMES[l], self.labels[l]
            );
        }
    }
}

/// A one-line progress bar on stderr, shown only when stderr is a terminal.
struct Progress {
    total: Option<u64>,
    shown: bool,
    last: Instant,
}

impl Progress {
    fn new(total: Option<u64>) -> Progress {
        Progress {
            total,
            shown: std::io::stderr().is_terminal(),
            last: Instant::now(),
        }
    }

    fn update(&mut self, done: u64) {
        if !self.shown || self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        let line = match self.total {
            Some(total) if total > 0 => {
                let frac = done as f64 / total as f64;
                let filled = (frac * 40.0) as usize;
                format!(
                    "[{}{}] {:5.1}%  {done} rows",
                    "#".repeat(filled),
                    " ".repeat(40 - filled.min(40)),
                    frac * 100.0
                )
            }
            _ => format!("{done} rows"),
        };
        let _ = write!(std::io::stderr(), "\r{line}");
    }

    fn finish(&self) {
        if self.shown {
            let _ = writeln!(std::io::stderr());
        }
    }

    /// Erases the bar before a line is printed on stdout.
    fn clear(&self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r{:60}\r", "");
        }
    }
}
