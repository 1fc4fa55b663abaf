//! The worker side: the serve loop every worker runs, and the spawn-mode hook.

use std::fs::File;
use std::io::{self, Read, Write};

use rkyv::util::AlignedVec;

use crate::codec::{
    parse_header, FrameWriter, Reader, HEADER, KIND_BATCH, KIND_HELLO, KIND_PANIC, KIND_RESULTS,
    PROTOCOL_VERSION, TAG_CODEC, TAG_OK, TAG_UNKNOWN_JOB,
};
use crate::job::{Init, WorkerJob};
use crate::os::{self, adopt_worker_fds, INIT_ENV, WORKER_ENV};

/// Serves the worker role if this process was started by a [`Pool`](crate::Pool) in
/// [`Mode::Spawn`](crate::Mode::Spawn), and otherwise returns at once.
///
/// Call it on the first line of `main`, listing every [`Job`](crate::Job) the program hands to
/// a spawn-mode pool. A spawned worker re-executes this binary; this call then takes the pipes
/// its parent left it, answers tasks until the parent closes them, and ends the process: it
/// never returns in a worker. In a normal run it reads one environment variable and returns.
///
/// ```no_run
/// use shmarena_pool::{Job, Mode, Pool};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// static SQUARE: Job<u64, u64> = Job::new("square", square);
///
/// fn main() -> Result<(), shmarena_pool::PoolError> {
///     shmarena_pool::serve_worker_if_child(&[&SQUARE]);
///
///     let mut pool = Pool::builder().mode(Mode::Spawn).workers(2).build()?;
///     let squares = pool.map(&SQUARE, 0..10u64)?;
///     assert_eq!(squares[3], 9);
///     Ok(())
/// }
/// ```
///
/// Call it before this process starts threads: it removes its marker variable from the
/// environment (so the job's own child processes are not mistaken for workers).
///
/// With the `shmarena` feature, a worker takes the trust rows of the arenas its pool shared
/// with it through [`PoolBuilder::on_spawn`](crate::PoolBuilder::on_spawn) and `share_with`
/// (see there), before the initializer runs: it reads them without bytecheck, as the pool's
/// process does. The pool's marker variable is the pool's alone: a program that execs its own
/// binary with it by hand becomes the launcher the workers trust.
pub fn serve_worker_if_child(jobs: &[&dyn WorkerJob]) {
    let Some(marker) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    std::env::remove_var(WORKER_ENV);
    let init = std::env::var(INIT_ENV).ok();
    std::env::remove_var(INIT_ENV);
    let marker = parse_marker(&marker.to_string_lossy()).and_then(|(t, r, parent)| {
        if os::parent_pid() != Some(parent) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{WORKER_ENV} names parent pid {parent}, which is not this process's parent"
                ),
            ));
        }
        Ok((t, r))
    });
    // A worker of a spawn-mode pool reads the arenas its pool shared with it (`on_spawn` +
    // `share_with`) as the pool does, with no bytecheck of the entries the pool knows valid.
    #[cfg(feature = "shmarena")]
    if marker.is_ok() {
        os::trust_pool_rows();
    }
    if let Some(init) = init {
        if let Err(e) = run_init(jobs, &init) {
            eprintln!("shmarena pool worker: {e}");
            std::process::exit(2);
        }
    }
    let code = match marker.and_then(|(t, r)| adopt_worker_fds(t, r)) {
        Ok((mut task_r, mut result_w)) => {
            let code = serve(jobs, &mut task_r, &mut result_w);
            let _ = io::stdout().flush();
            // Exit with the pipes still open: the parent takes EOF on them to mean "exiting".
            std::process::exit(code);
        }
        Err(e) => {
            eprintln!("shmarena pool worker: cannot start: {e}");
            2
        }
    };
    std::process::exit(code);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// The value of [`INIT_ENV`] for `init`.
pub(crate) fn encode_init(init: &Init) -> String {
    format!(
        "{}:{:016x}:{}",
        hex(init.job.name().as_bytes()),
        init.job.fingerprint(),
        hex(&init.input)
    )
}

/// Runs the initializer named in [`INIT_ENV`], which must be one of `jobs`.
fn run_init(jobs: &[&dyn WorkerJob], text: &str) -> Result<(), String> {
    let bad = || format!("malformed {INIT_ENV}");
    let mut parts = text.splitn(3, ':');
    let name = parts.next().and_then(unhex).ok_or_else(bad)?;
    let name = String::from_utf8(name).map_err(|_| bad())?;
    let fingerprint = parts
        .next()
        .and_then(|f| u64::from_str_radix(f, 16).ok())
        .ok_or_else(bad)?;
    let bytes = parts.next().and_then(unhex).ok_or_else(bad)?;
    let mut input = AlignedVec::<16>::new();
    input.extend_from_slice(&bytes);
    let job = jobs
        .iter()
        .find(|j| j.name() == name && j.fingerprint() == fingerprint)
        .ok_or_else(|| {
            format!(
                "the initializer {name:?} is not listed in serve_worker_if_child \
                 (or is listed with other input or output types)"
            )
        })?;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&input))) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("the initializer {name:?} failed: {e}")),
        Err(payload) => Err(format!(
            "the initializer {name:?} panicked: {}",
            panic_message(payload.as_ref())
        )),
    }
}

fn parse_marker(s: &str) -> io::Result<(i32, i32, i32)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("malformed {WORKER_ENV}={s:?} (expected TASKFD:RESULTFD:PARENTPID)"),
        )
    };
    let mut it = s.split(':').map(|p| p.parse::<i32>().map_err(|_| bad()));
    let t = it.next().ok_or_else(bad)??;
    let r = it.next().ok_or_else(bad)??;
    let p = it.next().ok_or_else(bad)??;
    if it.next().is_some() {
        return Err(bad());
    }
    Ok((t, r, p))
}

/// Frames from the parent, read with as few system calls as the pipe allows: each `read` takes
/// whatever the pipe holds, up to the buffer's size, so a batch frame (header and payload), or
/// several, usually arrive in one call.
///
/// Frames are multiples of 16 bytes and the buffer is 16-aligned, so every frame starts at a
/// 16-aligned address, as the items' in-place rkyv access needs.
struct FrameReader {
    /// Always fully initialized (zeroed once when it grows): reads go straight into it.
    buf: AlignedVec<16>,
    /// Unconsumed bytes are `buf[start..end]`; `start` is on a frame boundary.
    start: usize,
    end: usize,
}

impl FrameReader {
    fn new() -> FrameReader {
        let mut buf = AlignedVec::<16>::new();
        buf.resize(64 * 1024, 0);
        FrameReader {
            buf,
            start: 0,
            end: 0,
        }
    }

    /// Reads until one whole frame is buffered and returns its kind and where it is in
    /// [`FrameReader::bytes`] (header included); `Ok(None)` on a clean EOF between frames.
    fn next(&mut self, r: &mut File) -> io::Result<Option<(u32, std::ops::Range<usize>)>> {
        loop {
            let have = &self.buf[self.start..self.end];
            let wanted = match parse_header(have) {
                Ok(Some((kind, total))) if have.len() >= total => {
                    let range = self.start..self.start + total;
                    self.start += total;
                    if self.start == self.end {
                        (self.start, self.end) = (0, 0);
                    }
                    return Ok(Some((kind, range)));
                }
                Ok(Some((_, total))) => total,
                Ok(None) => HEADER,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            };
            if self.buf.len() - self.start < wanted {
                // Move the partial frame to the front, and grow if it does not fit even there.
                self.buf.as_mut_slice().copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
                if self.buf.len() < wanted {
                    self.buf.resize(wanted, 0);
                }
            }
            match r.read(&mut self.buf[self.end..]) {
                Ok(0) if self.start == self.end => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// The worker loop: says hello, then answers batches until EOF. Returns the exit code: 0 on
/// EOF, 101 after a job panicked (the parent has been told), 2 on a broken pipe or frame.
pub(crate) fn serve(jobs: &[&dyn WorkerJob], task_r: &mut File, result_w: &mut File) -> i32 {
    let mut hello = FrameWriter::new(KIND_HELLO);
    hello
        .u32(PROTOCOL_VERSION)
        .u32(std::process::id())
        .u32(u32::try_from(jobs.len()).unwrap_or(u32::MAX))
        .u32(0);
    for j in jobs {
        hello
            .u64(j.fingerprint())
            .u64(j.name().len() as u64)
            .padded(j.name().as_bytes());
    }
    if result_w.write_all(&hello.finish()).is_err() {
        return 2;
    }
    let mut frames = FrameReader::new();
    let mut out = Vec::with_capacity(4096);
    loop {
        let range = match frames.next(task_r) {
            Ok(Some((KIND_BATCH, range))) => range,
            Ok(None) => return 0,
            Ok(Some(_)) | Err(_) => return 2,
        };
        match run_batch(
            jobs,
            &frames.bytes()[range.start + HEADER..range.end],
            result_w,
            &mut out,
        ) {
            Ok(None) => {}
            Ok(Some(code)) => return code,
            Err(_) => return 2,
        }
    }
}

/// Runs one batch and writes its results. `Ok(Some(101))` after a panic was reported.
/// `buf` is a scratch buffer kept from one batch to the next; the results frame is built in it
/// and written with one `write`.
fn run_batch(
    jobs: &[&dyn WorkerJob],
    payload: &[u8],
    out: &mut File,
    buf: &mut Vec<u8>,
) -> Result<Option<i32>, String> {
    let bad = |e: io::Error| e.to_string();
    let mut r = Reader::new(payload);
    let id = r.u64()?;
    let fingerprint = r.u64()?;
    let count = r.u32()?;
    let name_len = r.u32()?;
    let name_bytes = r.padded(u64::from(name_len))?;
    let job = jobs
        .iter()
        .find(|j| j.name().as_bytes() == name_bytes && j.fingerprint() == fingerprint);
    buf.clear();
    let mut results = FrameWriter::append(KIND_RESULTS, std::mem::take(buf));
    results.u64(id).u32(0).u32(0);
    let mut done = 0u32;
    for _ in 0..count {
        let (_, item) = r.item()?;
        match job {
            None => {
                let name = String::from_utf8_lossy(name_bytes);
                let have: Vec<&str> = jobs.iter().map(|j| j.name()).collect();
                let msg = if have.contains(&name.as_ref()) {
                    format!("a job named {name:?} is registered with other input or output types")
                } else {
                    format!("registered jobs: {have:?}")
                };
                results.item(TAG_UNKNOWN_JOB, msg.as_bytes());
            }
            Some(j) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| j.run(item)))
            {
                Ok(Ok(bytes)) => {
                    results.item(TAG_OK, &bytes);
                }
                Ok(Err(msg)) => {
                    results.item(TAG_CODEC, msg.as_bytes());
                }
                Err(payload) => {
                    // Report what was done, then the panic; the worker then exits, because
                    // the job may have left its own state (locks, caches) half-updated.
                    results.patch_u32(8, done);
                    let msg = panic_message(payload.as_ref());
                    // Both frames in one write.
                    let mut p = FrameWriter::append(KIND_PANIC, results.finish());
                    p.u64(id).u64(msg.len() as u64).padded(msg.as_bytes());
                    out.write_all(&p.finish()).map_err(bad)?;
                    return Ok(Some(101));
                }
            },
        }
        done += 1;
    }
    results.patch_u32(8, done);
    *buf = results.finish();
    out.write_all(buf).map_err(bad)?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_joined_on_the_pipe_come_out_whole() {
        use std::os::fd::OwnedFd;
        let (r, w) = std::io::pipe().unwrap();
        let mut r = File::from(OwnedFd::from(r));
        let mut w = File::from(OwnedFd::from(w));
        let mut small = FrameWriter::new(KIND_BATCH);
        small.u64(1).padded(b"first");
        let small = small.finish();
        // Larger than the reader's initial 64 KiB buffer: it must grow.
        let mut big = FrameWriter::new(KIND_BATCH);
        big.u64(2).padded(&vec![7u8; 100_000]);
        let big = big.finish();
        let mut all = small.clone();
        all.extend_from_slice(&big);
        all.extend_from_slice(&small);
        let writer = std::thread::spawn(move || {
            // Odd-sized pieces: frames split across reads, and several in one read.
            for piece in all.chunks(7_001) {
                w.write_all(piece).unwrap();
            }
        });
        let mut frames = FrameReader::new();
        for want in [&small, &big, &small] {
            let (kind, range) = frames.next(&mut r).unwrap().unwrap();
            assert_eq!(kind, KIND_BATCH);
            assert_eq!(&frames.bytes()[range.clone()], &want[..]);
            assert_eq!(frames.bytes()[range.start..].as_ptr() as usize % 16, 0);
        }
        writer.join().unwrap();
        assert!(frames.next(&mut r).unwrap().is_none(), "clean EOF");
    }

    #[test]
    fn marker_parsing() {
        assert_eq!(parse_marker("5:6:100").unwrap(), (5, 6, 100));
        assert!(parse_marker("5:6").is_err());
        assert!(parse_marker("5:6:7:8").is_err());
        assert!(parse_marker("a:6:7").is_err());
    }

    #[test]
    fn hex_round_trip() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
