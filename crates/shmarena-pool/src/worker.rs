//! The worker side: the serve loop every worker runs, and the spawn-mode hook.

use std::fs::File;
use std::io::{self, Read, Write};

use rkyv::util::AlignedVec;

use crate::codec::{
    parse_header, FrameWriter, Reader, HEADER, KIND_BATCH, KIND_HELLO, KIND_PANIC, KIND_RESULTS,
    PROTOCOL_VERSION, TAG_CODEC, TAG_OK, TAG_UNKNOWN_JOB,
};
use crate::os::{self, adopt_worker_fds, INIT_ENV, WORKER_ENV};
use crate::{Init, WorkerJob};

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
pub fn serve_worker_if_child(jobs: &[&dyn WorkerJob]) {
    let Some(marker) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    std::env::remove_var(WORKER_ENV);
    let init = std::env::var(INIT_ENV).ok();
    std::env::remove_var(INIT_ENV);
    if let Some(init) = init {
        if let Err(e) = run_init(jobs, &init) {
            eprintln!("shmarena pool worker: {e}");
            std::process::exit(2);
        }
    }
    let code = match parse_marker(&marker.to_string_lossy()).and_then(|(t, r, parent)| {
        if os::parent_pid() != Some(parent) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{WORKER_ENV} names parent pid {parent}, which is not this process's parent"
                ),
            ));
        }
        adopt_worker_fds(t, r)
    }) {
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
                "the initializer {name:?} is not listed in serve_worker_if_child                  (or is listed with other input or output types)"
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

/// Reads one frame into `buf` (header included) and returns its kind; `Ok(None)` on a clean
/// EOF before a header.
fn read_frame(r: &mut File, buf: &mut AlignedVec<16>) -> io::Result<Option<u32>> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let (kind, total) = parse_header(&header)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        .expect("a full header");
    buf.clear();
    buf.extend_from_slice(&header);
    buf.resize(total, 0);
    r.read_exact(&mut buf[HEADER..])?;
    Ok(Some(kind))
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
    let mut buf = AlignedVec::<16>::new();
    loop {
        match read_frame(task_r, &mut buf) {
            Ok(Some(KIND_BATCH)) => {}
            Ok(None) => return 0,
            Ok(Some(_)) | Err(_) => return 2,
        }
        match run_batch(jobs, &buf[HEADER..], result_w) {
            Ok(None) => {}
            Ok(Some(code)) => return code,
            Err(_) => return 2,
        }
    }
}

/// Runs one batch and writes its results. `Ok(Some(101))` after a panic was reported.
fn run_batch(
    jobs: &[&dyn WorkerJob],
    payload: &[u8],
    out: &mut File,
) -> Result<Option<i32>, String> {
    let bad = |e: io::Error| e.to_string();
    let mut r = Reader::new(payload);
    let id = r.u64()?;
    let fingerprint = r.u64()?;
    let count = r.u32()?;
    let name_len = r.u32()?;
    let name = r.text(u64::from(name_len))?;
    let job = jobs
        .iter()
        .find(|j| j.name() == name && j.fingerprint() == fingerprint);
    let mut results = FrameWriter::new(KIND_RESULTS);
    results.u64(id).u32(0).u32(0);
    let mut done = 0u32;
    for _ in 0..count {
        let (_, item) = r.item()?;
        match job {
            None => {
                let have: Vec<&str> = jobs.iter().map(|j| j.name()).collect();
                let msg = if have.contains(&name.as_str()) {
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
                    let mut p = FrameWriter::new(KIND_PANIC);
                    p.u64(id).u64(msg.len() as u64).padded(msg.as_bytes());
                    out.write_all(&results.finish()).map_err(bad)?;
                    out.write_all(&p.finish()).map_err(bad)?;
                    return Ok(Some(101));
                }
            },
        }
        done += 1;
    }
    results.patch_u32(8, done);
    out.write_all(&results.finish()).map_err(bad)?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

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
