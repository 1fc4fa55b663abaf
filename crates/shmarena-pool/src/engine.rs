//! The parent side: one thread, no helper threads (fork mode must stay forkable). Batches go
//! out on non-blocking pipes, results come back the same way, and `poll` waits on every
//! worker's result pipe, task pipe (when output is pending) and pidfd at once, so a dead worker
//! is noticed the moment it exits and nothing ever spins.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;

use crate::codec::{
    parse_header, FrameWriter, Message, Reader, HEADER, KIND_BATCH, KIND_HELLO, KIND_PANIC,
    KIND_RESULTS, PROTOCOL_VERSION, TAG_CODEC, TAG_OK, TAG_UNKNOWN_JOB,
};
use crate::job::{self, Init, PoolJob, WorkerJob};
use crate::os::{self, Child, Ready};
use crate::pool::{Mode, Pool};
use crate::{worker, PoolError};

/// Spawned workers that die before saying hello this many times in a row are not replaced.
const MAX_START_FAILURES: u32 = 3;

/// The largest encoding buffer kept from one task to the next (a larger one is freed).
const MAX_SCRATCH: usize = 1 << 20;
/// The most a batch's frame reserves ahead for the tasks still to come.
const MAX_RESERVE: usize = 16 << 20;
/// The largest frame buffer a worker keeps for reuse once its batch is done.
const MAX_SPARE: usize = 4 << 20;
/// The most frame buffers a worker keeps for reuse (a worker gets a new batch as one of its
/// batches finishes).
const SPARES: usize = 2;

/// Tasks sent to a worker together, and how many results have come back.
pub(crate) struct Batch {
    id: u64,
    /// The batch's whole frame (`KIND_BATCH`), written to the task pipe from here: the archived
    /// tasks live in it and nowhere else, so a batch in flight costs its bytes once (they are
    /// kept until its results are in, to give the tasks to another worker if this one dies).
    frame: Vec<u8>,
    /// (input index, offset of the task's item header in `frame`), in order.
    items: Vec<(u64, usize)>,
    done: usize,
}

impl Batch {
    /// The archived task whose item header is at `at` in the frame.
    fn task_at(&self, at: usize) -> &[u8] {
        let len = u64::from_le_bytes(self.frame[at..at + 8].try_into().expect("8 bytes"));
        let start = at + HEADER;
        &self.frame[start..start + usize::try_from(len).expect("the item is in memory")]
    }
}

/// A batch's frame being built, one archived task at a time.
struct BatchWriter {
    id: u64,
    frame: FrameWriter,
    items: Vec<(u64, usize)>,
}

impl BatchWriter {
    /// Starts the frame in `buf` (emptied first; its capacity is reused).
    fn new(id: u64, name: &str, fingerprint: u64, mut buf: Vec<u8>) -> BatchWriter {
        buf.clear();
        let mut frame = FrameWriter::append(KIND_BATCH, buf);
        // The count (payload offset 16) is patched in by `finish`.
        frame
            .u64(id)
            .u64(fingerprint)
            .u32(0)
            .u32(u32::try_from(name.len()).expect("job name fits u32"))
            .padded(name.as_bytes());
        BatchWriter {
            id,
            frame,
            items: Vec::new(),
        }
    }

    fn reserve(&mut self, bytes: usize) {
        self.frame.reserve(bytes);
    }

    fn push(&mut self, index: u64, task: &[u8]) {
        self.items.push((index, self.frame.len()));
        self.frame.item(TAG_OK, task);
    }

    fn finish(mut self) -> Batch {
        let count = u32::try_from(self.items.len()).expect("chunk fits u32");
        self.frame.patch_u32(16, count);
        Batch {
            id: self.id,
            frame: self.frame.finish(),
            items: self.items,
            done: 0,
        }
    }
}

/// The parent's view of one worker process. Dropping it kills and reaps the process.
pub(crate) struct Worker {
    child: Child,
    /// The last `unsent` batches of `in_flight` are not yet (fully) written to the task pipe;
    /// `out_pos` bytes of the first of them are.
    unsent: usize,
    out_pos: usize,
    /// Bytes read from the result pipe: `inbox[..in_len]`. The rest is initialized spare room
    /// that reads go straight into (zeroed once, when it grows: no zeroing per read).
    inbox: AlignedVec<16>,
    in_len: usize,
    in_flight: VecDeque<Batch>,
    /// Frame buffers of finished batches, reused for the next ones (at most [`SPARES`], none
    /// larger than [`MAX_SPARE`]), so that a steady stream of batches allocates no new frames.
    spare: Vec<Vec<u8>>,
    /// The jobs the worker registered (its hello); `None` until it has said hello.
    pub(crate) jobs: Option<Vec<(String, u64)>>,
    panic: Option<String>,
    broken: Option<String>,
    read_closed: bool,
    write_closed: bool,
    exited: bool,
    reaped: bool,
}

impl Worker {
    pub(crate) fn new(child: Child) -> Worker {
        Worker {
            child,
            unsent: 0,
            out_pos: 0,
            inbox: AlignedVec::new(),
            in_len: 0,
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            jobs: None,
            panic: None,
            broken: None,
            read_closed: false,
            write_closed: false,
            exited: false,
            reaped: false,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Whether the process is still running (it may have died since the pool last looked).
    pub(crate) fn alive(&self) -> bool {
        !(self.exited || self.reaped || self.child.has_exited())
    }

    /// True if the worker holds unfinished work or unread bytes, or is not healthy: reusing it
    /// for another call would mix that call's results with this one's.
    pub(crate) fn dirty(&self) -> bool {
        !self.in_flight.is_empty()
            || self.in_len > 0
            || self.read_closed
            || self.write_closed
            || self.exited
            || self.broken.is_some()
    }

    fn usable(&self) -> bool {
        !(self.read_closed || self.write_closed || self.exited || self.broken.is_some())
    }

    /// SIGKILL through the pidfd, which cannot hit a recycled pid.
    pub(crate) fn kill(&self) {
        if !self.reaped {
            self.child.kill();
        }
    }

    fn reap(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        self.reaped = true;
        self.child.reap()
    }

    fn mark_broken(&mut self, why: String) {
        if self.broken.is_none() {
            self.broken = Some(why);
        }
        self.kill();
    }

    fn queue(&mut self, batch: Batch) {
        self.in_flight.push_back(batch);
        self.unsent += 1;
    }

    /// Writes what the pipe takes now, straight from the frames of the unsent batches.
    fn flush_out(&mut self) {
        while self.unsent > 0 && !self.write_closed {
            let frame = &self.in_flight[self.in_flight.len() - self.unsent].frame;
            match self.child.write_tasks(&frame[self.out_pos..]) {
                Ok(Some(n)) => {
                    self.out_pos += n;
                    if self.out_pos == frame.len() {
                        self.unsent -= 1;
                        self.out_pos = 0;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    // EPIPE: the worker is gone or closed its end; its pidfd will tell (its
                    // batches are given to another worker then).
                    self.write_closed = true;
                    self.mark_broken(format!("task pipe: {e}"));
                }
            }
        }
        self.unsent = 0;
        self.out_pos = 0;
    }

    /// Reads what the pipe holds now, straight into the inbox. A read that leaves room in the
    /// inbox has emptied the pipe, so it is the last one: no extra `read` to see `EAGAIN`
    /// (bytes that arrive after it make the pipe readable for the next `poll`).
    fn fill_in(&mut self) {
        const MIN_ROOM: usize = 64 * 1024;
        while !self.read_closed {
            if self.inbox.len() - self.in_len < MIN_ROOM {
                let grown = (self.in_len + MIN_ROOM).max(2 * self.inbox.len());
                self.inbox.resize(grown, 0);
            }
            let room = self.inbox.len() - self.in_len;
            match self.child.read_results(&mut self.inbox[self.in_len..]) {
                Ok(Some(0)) => self.read_closed = true,
                Ok(Some(n)) => {
                    self.in_len += n;
                    if n < room {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.read_closed = true;
                    self.mark_broken(format!("result pipe: {e}"));
                }
            }
        }
    }

    /// Handles every complete frame in the inbox; `on_item(index, tag, bytes)` gets each
    /// result. A malformed frame marks the worker broken (and kills it).
    fn process_frames(&mut self, on_item: &mut dyn FnMut(u64, u32, &[u8])) {
        let mut at = 0;
        let res = loop {
            let (kind, total) = match parse_header(&self.inbox[at..self.in_len]) {
                Ok(Some(h)) => h,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            if self.in_len - at < total {
                break Ok(());
            }
            if kind == KIND_RESULTS && self.in_flight.len() <= self.unsent {
                // The next batch's frame is still (partly) waiting to be written: no result
                // for it can be real.
                break Err("results for a batch that was not sent in full".to_owned());
            }
            let payload = &self.inbox[at + HEADER..at + total];
            let r = frame(
                kind,
                payload,
                &mut self.in_flight,
                &mut self.jobs,
                &mut self.panic,
                on_item,
            );
            match r {
                Ok(Some(done)) => {
                    if self.spare.len() < SPARES && done.capacity() <= MAX_SPARE {
                        self.spare.push(done);
                    }
                }
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            at += total;
        };
        if at > 0 {
            self.inbox.as_mut_slice().copy_within(at..self.in_len, 0);
            self.in_len -= at;
        }
        if let Err(e) = res {
            self.in_len = 0;
            self.mark_broken(format!("sent a malformed frame: {e}"));
        }
    }
}

/// Handles one frame from a worker; returns the frame buffer of a batch whose results are now
/// all in, for reuse.
fn frame(
    kind: u32,
    payload: &[u8],
    in_flight: &mut VecDeque<Batch>,
    jobs: &mut Option<Vec<(String, u64)>>,
    panic: &mut Option<String>,
    on_item: &mut dyn FnMut(u64, u32, &[u8]),
) -> Result<Option<Vec<u8>>, String> {
    let mut r = Reader::new(payload);
    match kind {
        KIND_HELLO => {
            let version = r.u32()?;
            if version != PROTOCOL_VERSION {
                return Err(format!(
                    "protocol version {version}, this parent speaks {PROTOCOL_VERSION} (was the \
                     binary replaced on disk?)"
                ));
            }
            let _pid = r.u32()?;
            let n = r.u32()?;
            r.u32()?;
            let mut list = Vec::new();
            for _ in 0..n {
                let fp = r.u64()?;
                let len = r.u64()?;
                list.push((r.text(len)?, fp));
            }
            *jobs = Some(list);
        }
        KIND_RESULTS => {
            let id = r.u64()?;
            let count = r.u32()?;
            r.u32()?;
            let batch = in_flight
                .front_mut()
                .filter(|b| b.id == id)
                .ok_or_else(|| format!("results for batch {id}, which is not the next one"))?;
            for _ in 0..count {
                let (tag, bytes) = r.item()?;
                let (index, _) = batch
                    .items
                    .get(batch.done)
                    .ok_or_else(|| format!("more results than tasks in batch {id}"))?;
                on_item(*index, tag, bytes);
                batch.done += 1;
            }
            if batch.done == batch.items.len() {
                // Its frame buffer, for the caller to reuse.
                let done = in_flight.pop_front().expect("the batch above");
                return Ok(Some(done.frame));
            }
        }
        KIND_PANIC => {
            let _id = r.u64()?;
            let len = r.u64()?;
            *panic = Some(r.text(len)?);
        }
        other => return Err(format!("unknown frame kind {other}")),
    }
    Ok(None)
}

/// Kills every worker first, then reaps them all (faster than one at a time).
pub(crate) fn shutdown(workers: Vec<Worker>) {
    for w in &workers {
        w.kill();
    }
    drop(workers);
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
        let _ = self.reap();
    }
}

/// Waits until every worker has said hello (spawn mode start-up).
pub(crate) fn wait_hello(workers: &mut [Worker], timeout: Duration) -> Result<(), PoolError> {
    let deadline = Instant::now() + timeout;
    loop {
        let waiting: Vec<usize> = (0..workers.len())
            .filter(|&i| workers[i].jobs.is_none())
            .collect();
        let Some(&first) = waiting.first() else {
            return Ok(());
        };
        if let Some(&i) = waiting
            .iter()
            .find(|&&i| workers[i].exited || workers[i].read_closed)
        {
            let w = &mut workers[i];
            w.kill();
            let status = w.reap();
            let detail = match (&w.broken, status) {
                (Some(b), _) => b.clone(),
                (None, Some(s)) => format!("it exited before serving ({s})"),
                (None, None) => "it exited before serving".to_owned(),
            };
            return Err(PoolError::WorkerStart {
                pid: w.pid(),
                detail,
            });
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(PoolError::WorkerStart {
                pid: workers[first].pid(),
                detail: format!("no answer within {timeout:?}"),
            });
        }
        let mut events = Vec::new();
        {
            let mut fds = Vec::new();
            for &i in &waiting {
                let w = &workers[i];
                fds.push((w.child.results(), Ready::Read));
                fds.push((w.child.exit_fd(), Ready::Read));
            }
            let ready = os::poll(&fds, Some(deadline - now))
                .map_err(|e| PoolError::io("waiting for pool workers to start", e))?;
            for (k, &i) in waiting.iter().enumerate() {
                events.push((i, ready[2 * k], ready[2 * k + 1]));
            }
        }
        for (i, readable, exited) in events {
            let w = &mut workers[i];
            if readable || exited {
                w.fill_in();
                w.process_frames(&mut |_, _, _| {});
            }
            if exited {
                w.exited = true;
            }
        }
    }
}

/// A fork-mode job seen through the type-erased [`WorkerJob`] interface.
struct Local<'a, I, O, J> {
    job: &'a J,
    name: &'a str,
    fingerprint: u64,
    _types: PhantomData<fn(I) -> O>,
}

impl<I: Message, O: Message, J: PoolJob<I, O>> WorkerJob for Local<'_, I, O, J> {
    fn name(&self) -> &str {
        self.name
    }
    fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
    fn run(&self, input: &[u8]) -> Result<AlignedVec, String> {
        job::run_typed(input, |i: I| self.job.call(i))
    }
}

/// One `imap`/`imap_unordered` call: its inputs, its job and the results not yet handed out.
pub(crate) struct Engine<'p, I, O, J, It> {
    pool: &'p mut Pool,
    job: J,
    name: String,
    fingerprint: u64,
    inputs: It,
    inputs_done: bool,
    next_index: u64,
    next_batch: u64,
    requeue: VecDeque<Batch>,
    /// The buffer each task is archived into before it is copied into its batch's frame.
    scratch: AlignedVec,
    ready: VecDeque<(u64, Result<O, PoolError>)>,
    finished: bool,
    /// Ordered mode: do not dispatch index `floor + window` or later while work is in flight.
    pub(crate) floor: u64,
    window: Option<u64>,
    start_failures: u32,
    replace_error: Option<String>,
    /// Tasks in the next batch, and the most a batch gets (see [`chunk_plan`]).
    chunk: usize,
    chunk_max: usize,
    _types: PhantomData<fn(I)>,
}

/// Batch sizes for a call: `(first, most)`. A chunksize the user set is used as it is. Else,
/// as Python's `Pool.map` does, an input of known length `n` is cut into about four batches
/// per worker (`ceil(n / (4 * workers))`); an input of unknown length starts at 1 task per
/// batch and doubles with each batch up to [`ADAPTIVE_MAX`].
pub(crate) fn chunk_plan(
    set: Option<usize>,
    known_len: Option<usize>,
    workers: usize,
) -> (usize, usize) {
    match (set, known_len) {
        (Some(n), _) => (n, n),
        (None, Some(n)) => {
            let c = n.div_ceil(4 * workers.max(1)).clamp(1, u32::MAX as usize);
            (c, c)
        }
        (None, None) => (1, ADAPTIVE_MAX),
    }
}

/// The largest batch picked for an input of unknown length.
pub(crate) const ADAPTIVE_MAX: usize = 64;

/// The most frame bytes (archived tasks with their item headers) an automatically sized batch
/// holds; it always holds at least one task. Past about a mebibyte the per-batch cost (a few
/// µs) is lost in the cost of moving the bytes, while every batch in flight is memory the
/// parent holds: `prefetch` batches per worker.
pub(crate) const AUTO_BATCH_BYTES: usize = 1 << 20;

/// Whether a batch of `tasks` tasks taking `bytes` of its frame takes no more: it reached
/// its `chunk`, or, when the chunksize is automatic, [`AUTO_BATCH_BYTES`].
pub(crate) fn batch_is_full(tasks: usize, bytes: usize, chunk: usize, automatic: bool) -> bool {
    tasks >= chunk || (automatic && tasks > 0 && bytes >= AUTO_BATCH_BYTES)
}

impl<'p, I, O, J, It> Engine<'p, I, O, J, It>
where
    I: Message,
    O: Message,
    J: PoolJob<I, O>,
    It: Iterator<Item = I>,
{
    pub(crate) fn start(
        pool: &'p mut Pool,
        job: J,
        inputs: It,
        ordered: bool,
    ) -> Result<Self, PoolError> {
        let (name, fingerprint) = match (pool.cfg.mode, job.name()) {
            (Mode::Spawn, None) => return Err(PoolError::UnnamedJob),
            (_, name) => {
                let name = name.unwrap_or("").to_owned();
                let fp = job::fingerprint::<I, O>(&name);
                (name, fp)
            }
        };
        if pool.cfg.mode == Mode::Spawn {
            let registered = pool.workers.iter().find_map(|w| w.jobs.as_ref());
            if let Some(list) = registered {
                if !list.iter().any(|(n, fp)| *n == name && *fp == fingerprint) {
                    let detail = if list.iter().any(|(n, _)| *n == name) {
                        "a job of that name is registered with other input or output types"
                            .to_owned()
                    } else {
                        let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
                        format!("registered: {names:?}")
                    };
                    return Err(PoolError::UnknownJob { name, detail });
                }
            }
        }
        let known_len = match inputs.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo),
            _ => None,
        };
        let (chunk, chunk_max) = chunk_plan(pool.cfg.chunksize, known_len, pool.cfg.workers);
        let per_batch = pool.cfg.prefetch as u64 * chunk_max as u64;
        let window = ordered.then(|| 4 * per_batch * pool.cfg.workers as u64);
        let mut engine = Engine {
            pool,
            job,
            name,
            fingerprint,
            inputs,
            inputs_done: false,
            next_index: 0,
            next_batch: 0,
            requeue: VecDeque::new(),
            scratch: AlignedVec::new(),
            ready: VecDeque::new(),
            finished: false,
            floor: 0,
            window,
            start_failures: 0,
            replace_error: None,
            chunk,
            chunk_max,
            _types: PhantomData,
        };
        if engine.pool.cfg.mode == Mode::Fork {
            // Fresh workers per call: they must inherit this call's job.
            shutdown(std::mem::take(&mut engine.pool.workers));
        } else {
            // Workers that died between calls (killed, or their parent thread ended) get no
            // tasks: reap them now and start replacements below.
            let (live, dead): (Vec<Worker>, Vec<Worker>) = std::mem::take(&mut engine.pool.workers)
                .into_iter()
                .partition(Worker::alive);
            shutdown(dead);
            engine.pool.workers = live;
        }
        while engine.pool.workers.len() < engine.pool.cfg.workers {
            engine.start_worker()?;
        }
        Ok(engine)
    }

    /// The pids of the live workers.
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        self.pool.worker_pids()
    }

    fn start_worker(&mut self) -> Result<(), PoolError> {
        let pool = &mut *self.pool;
        let child = match pool.cfg.mode {
            Mode::Fork => {
                if !pool.cfg.allow_threads_at_fork {
                    let threads = os::thread_count()
                        .map_err(|e| PoolError::io("counting threads in /proc/self/task", e))?;
                    if threads > 1 {
                        return Err(PoolError::ThreadsAtFork { threads });
                    }
                }
                let close: Vec<RawFd> = pool
                    .workers
                    .iter()
                    .flat_map(|w| w.child.parent_fds())
                    .collect();
                let local = Local::<I, O, J> {
                    job: &self.job,
                    name: &self.name,
                    fingerprint: self.fingerprint,
                    _types: PhantomData,
                };
                let init = pool.cfg.init.as_ref();
                os::fork_worker(&close, pool.cfg.pipe_size, &mut |task_r, result_w| {
                    if let Some(Err(e)) = init.map(Init::run) {
                        eprintln!("shmarena pool worker: {e}");
                        return 2;
                    }
                    worker::serve(&[&local], task_r, result_w)
                })
                .map_err(|e| PoolError::io("forking a pool worker", e))?
            }
            Mode::Spawn => pool.spawn_worker()?,
        };
        pool.workers.push(Worker::new(child));
        Ok(())
    }

    /// The next batch to send: a requeued one, or new tasks archived into a frame built in
    /// `spare` if there is one (a finished batch's buffer).
    fn next_batch(&mut self, mut spare: Option<Vec<u8>>) -> Option<Batch> {
        if let Some(b) = self.requeue.pop_front() {
            return Some(b);
        }
        let busy = self.pool.workers.iter().any(|w| !w.in_flight.is_empty());
        let mut batch: Option<BatchWriter> = None;
        let mut items = 0;
        let mut bytes_in = 0;
        let automatic = self.pool.cfg.chunksize.is_none();
        let chunk = self.chunk;
        self.chunk = (self.chunk * 2).min(self.chunk_max);
        while !self.inputs_done && !batch_is_full(items, bytes_in, chunk, automatic) {
            if let Some(w) = self.window {
                if busy && self.next_index >= self.floor + w {
                    break;
                }
            }
            let Some(input) = self.inputs.next() else {
                self.inputs_done = true;
                break;
            };
            let index = self.next_index;
            self.next_index += 1;
            match input.encode_into(std::mem::take(&mut self.scratch)) {
                Ok(bytes) => {
                    let b = batch.get_or_insert_with(|| {
                        let buf = spare.take().unwrap_or_default();
                        BatchWriter::new(self.next_batch + 1, &self.name, self.fingerprint, buf)
                    });
                    b.push(index, &bytes);
                    // What the task takes in the frame: its item header and padded bytes.
                    let item = HEADER + bytes.len().next_multiple_of(16);
                    if items == 0 {
                        // Room for the rest of the batch if its tasks are about this size:
                        // one allocation per frame instead of a chain of copies as it grows.
                        // An automatic batch closes at AUTO_BATCH_BYTES anyway.
                        let most = if automatic {
                            AUTO_BATCH_BYTES
                        } else {
                            MAX_RESERVE
                        };
                        b.reserve(item.saturating_mul(chunk - 1).min(most));
                    }
                    items += 1;
                    bytes_in += item;
                    if bytes.capacity() <= MAX_SCRATCH {
                        self.scratch = bytes;
                    }
                }
                Err(message) => self.ready.push_back((
                    index,
                    Err(PoolError::Codec {
                        index,
                        what: "task",
                        message,
                    }),
                )),
            }
        }
        let batch = batch?;
        self.next_batch += 1;
        Some(batch.finish())
    }

    /// Gives each usable worker up to `prefetch` batches, least loaded first.
    fn dispatch(&mut self) {
        'rounds: for round in 0..self.pool.cfg.prefetch {
            for wi in 0..self.pool.workers.len() {
                let w = &self.pool.workers[wi];
                if !w.usable() || w.in_flight.len() > round {
                    continue;
                }
                let spare = self.pool.workers[wi].spare.pop();
                let Some(batch) = self.next_batch(spare) else {
                    break 'rounds;
                };
                self.pool.workers[wi].queue(batch);
            }
        }
        for w in &mut self.pool.workers {
            if w.unsent > 0 {
                w.flush_out();
            }
        }
    }

    fn on_item<'a>(
        ready: &'a mut VecDeque<(u64, Result<O, PoolError>)>,
        name: &'a str,
    ) -> impl FnMut(u64, u32, &[u8]) + 'a {
        move |index, tag, bytes| {
            let text = || String::from_utf8_lossy(bytes).into_owned();
            let r = match tag {
                TAG_OK => O::decode(bytes).map_err(|message| PoolError::Codec {
                    index,
                    what: "result",
                    message,
                }),
                TAG_CODEC => Err(PoolError::Codec {
                    index,
                    what: "task or result (in the worker)",
                    message: text(),
                }),
                TAG_UNKNOWN_JOB => Err(PoolError::UnknownJob {
                    name: name.to_owned(),
                    detail: text(),
                }),
                other => Err(PoolError::Codec {
                    index,
                    what: "result",
                    message: format!("unknown result tag {other}"),
                }),
            };
            ready.push_back((index, r));
        }
    }

    /// Blocks in `poll` until some worker has news, and handles it.
    fn wait(&mut self) -> Result<(), PoolError> {
        let mut events = Vec::new();
        {
            let mut fds = Vec::new();
            let mut owners = Vec::new();
            for (wi, w) in self.pool.workers.iter().enumerate() {
                if !w.read_closed {
                    fds.push((w.child.results(), Ready::Read));
                    owners.push((wi, 0));
                }
                fds.push((w.child.exit_fd(), Ready::Read));
                owners.push((wi, 1));
                if w.unsent > 0 && !w.write_closed {
                    fds.push((w.child.tasks(), Ready::Write));
                    owners.push((wi, 2));
                }
            }
            let ready =
                os::poll(&fds, None).map_err(|e| PoolError::io("waiting for pool workers", e))?;
            for (&ready, &(wi, what)) in ready.iter().zip(&owners) {
                if ready {
                    events.push((wi, what));
                }
            }
        }
        let mut on_item = Self::on_item(&mut self.ready, &self.name);
        for (wi, what) in events {
            let w = &mut self.pool.workers[wi];
            match what {
                0 => {
                    w.fill_in();
                    w.process_frames(&mut on_item);
                    if w.read_closed {
                        // A live worker that closed its result pipe is of no more use.
                        w.kill();
                    }
                }
                1 => w.exited = true,
                _ => w.flush_out(),
            }
        }
        drop(on_item);
        for wi in (0..self.pool.workers.len()).rev() {
            if self.pool.workers[wi].exited {
                self.bury(wi);
            }
        }
        Ok(())
    }

    /// A worker exited: collect its last results, reap it, fail or requeue its batches, and
    /// start a replacement.
    fn bury(&mut self, wi: usize) {
        let mut w = self.pool.workers.remove(wi);
        {
            let mut on_item = Self::on_item(&mut self.ready, &self.name);
            w.fill_in();
            w.process_frames(&mut on_item);
        }
        let status = w.reap();
        let pid = w.pid();
        let died = |index, panic| {
            let err = PoolError::WorkerDied {
                index,
                pid,
                status,
                panic,
            };
            (index, Err(err))
        };
        let mut batches = std::mem::take(&mut w.in_flight);
        // A worker that died before saying hello (its initializer failed, say) never started
        // any of its batches: they all go to another worker.
        let front = if w.jobs.is_some() {
            batches.pop_front()
        } else {
            None
        };
        if let Some(mut front) = front {
            let mut rest = front.items.split_off(front.done);
            if let (Some(msg), false) = (w.panic.take(), rest.is_empty()) {
                // The panic names the culprit: the first unfinished item. The others of the
                // batch never ran; they go to another worker.
                let (index, _) = rest.remove(0);
                self.ready.push_back(died(index, Some(msg)));
                if !rest.is_empty() {
                    let buf = Vec::with_capacity(front.frame.len());
                    let mut b = BatchWriter::new(front.id, &self.name, self.fingerprint, buf);
                    for (index, at) in rest {
                        b.push(index, front.task_at(at));
                    }
                    self.requeue.push_front(b.finish());
                }
            } else {
                // A hard death (signal, exit): any unfinished item of the batch may be the cause.
                for (index, _) in rest {
                    self.ready.push_back(died(index, None));
                }
            }
        }
        // Batches queued behind the running one were never started.
        for b in batches.into_iter().rev() {
            self.requeue.push_front(b);
        }
        if w.jobs.is_none() {
            self.start_failures += 1;
        } else {
            self.start_failures = 0;
        }
        drop(w);
        if self.replace_error.is_some() {
            return;
        }
        if self.start_failures >= MAX_START_FAILURES {
            self.replace_error = Some(format!(
                "{MAX_START_FAILURES} workers in a row died before serving; the last, pid {pid}, \
                 ended with {}",
                status.map_or("an unknown status".to_owned(), |s| s.to_string())
            ));
            return;
        }
        if let Err(e) = self.start_worker() {
            self.replace_error = Some(e.to_string());
        }
    }

    /// The next finished task, in completion order: `(Some(index), result)`, or `(None, err)`
    /// once when the pool cannot go on, then `None`.
    pub(crate) fn next_item(&mut self) -> Option<(Option<u64>, Result<O, PoolError>)> {
        loop {
            if let Some((i, r)) = self.ready.pop_front() {
                return Some((Some(i), r));
            }
            if self.finished {
                return None;
            }
            self.dispatch();
            if !self.ready.is_empty() {
                continue;
            }
            let busy = self.pool.workers.iter().any(|w| !w.in_flight.is_empty());
            if !busy && self.requeue.is_empty() && self.inputs_done {
                self.finished = true;
                return None;
            }
            if self.pool.workers.is_empty() {
                self.finished = true;
                let cause = self
                    .replace_error
                    .take()
                    .unwrap_or_else(|| "every worker died".to_owned());
                return Some((None, Err(PoolError::NoWorkers { cause })));
            }
            if let Err(e) = self.wait() {
                self.finished = true;
                return Some((None, Err(e)));
            }
        }
    }
}

impl<I, O, J, It> Drop for Engine<'_, I, O, J, It> {
    fn drop(&mut self) {
        let workers = std::mem::take(&mut self.pool.workers);
        if self.pool.cfg.mode == Mode::Fork {
            shutdown(workers);
        } else {
            // Keep the idle ones for the next call; workers still holding this call's tasks
            // are killed (their late results must not reach the next call) and replaced then.
            let (dirty, clean): (Vec<Worker>, Vec<Worker>) =
                workers.into_iter().partition(|w| w.dirty());
            shutdown(dirty);
            self.pool.workers = clean;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{batch_is_full, chunk_plan, ADAPTIVE_MAX, AUTO_BATCH_BYTES};

    #[test]
    fn automatic_batches_stop_at_the_byte_cap_set_ones_do_not() {
        let (chunk, _) = chunk_plan(None, Some(1_000_000), 2);
        assert_eq!(chunk, 125_000);
        // Small tasks: the count decides.
        assert!(!batch_is_full(10, 10 * 64, chunk, true));
        assert!(batch_is_full(chunk, chunk * 64, chunk, true));
        // Large tasks: the byte cap decides, after at least one task.
        assert!(!batch_is_full(0, 0, chunk, true));
        assert!(!batch_is_full(3, AUTO_BATCH_BYTES - 1, chunk, true));
        assert!(batch_is_full(1, AUTO_BATCH_BYTES, chunk, true));
        // A chunksize the user set is kept whatever the bytes.
        assert!(!batch_is_full(3, 100 * AUTO_BATCH_BYTES, chunk, false));
        assert_eq!(chunk_plan(None, None, 2), (1, ADAPTIVE_MAX));
    }
}
