//! Helpers shared by the integration tests of the workspace's crates (dev-only, never
//! published): unique names and a check that a test leaves `/dev/shm` and its temporary directory
//! as it found them ([`Scope`]), running a test in a fresh process, printing an error chain, and
//! [`reads`], every typed read of an arena entry (run by shmarena's corruption suite and by the
//! fuzz target in `fuzz/`).
//!
//! `crates/shmarena/tests/common/mod.rs` re-exports this crate for the tests that say
//! `mod common;`, and adds the one helper that needs `unsafe` (`fork_and_wait`), which stays in
//! `crates/shmarena` with the rest of the workspace's `unsafe`.
#![forbid(unsafe_code)]

pub mod reads;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn random_tag() -> String {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("read /dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A scope for one test: a unique prefix for segment names and a private temporary directory.
/// `finish` (or drop) asserts that nothing with the prefix is left in /dev/shm and that the
/// directory is empty, then removes the directory.
pub struct Scope {
    /// The prefix of every segment name this scope hands out.
    pub prefix: String,
    /// A private temporary directory, removed by `finish` or drop.
    pub dir: PathBuf,
    finished: bool,
}

impl Scope {
    /// A new scope with a prefix no other scope, in this process or another, shares.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Scope {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("sa{}{n:x}-", random_tag());
        let dir =
            std::env::temp_dir().join(format!("shmarena-test-{}", prefix.trim_end_matches('-')));
        std::fs::create_dir_all(&dir).unwrap();
        Scope {
            prefix,
            dir,
            finished: false,
        }
    }

    /// A unique segment name (at most 30 bytes).
    pub fn name(&self, tag: &str) -> String {
        let name = format!("{}{tag}", self.prefix);
        assert!(name.len() <= 30, "test name too long: {name}");
        name
    }

    /// A path for `file` in the scope's temporary directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Segments in /dev/shm that carry this scope's prefix.
    pub fn leftover_segments(&self) -> Vec<String> {
        shm_entries()
            .into_iter()
            .filter(|n| n.starts_with(&self.prefix))
            .collect()
    }

    /// Asserts that nothing of this scope is left, and removes its directory.
    pub fn finish(mut self) {
        self.finished = true;
        self.check();
    }

    fn check(&self) {
        let left = self.leftover_segments();
        let files: Vec<_> = std::fs::read_dir(&self.dir)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        // Clean up before asserting so a failing test does not leak either.
        for n in &left {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(n));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        assert!(left.is_empty(), "segments left in /dev/shm: {left:?}");
        assert!(
            files.is_empty(),
            "files left in {}: {files:?}",
            self.dir.display()
        );
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if !self.finished && !std::thread::panicking() {
            self.check();
        } else if !self.finished {
            for n in self.leftover_segments() {
                let _ = std::fs::remove_file(Path::new("/dev/shm").join(n));
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The names of everything in /dev/shm.
pub fn shm_entries() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The exit code of a raw wait status, if the process exited.
pub fn exited_with(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

/// The signal of a raw wait status, if a signal ended the process.
pub fn killed_by(status: i32) -> Option<i32> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

/// Runs the ignored test `name` of the current test binary in a fresh, single-threaded process
/// with extra environment variables, and asserts it printed `OK:<name>`.
pub fn run_isolated(name: &str, envs: &[(&str, String)]) -> String {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run_checked(&mut cmd, name)
}

/// Runs a prepared command and asserts it succeeded and printed `OK:<name>`.
pub fn run_checked(cmd: &mut std::process::Command, name: &str) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains(&format!("OK:{name}")),
        "{name} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// An error and its causes on one line, as the binaries print it ([`shmarena::error_chain`]):
/// shmarena's messages name the thing, and `source()` carries the cause.
pub fn report(e: &dyn std::error::Error) -> String {
    shmarena::error_chain(e)
}
