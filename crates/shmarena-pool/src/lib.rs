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
//! With the `shmarena` feature, the module `generations` (a re-export of
//! `shmarena::service::generations`, which uses nothing of the pool) hands each task the current
//! generation of an arena published by name (`shmarena::Publisher`, `arena-serve`): each
//! worker holds a subscription, and a task sees exactly one generation from start to end. A
//! subscription also follows a restarted publisher, and a task run while nobody serves the name
//! gets `shmarena::service::ServiceError::PublisherGone` rather than the gone publisher's data.
//!
//! ```no_run
//! # #[cfg(feature = "shmarena")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use shmarena_pool::{generations, Job, Mode, Pool};
//!
//! /// Scores one word with the lexicon generation current when the task starts.
//! fn score(word: String) -> (u64, f32) {
//!     generations::with_generation("lexicon", |lexicon, generation| {
//!         let weights = lexicon.slice::<f32>("weights").expect("weights");
//!         (generation, weights[word.len() % weights.len()])
//!     })
//!     .expect("the lexicon is published")
//! }
//! static SCORE: Job<String, (u64, f32)> = Job::new("score", score);
//!
//! // In `main`, first line:
//! shmarena_pool::serve_worker_if_child(&[&SCORE]);
//! let mut pool = Pool::builder().mode(Mode::Spawn).workers(4).build()?;
//! for (generation, score) in pool.map(&SCORE, ["a".to_string(), "bb".to_string()])? {
//!     println!("{score} (lexicon generation {generation})");
//! }
//!
//! // Fork mode: a closure, wrapped.
//! let mut pool = Pool::builder().workers(2).build()?;
//! let job = generations::generational("lexicon", |lexicon, generation, i: u32| {
//!     (generation, lexicon.slice::<u32>("ids").map(|ids| ids[i as usize]).unwrap_or(0))
//! });
//! for r in pool.imap(&job, 0..100u32)? {
//!     let (generation, id) = r??;
//!     println!("{id} from generation {generation}");
//! }
//! # Ok(()) }
//! # #[cfg(not(feature = "shmarena"))]
//! # fn main() {}
//! ```
//!
//! The re-export is compiled, and documented, only with the feature: `cargo doc -p shmarena-pool
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
mod job;
mod pool;
mod spawner;
mod worker;

#[cfg_attr(target_os = "linux", path = "os/linux.rs")]
mod os;

pub use codec::Message;
pub use error::PoolError;
pub use job::{Job, PoolJob, WorkerJob};
pub use pool::{HookError, Imap, ImapUnordered, Mode, Pool, PoolBuilder};
pub use worker::serve_worker_if_child;

// Uses nothing of the pool; kept at this path for the pool's users.
#[cfg(feature = "shmarena")]
#[doc(inline)]
pub use shmarena::service::generations;
