//! Jobs: what a pool runs. A [`Job`] is a named function spawned workers find after `exec`;
//! [`WorkerJob`] is a job with its types erased, as a worker runs it; [`PoolJob`] is what the
//! pool's methods accept. [`Init`] is a worker's initializer.

use std::fmt;

use rkyv::util::AlignedVec;

use crate::Message;

/// A named job: a plain function that spawned workers can find by name after `exec`.
///
/// Declare it as a `static`, list it in [`serve_worker_if_child`](crate::serve_worker_if_child), and hand `&JOB` to the
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
    /// Names `f`. Names must be unique among the jobs listed in [`serve_worker_if_child`](crate::serve_worker_if_child);
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
/// [`Job`] implements it; [`serve_worker_if_child`](crate::serve_worker_if_child) takes a list of them. Implement it
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
