//! The pool: its options ([`PoolBuilder`]), the worker processes it keeps ([`Pool`]) and the
//! iterators its calls return. The per-call scheduling lives in engine.rs, the worker side in
//! worker.rs.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::engine::{self, Engine, Worker};
use crate::job::{Init, Job, PoolJob};
use crate::spawner::Spawner;
use crate::{os, worker, Message, PoolError};

/// How a [`Pool`] starts its workers. See the crate docs for when to pick which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Fork fresh workers at each call; closures allowed. Needs a single-threaded process.
    #[default]
    Fork,
    /// Re-execute the current binary once per worker; named [`Job`]s only.
    Spawn,
}

fn clamp_chunksize(n: usize) -> usize {
    n.clamp(1, u32::MAX as usize)
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) mode: Mode,
    pub(crate) workers: usize,
    /// `None`: picked per call (see [`PoolBuilder::chunksize`]).
    pub(crate) chunksize: Option<usize>,
    pub(crate) prefetch: usize,
    pub(crate) pipe_size: usize,
    pub(crate) allow_threads_at_fork: bool,
    worker_args: Vec<OsString>,
    startup_timeout: Duration,
    on_spawn: Vec<SpawnHook>,
    pub(crate) init: Option<Init>,
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
    /// listed in [`serve_worker_if_child`](crate::serve_worker_if_child). A worker whose initializer panics or fails exits
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
    /// With the `shmarena` feature, the pool is the workers' trusted launcher: a worker takes
    /// the trust rows that came with the arenas (it calls `shmarena::trust_inherited_rows` in
    /// [`serve_worker_if_child`](crate::serve_worker_if_child)), and after the hooks the pool
    /// keeps only the rows its process holds for the very descriptors listed
    /// (`shmarena::keep_vouched_rows`): an entry a hook edited reaches the workers without rows,
    /// and they validate. Without the feature the workers still attach the inherited
    /// descriptors, and validate each entry on first read.
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
    pub(crate) cfg: Config,
    pub(crate) workers: Vec<Worker>,
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
        // The worker takes the trust rows of the arenas shared with it (`serve_worker_if_child`):
        // only rows this process holds for the very descriptors listed go with them, so a hook
        // that edited `share_with`'s entry (another descriptor, another arena) loses its rows.
        #[cfg(feature = "shmarena")]
        shmarena::keep_vouched_rows(&mut cmd);
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

/// What both iterators of results offer besides `next`, from the call's engine.
macro_rules! results_of_a_call {
    ($($iter:ident),*) => {$(
        impl<I, O, J, It> $iter<'_, I, O, J, It>
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
    )*};
}

results_of_a_call!(ImapUnordered, Imap);

/// The iterator of [`Pool::imap_unordered`]: results in completion order.
pub struct ImapUnordered<'p, I, O, J, It> {
    engine: Engine<'p, I, O, J, It>,
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
