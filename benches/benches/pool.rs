//! Pool overhead (issue 6, item 6): the floor the pool is compared with, a raw pipe round trip
//! of a 64-byte message between this process and a child that echoes it (this same binary,
//! re-executed with `SHMARENA_BENCH_ECHO=1`).

use std::hint::black_box;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use criterion::Criterion;

const ECHO_ENV: &str = "SHMARENA_BENCH_ECHO";
const MSG: usize = 64;

/// In the child: echo 64-byte messages until stdin closes.
fn echo() {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; MSG];
    while stdin.read_exact(&mut buf).is_ok() {
        if stdout
            .write_all(&buf)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
}

/// The parent's side of an echo child; the child exits when this is dropped.
struct Echo {
    child: Child,
    to: Option<ChildStdin>,
    from: ChildStdout,
}

impl Echo {
    fn spawn() -> Echo {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .env(ECHO_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the echo child");
        let to = child.stdin.take();
        let from = child.stdout.take().expect("child stdout");
        Echo { child, to, from }
    }

    fn round_trip(&mut self, msg: &[u8; MSG]) -> [u8; MSG] {
        let to = self.to.as_mut().expect("child stdin");
        to.write_all(msg).expect("write to the echo child");
        let mut back = [0u8; MSG];
        self.from
            .read_exact(&mut back)
            .expect("read from the echo child");
        back
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        drop(self.to.take());
        let _ = self.child.wait();
    }
}

fn pipe(c: &mut Criterion) {
    let mut echo = Echo::spawn();
    let msg = [7u8; MSG];
    let mut g = c.benchmark_group("pool/round-trip");
    g.bench_function("baseline: raw pipe round trip, 64 B, two processes", |b| {
        b.iter(|| black_box(echo.round_trip(black_box(&msg))))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

fn main() {
    if std::env::var_os(ECHO_ENV).is_some() {
        echo();
        return;
    }
    let mut c = config();
    pipe(&mut c);
    c.final_summary();
}
