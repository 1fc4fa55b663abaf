//! A process pool in the manner of Python's `multiprocessing.Pool`: N worker processes, forked
//! or spawned, stream tasks and results over pipes, while the large read-only data they share
//! lives in a shmarena `Arena` and travels as a small handle.
//!
//! The pool itself knows nothing of arenas (without its `shmarena` feature it does not depend
//! on the `shmarena` crate): a task is any rkyv [`Message`], and a handle is one. The example shares an arena with the workers.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use shmarena_pool::{Mode, Pool};
//!
//! // The shared dataset: a sealed arena, built once (here in the parent, before forking).
//! let mut b = shmarena::ArenaOptions::new().create()?;
//! b.put_slice("weights", &[1.5f32, 2.0, 4.0])?;
//! let arena = b.seal()?;
//! let weights = arena.slice::<f32>("weights")?;
//!
//! // Fork mode: the job may be a closure; what it captures is inherited by fork, so the
//! // workers read `weights` in place, with no copy and no serialization.
//! let mut pool = Pool::builder().mode(Mode::Fork).workers(2).chunksize(4).build()?;
//! let scores = pool.map(|i: u32| weights[i as usize % 3] * i as f32, 0..10u32)?;
//! assert_eq!(scores[4], 8.0);
//!
//! // Streaming, in completion order: results come as workers finish them; inputs are pulled
//! // lazily, and only a bounded number of tasks is in flight at once.
//! let mut total = 0.0;
//! for score in pool.imap_unordered(|i: u32| weights[0] * i as f32, 0..1000u32)? {
//!     total += score?;
//! }
//! assert_eq!(total, 1.5 * 999.0 * 1000.0 / 2.0);
//! # Ok(()) }
//! ```
//!
//! # Modes
//!
//! - [`Mode::Fork`]: each call forks fresh workers that inherit the whole process, so the job
//!   may be any `Fn(I) -> O` closure, borrowing anything (a view, a handle, a config). Workers
//!   end when the call's iterator is dropped. Cheap: fork copies page tables, and since the
//!   dataset is a shared mapping its size barely adds to that.
//! - [`Mode::Spawn`]: workers re-execute the current binary (`std::env::current_exe`) once,
//!   when the pool is built, and serve every later call. Only named [`Job`]s cross `exec`: a
//!   `static` holding a plain `fn`, listed in [`serve_worker_if_child`] on the first line of
//!   `main`. Use it where fork is not an option: a process that already runs threads, or a
//!   worker that must start from a clean state. The dataset reaches the worker as a handle
//!   inside the task (or in the job's own setup); see shmarena's `Handle` docs.
//!
//! # Fork before spawning threads
//!
//! `fork` copies only the calling thread. A lock another thread held at that moment (stdout,
//! a logger, a `Mutex` of yours, or std's backtrace lock, which the default panic hook holds
//! while it prints) stays locked forever in the child, and the worker deadlocks the first
//! time it needs it (with the default hook: the first time its job panics). glibc resets its
//! malloc locks around fork, but nothing does that for the rest. So in fork mode the pool counts the entries of
//! `/proc/self/task` before every fork (the first ones and each replacement) and returns
//! [`PoolError::ThreadsAtFork`] if there is more than one thread. Build and use fork-mode
//! pools before starting threads (or thread pools such as rayon), use [`Mode::Spawn`], or, if
//! you know the other threads hold no lock the job needs, opt out with
//! [`PoolBuilder::allow_threads_at_fork`]. A fork-mode pool never starts a thread; a
//! spawn-mode pool starts one (see "Async runtimes and threads that end").
//!
//! # Async runtimes and threads that end
//!
//! The pool's calls block, so from async code run them on a blocking thread
//! (`tokio::task::spawn_blocking`, `async_std::task::spawn_blocking`). Such threads come and
//! go: tokio retires an idle one after `thread_keep_alive` (10 s by default). That is safe:
//!
//! - A spawn-mode pool starts every worker, the first ones and each replacement, from a thread
//!   it owns for its whole life (named `shmarena-pool-spawner`). A worker's `PR_SET_PDEATHSIG`
//!   fires when the thread that started it ends, so the workers follow the pool, not the
//!   thread that built it: build the pool in one blocking task, keep it in your state, and
//!   call it from others.
//! - A fork-mode pool forks its workers at each call, from the thread that makes the call,
//!   and they end with the call's iterator. Keep that iterator on the thread that created it
//!   (a blocking task that runs the whole call does this). A tokio runtime runs threads, so
//!   fork mode needs [`PoolBuilder::allow_threads_at_fork`] there, with the caveat of the
//!   previous section; spawn mode is the better fit.
//!
//! ```no_run
//! use shmarena_pool::{Job, Mode, Pool};
//!
//! fn score(x: u64) -> u64 { x * 2 }
//! static SCORE: Job<u64, u64> = Job::new("score", score);
//!
//! // In `main`, first line: shmarena_pool::serve_worker_if_child(&[&SCORE]);
//! # fn in_a_blocking_task() -> Result<(), shmarena_pool::PoolError> {
//! // Inside `tokio::task::spawn_blocking(move || { ... })`:
//! let mut pool = Pool::builder().mode(Mode::Spawn).workers(4).build()?;
//! let scores = pool.map(&SCORE, 0..1000u64)?;
//! # let _ = scores; Ok(()) }
//! ```
//!
//! [`Pool::worker_pids`] lists only workers that are alive, and a call never hands tasks to a
//! worker that died while the pool was idle: it is reaped and replaced first.
//!
//! # Tasks and results
//!
//! Inputs and outputs are [`Message`]s: any type rkyv 0.8 can archive, check and deserialize
//! (`#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]`). Each is archived on its
//! own and sent in batches of several tasks per pipe write (see "Chunksize"). Each worker
//! holds at most [`prefetch`](PoolBuilder::prefetch) batches, so memory stays bounded however
//! long the input iterator is. Bytes from a worker are validated before they are deserialized.
//!
//! # Chunksize
//!
//! Every batch costs a pipe write, a wake-up of the worker, a pipe write back and a wake-up of
//! the parent; each task costs far less (archiving the task and the result, validating and
//! deserializing them). docs/BENCHMARKS.md measured `u64 -> u64` tasks with two spawned
//! workers: about 300 k tasks/s in batches of 1 (3.4 µs of wall time per task) against
//! 2.8 M tasks/s in batches of 1000 (0.36 µs per task). With one task per batch, tiny tasks
//! are bound by the round trips. So, as Python's `Pool.map` does, the pool picks
//! - inputs of known length `n` (ranges, vectors, any iterator with an exact `size_hint`):
//!   `ceil(n / (4 * workers))`, about four batches per worker, which keeps the pipes quiet
//!   and still evens out uneven task times at the end;
//! - inputs of unknown length (a `filter`, a channel, a reader): batches of 1, 2, 4, ... up to
//!   64 tasks, so a short stream starts at once and a long one amortizes the round trips;
//! - either way, an automatic batch closes once its frame holds 1 MiB of tasks (at least one
//!   task), so large tasks (each already a batch of rows, say) are not gathered by the
//!   hundred: the parent holds at most `prefetch` batches per worker.
//!
//! The break-even rule: the per-batch cost is paid once per batch, so a batch of `c` tasks of
//! `t` µs each wastes at most a few µs against `c * t` of work; once a batch holds a
//! millisecond of work or more, a larger one gains nothing. Keep the automatic size for tasks
//! under about 100 µs, or set one so a batch holds about a millisecond; set `chunksize(1)`
//! only for few, long tasks whose run times vary a lot (a big batch could leave one worker
//! with all the slow ones), when each result must come back as soon as its task ends (a
//! worker sends a batch's results together, so a slow task holds back those batched with it),
//! or for tasks that may kill their worker (a segfault, the OOM killer): a hard death fails
//! every unfinished task of its batch, and an automatic batch can hold thousands of tasks (see
//! "When a worker dies"). `cargo bench -p shmarena-bench --bench pool` measures it on your
//! machine.
//!
//! # When a worker dies
//!
//! A worker that is killed (SIGKILL, the OOM killer), aborts, segfaults, exits, or whose job
//! panics is noticed at once (the pool polls a pidfd per worker), reaped, and replaced; the
//! iteration goes on. The task it was running comes back as [`PoolError::WorkerDied`] with
//! the pid, the exit status or signal, and the panic message if there was one. With batches of
//! more than one task (the automatic chunksize, or one set above 1), a panic fails only the panicking task (the ones before it already
//! returned, the ones after it go to another worker), but a hard death fails every unfinished
//! task of the batch that worker was running, since any of them may be the cause; batches
//! queued behind it go to other workers. A task is never retried, so a task that crashes
//! every worker cannot loop. If no worker can be started any more, the iterator yields
//! [`PoolError::NoWorkers`] once and ends.
//!
//! # Cleanup
//!
//! Every worker is killed and reaped when it is no longer needed: fork-mode workers when the
//! call's iterator is dropped, spawn-mode workers when the [`Pool`] is dropped (or at the end
//! of a call that was left with unfinished tasks), including during a panic's unwinding. Each
//! worker also arms `PR_SET_PDEATHSIG` with SIGKILL, so if the parent dies without unwinding
//! (SIGKILL, abort), the kernel kills the workers too: no orphans, and no zombies. Linux
//! sends that signal when the *thread* that started the worker exits; a
//! spawn-mode pool starts its workers from a thread it owns for its whole life, so the signal
//! follows the pool (see "Async runtimes and threads that end").
//!
//! Requires Linux 5.3 or later (pidfds). Writes to a pipe whose worker has died fail with
//! EPIPE, which needs SIGPIPE ignored, as the Rust runtime (and Python) set it up.
//!
//! # New generations of the data (feature `shmarena`)
//!
//! With the `shmarena` feature, the module `generations` hands each task the current generation of an
//! arena published by name (`shmarena::Publisher`, `arena-serve`): each worker holds a
//! subscription, and a task sees exactly one generation from start to end. A subscription
//! also follows a restarted publisher, and a task run while nobody serves the name gets
//! `shmarena::service::ServiceError::PublisherGone` rather than the gone publisher's data.
//!
//! The module is compiled, and documented, only with the feature: `cargo doc -p shmarena-pool
//! --features shmarena` locally; docs.rs builds with every feature
//! (`[package.metadata.docs.rs] all-features = true` in its Cargo.toml).
//!
//! # Where `unsafe` lives
//!
//! One file: `os/linux.rs` (fork, `_exit`, closing the siblings' fds in a forked worker, the
//! pre-exec hook of a spawned one, and taking ownership of the pipe fds a spawned worker
//! inherits). Each block carries its argument; the rest of the crate calls its safe functions.

#[cfg(not(target_os = "linux"))]
compile_error!("shmarena-pool supports Linux only for now (pidfds, /proc, PR_SET_PDEATHSIG)");

mod codec;
mod engine;
mod error;
#[cfg(feature = "shmarena")]
pub mod generations;
mod spawner;
mod worker;

#[cfg_attr(target_os = "linux", path = "os/linux.rs")]
mod os;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::process::{Command, Stdio};
use std::time::Duration;

use rkyv::util::AlignedVec;

pub use codec::Message;
pub use error::PoolError;
pub use worker::serve_worker_if_child;

use engine::{Engine, Worker};
use spawner::Spawner;

/// How a [`Pool`] starts its workers. See the crate docs for when to pick which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Fork fresh workers at each call; closures allowed. Needs a single-threaded process.
    #[default]
    Fork,
    /// Re-execute the current binary once per worker; named [`Job`]s only.
    Spawn,
}

/// A named job: a plain function that spawned workers can find by name after `exec`.
///
/// Declare it as a `static`, list it in [`serve_worker_if_child`], and hand `&JOB` to the
/// pool's methods. It works in both modes.
///
/// ```
/// use shmarena_pool::Job;
///
/// fn word_count(line: String) -> usize {
///     line.split_whitespace().count()
/// }
/// static WORD_COUNT: Job<String, usize> = Job::new("word_count", word_count);
/// assert_eq!(WORD_COUNT.call("a b c".into()), 3);
/// ```
pub struct Job<I, O> {
    name: &'static str,
    f: fn(I) -> O,
}

impl<I, O> Job<I, O> {
    /// Names `f`. Names must be unique among the jobs listed in [`serve_worker_if_child`];
    /// the workers also check the input and output types, so a mix-up is an error, not
    /// garbage.
    pub const fn new(name: &'static str, f: fn(I) -> O) -> Job<I, O> {
        Job { name, f }
    }

    /// The job's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs the job here, in this process.
    pub fn call(&self, input: I) -> O {
        (self.f)(input)
    }
}

impl<I, O> Clone for Job<I, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I, O> Copy for Job<I, O> {}

impl<I, O> fmt::Debug for Job<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("input", &std::any::type_name::<I>())
            .field("output", &std::any::type_name::<O>())
            .finish()
    }
}

/// A job with its types erased, as a worker runs it: archived task in, archived result out.
///
/// [`Job`] implements it; [`serve_worker_if_child`] takes a list of them. Implement it
/// yourself only to serve a job whose bytes you encode by hand.
pub trait WorkerJob {
    /// The name the parent asks for.
    fn name(&self) -> &str;
    /// A hash of the name and the input and output type names; parent and worker must agree.
    fn fingerprint(&self) -> u64;
    /// Decodes one task, runs the job, and encodes its output. `Err` carries a codec message.
    fn run(&self, input: &[u8]) -> Result<AlignedVec, String>;
}

impl<I: Message, O: Message> WorkerJob for Job<I, O> {
    fn name(&self) -> &str {
        self.name
    }

    fn fingerprint(&self) -> u64 {
        fingerprint::<I, O>(self.name)
    }

    fn run(&self, input: &[u8]) -> Result<AlignedVec, String> {
        run_typed(input, self.f)
    }
}

/// What the pool's methods accept as a job: `&Job` (both modes) or any `Fn(I) -> O` closure
/// (fork mode only).
pub trait PoolJob<I, O> {
    /// The registered name, or `None` for a closure.
    fn name(&self) -> Option<&str>;
    /// Runs the job on one input.
    fn call(&self, input: I) -> O;
}

impl<I, O, F: Fn(I) -> O> PoolJob<I, O> for F {
    fn name(&self) -> Option<&str> {
        None
    }

    fn call(&self, input: I) -> O {
        self(input)
    }
}

impl<I, O> PoolJob<I, O> for &Job<I, O> {
    fn name(&self) -> Option<&str> {
        Some(self.name)
    }

    fn call(&self, input: I) -> O {
        (self.f)(input)
    }
}

pub(crate) fn run_typed<I: Message, O: Message>(
    input: &[u8],
    f: impl FnOnce(I) -> O,
) -> Result<AlignedVec, String> {
    let task = I::decode(input).map_err(|e| format!("cannot decode the task: {e}"))?;
    f(task)
        .encode()
        .map_err(|e| format!("cannot encode the result: {e}"))
}

pub(crate) fn fingerprint<I, O>(name: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [name, std::any::type_name::<I>(), std::any::type_name::<O>()] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    h.digest()
}

fn clamp_chunksize(n: usize) -> usize {
    n.clamp(1, u32::MAX as usize)
}

/// The initializer a worker runs once before its first task: a named job and its archived
/// input (see [`PoolBuilder::initializer`]).
#[derive(Clone)]
pub(crate) struct Init {
    pub(crate) job: &'static (dyn WorkerJob + Sync),
    pub(crate) input: AlignedVec,
}

impl fmt::Debug for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Init")
            .field("job", &self.job.name())
            .finish_non_exhaustive()
    }
}

impl Init {
    /// Runs the initializer here (in a worker).
    pub(crate) fn run(&self) -> Result<(), String> {
        self.job
            .run(&self.input)
            .map(drop)
            .map_err(|e| format!("the initializer {:?} failed: {e}", self.job.name()))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    mode: Mode,
    workers: usize,
    /// `None`: picked per call (see [`PoolBuilder::chunksize`]).
    chunksize: Option<usize>,
    prefetch: usize,
    pipe_size: usize,
    allow_threads_at_fork: bool,
    worker_args: Vec<OsString>,
    startup_timeout: Duration,
    on_spawn: Vec<SpawnHook>,
    init: Option<Init>,
}

/// A caller's preparation of each spawned worker's `Command` (see [`PoolBuilder::on_spawn`]).
#[derive(Clone)]
struct SpawnHook(std::sync::Arc<HookFn>);

/// The function an [`on_spawn`](PoolBuilder::on_spawn) hook is.
type HookFn = dyn Fn(&mut Command) -> Result<(), HookError> + Send + Sync;

/// What an [`on_spawn`](PoolBuilder::on_spawn) hook may fail with: any error; the pool reports
/// it as [`PoolError::Io`] while starting the worker.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

impl fmt::Debug for SpawnHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpawnHook")
    }
}

/// Configures a [`Pool`]: `Pool::builder().mode(Mode::Spawn).workers(4).build()?`.
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    cfg: Config,
}

impl PoolBuilder {
    /// Fork or spawn (default: [`Mode::Fork`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.cfg.mode = mode;
        self
    }

    /// Number of worker processes (default: `std::thread::available_parallelism`; at least 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.cfg.workers = n.max(1);
        self
    }

    /// Tasks per batch sent over the pipe (at least 1, at most `u32::MAX`). By default the
    /// pool picks it at each call, as Python's `Pool.map` does; see "Chunksize" in the crate
    /// docs. Set it to 1 for few, long tasks whose run times vary a lot.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.cfg.chunksize = Some(clamp_chunksize(n));
        self
    }

    /// Runs `job` on `input` once in each worker, before its first task, in both modes (a
    /// replacement worker runs it too). Use it to open an arena, warm a cache, or set up
    /// logging once per worker rather than per task. Like any job in spawn mode, it must be
    /// listed in [`serve_worker_if_child`]. A worker whose initializer panics or fails exits
    /// before serving: at [`build`](Self::build) in spawn mode that is
    /// [`PoolError::WorkerStart`]; later it counts as a worker that could not start.
    ///
    /// ```
    /// use shmarena_pool::{Job, Mode, Pool};
    ///
    /// fn setup(tag: String) {
    ///     std::env::set_var("WORKER_TAG", tag);
    /// }
    /// fn tagged(x: u32) -> String {
    ///     format!("{}{x}", std::env::var("WORKER_TAG").unwrap_or_default())
    /// }
    /// static SETUP: Job<String, ()> = Job::new("setup", setup);
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut pool = Pool::builder()
    ///     .mode(Mode::Fork)
    ///     .workers(2)
    ///     .initializer(&SETUP, "w".to_string())?
    ///     .build()?;
    /// assert_eq!(pool.map(tagged, 0..3u32)?, ["w0", "w1", "w2"]);
    /// # Ok(()) }
    /// ```
    pub fn initializer<I: Message + 'static, O: Message + 'static>(
        mut self,
        job: &'static Job<I, O>,
        input: I,
    ) -> Result<Self, PoolError> {
        let input = input.encode().map_err(|message| PoolError::Codec {
            index: 0,
            what: "initializer input",
            message,
        })?;
        self.cfg.init = Some(Init { job, input });
        Ok(self)
    }

    /// Batches queued per worker (default 2: one running, one waiting in the pipe; at least 1).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.cfg.prefetch = n.max(1);
        self
    }

    /// Requested pipe capacity in bytes (default 1 MiB, `F_SETPIPE_SZ`; 0 keeps the kernel's
    /// 64 KiB). Best effort: past the per-user pipe budget the kernel keeps the default.
    pub fn pipe_size(mut self, bytes: usize) -> Self {
        self.cfg.pipe_size = bytes;
        self
    }

    /// Fork even when this process runs other threads (default: refuse with
    /// [`PoolError::ThreadsAtFork`]). A lock held by another thread at the fork never unlocks
    /// in the worker: opt in only when the job needs no such lock. The risk is a hung worker,
    /// not memory unsafety.
    pub fn allow_threads_at_fork(mut self, allow: bool) -> Self {
        self.cfg.allow_threads_at_fork = allow;
        self
    }

    /// Arguments for the re-executed binary in spawn mode (default: none). The hook on the
    /// first line of `main` runs before argument parsing, so most programs need none; a test
    /// binary needs `["--exact", "<test that calls the hook>", "--nocapture"]`.
    pub fn worker_args<A: Into<OsString>>(mut self, args: impl IntoIterator<Item = A>) -> Self {
        self.cfg.worker_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Prepares the `Command` of every worker spawned (now and when a killed one is replaced),
    /// after the pool's own setup. Its use: share arenas with the workers through the trusted
    /// channel, so they attach the inherited memfd and read the entries this process knows
    /// valid without bytecheck, as fork-mode workers do (a handle that a worker resolves by
    /// `memfd:PID:FD` alone reaches the arena through `/proc` and validates each entry on its
    /// first read). The closure keeps what it captures alive as long as the pool.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let arena = shmarena::ArenaOptions::new().create()?.seal()?;
    /// use shmarena_pool::{Mode, Pool};
    /// let shared = arena.clone();
    /// let pool = Pool::builder()
    ///     .mode(Mode::Spawn)
    ///     .on_spawn(move |cmd| {
    ///         shared.share_with(cmd)?;
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn on_spawn(
        mut self,
        hook: impl Fn(&mut Command) -> Result<(), HookError> + Send + Sync + 'static,
    ) -> Self {
        self.cfg.on_spawn.push(SpawnHook(std::sync::Arc::new(hook)));
        self
    }

    /// How long [`build`](Self::build) waits for spawned workers to start serving (default
    /// 30 s). Exits are noticed at once; this only bounds a worker that neither serves nor
    /// exits (a `main` without the hook that runs on).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.startup_timeout = timeout;
        self
    }

    /// Builds the pool. Spawn mode starts the workers now and waits until each has said hello;
    /// fork mode forks at each call.
    pub fn build(self) -> Result<Pool, PoolError> {
        let mut pool = Pool {
            cfg: self.cfg,
            workers: Vec::new(),
            spawner: None,
        };
        if pool.cfg.mode == Mode::Spawn {
            if std::env::var_os(os::WORKER_ENV).is_some() {
                return Err(PoolError::WorkerStart {
                    pid: std::process::id(),
                    detail: format!(
                        "this process is itself a spawned pool worker ({} is set) that did \
                         not serve; refusing to spawn workers of its own",
                        os::WORKER_ENV
                    ),
                });
            }
            pool.spawner = Some(
                Spawner::start()
                    .map_err(|e| PoolError::io("starting the pool's spawner thread", e))?,
            );
            for _ in 0..pool.cfg.workers {
                let child = pool.spawn_worker()?;
                pool.workers.push(Worker::new(child));
            }
            engine::wait_hello(&mut pool.workers, pool.cfg.startup_timeout)?;
        }
        Ok(pool)
    }
}

/// N worker processes that run jobs on streams of inputs. See the [crate docs](crate).
pub struct Pool {
    cfg: Config,
    workers: Vec<Worker>,
    /// Spawn mode: the thread every worker is started from (see spawner.rs).
    spawner: Option<Spawner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("mode", &self.cfg.mode)
            .field("workers", &self.cfg.workers)
            .field("chunksize", &self.cfg.chunksize)
            .field("pids", &self.worker_pids())
            .finish()
    }
}

impl Pool {
    /// A builder with the defaults: fork mode, one worker per core, automatic chunksize.
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            cfg: Config {
                mode: Mode::Fork,
                workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
                chunksize: None,
                prefetch: 2,
                pipe_size: 1 << 20,
                allow_threads_at_fork: false,
                worker_args: Vec::new(),
                startup_timeout: Duration::from_secs(30),
                on_spawn: Vec::new(),
                init: None,
            },
        }
    }

    /// The mode workers are started in.
    pub fn mode(&self) -> Mode {
        self.cfg.mode
    }

    /// The number of workers the pool keeps.
    pub fn workers(&self) -> usize {
        self.cfg.workers
    }

    /// The batch size set with [`PoolBuilder::chunksize`] or [`set_chunksize`](Self::set_chunksize),
    /// or `None` if the pool picks it at each call.
    pub fn chunksize(&self) -> Option<usize> {
        self.cfg.chunksize
    }

    /// Changes the batch size for later calls: `Some(n)` (at least 1, at most `u32::MAX`), or
    /// `None` to let the pool pick it at each call.
    pub fn set_chunksize(&mut self, n: Option<usize>) {
        self.cfg.chunksize = n.map(clamp_chunksize);
    }

    /// Pids of the worker processes alive now (none between calls in fork mode). A worker that
    /// has exited or been killed is not listed, even before the pool has noticed and replaced
    /// it.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers
            .iter()
            .filter(|w| w.alive())
            .map(Worker::pid)
            .collect()
    }

    /// Starts one spawn-mode worker from the pool's spawner thread.
    pub(crate) fn spawn_worker(&self) -> Result<os::Child, PoolError> {
        let cmd = self.command()?;
        let spawner = self
            .spawner
            .as_ref()
            .expect("a spawn-mode pool has a spawner thread");
        spawner
            .spawn(cmd, self.cfg.pipe_size)
            .map_err(|e| PoolError::io("spawning a pool worker", e))
    }

    fn command(&self) -> Result<Command, PoolError> {
        let exe = std::env::current_exe()
            .map_err(|e| PoolError::io("finding the current executable to spawn workers", e))?;
        let mut cmd = Command::new(exe);
        cmd.args(&self.cfg.worker_args).stdin(Stdio::null());
        for hook in &self.cfg.on_spawn {
            (hook.0)(&mut cmd).map_err(|e| {
                PoolError::io(
                    "preparing a worker's command (an on_spawn hook failed)",
                    std::io::Error::other(e),
                )
            })?;
        }
        if let Some(init) = &self.cfg.init {
            cmd.env(os::INIT_ENV, worker::encode_init(init));
        }
        Ok(cmd)
    }

    /// Runs `job` on every input and yields the results as they finish, in any order.
    ///
    /// Inputs are pulled lazily. The call fails up front if no worker can be started, or if
    /// `job` cannot run in this mode; afterwards each item is the task's output or a per-task
    /// error (see the crate docs). Dropping the iterator early stops the work (fork mode:
    /// kills this call's workers; spawn mode: kills and later replaces only the busy ones).
    pub fn imap_unordered<I, O, J, It>(
        &mut self,
        job: J,
        inputs: It,
    ) -> Result<ImapUnordered<'_, I, O, J, It::IntoIter>, PoolError>
    where
        I: Message,
        O: Message,
        J: PoolJob<I, O>,
        It: IntoIterator<Item = I>,
    {
        Ok(ImapUnordered {
            engine: Engine::start(self, job, inputs.into_iter(), false)?,
        })
    }

    /// Like [`imap_unordered`](Self::imap_unordered), but yields results in input order.
    ///
    /// Results that finish early wait in a reorder buffer, bounded by holding back new
    /// dispatches while the oldest task is still running.
    pub fn imap<I, O, J, It>(
        &mut self,
        job: J,
        inputs: It,
    ) -> Result<Imap<'_, I, O, J, It::IntoIter>, PoolError>
    where
        I: Message,
        O: Message,
        J: PoolJob<I, O>,
        It: IntoIterator<Item = I>,
    {
        Ok(Imap {
            engine: Engine::start(self, job, inputs.into_iter(), true)?,
            pending: BTreeMap::new(),
            next: 0,
        })
    }

    /// Runs `job` on every input and returns the outputs in input order, or the first error
    /// (in input order). Use [`imap`](Self::imap) to see every per-task error.
    pub fn map<I, O, J, It>(&mut self, job: J, inputs: It) -> Result<Vec<O>, PoolError>
    where
        I: Message,
        O: Message,
        J: PoolJob<I, O>,
        It: IntoIterator<Item = I>,
    {
        self.imap(job, inputs)?.collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        engine::shutdown(std::mem::take(&mut self.workers));
        // Only now, with every worker reaped, may the thread that started them end.
        self.spawner = None;
    }
}

/// The iterator of [`Pool::imap_unordered`]: results in completion order.
pub struct ImapUnordered<'p, I, O, J, It> {
    engine: Engine<'p, I, O, J, It>,
}

impl<I, O, J, It> ImapUnordered<'_, I, O, J, It>
where
    I: Message,
    O: Message,
    J: PoolJob<I, O>,
    It: Iterator<Item = I>,
{
    /// Pids of this call's live workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.engine.worker_pids()
    }
}

impl<I, O, J, It> Iterator for ImapUnordered<'_, I, O, J, It>
where
    I: Message,
    O: Message,
    J: PoolJob<I, O>,
    It: Iterator<Item = I>,
{
    type Item = Result<O, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.engine.next_item().map(|(_, r)| r)
    }
}

impl<I, O, J, It> fmt::Debug for ImapUnordered<'_, I, O, J, It> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapUnordered").finish_non_exhaustive()
    }
}

/// The iterator of [`Pool::imap`]: results in input order.
pub struct Imap<'p, I, O, J, It> {
    engine: Engine<'p, I, O, J, It>,
    pending: BTreeMap<u64, Result<O, PoolError>>,
    next: u64,
}

impl<I, O, J, It> Imap<'_, I, O, J, It>
where
    I: Message,
    O: Message,
    J: PoolJob<I, O>,
    It: Iterator<Item = I>,
{
    /// Pids of this call's live workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.engine.worker_pids()
    }
}

impl<I, O, J, It> Iterator for Imap<'_, I, O, J, It>
where
    I: Message,
    O: Message,
    J: PoolJob<I, O>,
    It: Iterator<Item = I>,
{
    type Item = Result<O, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.pending.remove(&self.next) {
                self.next += 1;
                self.engine.floor = self.next;
                return Some(r);
            }
            match self.engine.next_item() {
                // The one awaited (always so with one worker): past the reorder buffer.
                Some((Some(i), r)) if i == self.next => {
                    self.next += 1;
                    self.engine.floor = self.next;
                    return Some(r);
                }
                Some((Some(i), r)) => {
                    self.pending.insert(i, r);
                }
                Some((None, fatal)) => return Some(fatal),
                // Only after a fatal error can indexes be missing: hand out the rest in order.
                None => return self.pending.pop_first().map(|(_, r)| r),
            }
        }
    }
}

impl<I, O, J, It> fmt::Debug for Imap<'_, I, O, J, It> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imap")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}
