//! A child process that echoes framed messages over pipes: the raw floor that the pool's
//! round trips are compared with. The child is the benchmark binary itself, re-executed with
//! [`ECHO_ENV`] set; its `main` calls [`serve_if_child`] first.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The environment variable that makes a benchmark binary an echo child.
pub const ECHO_ENV: &str = "SHMARENA_BENCH_ECHO";

/// If this process is an echo child, echoes frames until stdin closes, then exits.
pub fn serve_if_child() {
    if std::env::var_os(ECHO_ENV).is_some() {
        echo();
        std::process::exit(0);
    }
}

/// In the echo child: echo frames (`u32` length, little-endian, then that many bytes) until
/// stdin closes.
fn echo() {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if stdin.read_exact(&mut len).is_err() {
            break;
        }
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        if stdin.read_exact(&mut buf).is_err() {
            break;
        }
        let sent = stdout
            .write_all(&len)
            .and_then(|()| stdout.write_all(&buf))
            .and_then(|()| stdout.flush());
        if sent.is_err() {
            break;
        }
    }
}

/// The parent's side of an echo child; the child exits when this is dropped.
#[derive(Debug)]
pub struct Echo {
    child: Child,
    to: Option<ChildStdin>,
    from: ChildStdout,
    back: Vec<u8>,
}

impl Echo {
    /// Starts an echo child (this binary, re-executed).
    pub fn spawn() -> Echo {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .env(ECHO_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the echo child");
        let to = child.stdin.take();
        let from = child.stdout.take().expect("child stdout");
        Echo {
            child,
            to,
            from,
            back: Vec::new(),
        }
    }

    /// The echo child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `frame` (length header included) and reads the echo back.
    pub fn round_trip(&mut self, frame: &[u8]) -> &[u8] {
        let to = self.to.as_mut().expect("child stdin");
        to.write_all(frame).expect("write to the echo child");
        self.back.resize(frame.len(), 0);
        self.from
            .read_exact(&mut self.back)
            .expect("read from the echo child");
        &self.back
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        drop(self.to.take());
        let _ = self.child.wait();
    }
}

/// `payload` with its `u32` little-endian length in front, as the echo child reads it.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}
