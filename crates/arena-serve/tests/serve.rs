//! The real `arena-serve` binary: serve an image, replace it by rename, survive a bad image,
//! stop on SIGTERM with readers still reading.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use shmarena::service::ServiceError;
use shmarena::{Arena, ArenaOptions, Error};

fn tmp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("arena-serve-test-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn image(path: &Path, version: u64) {
    let mut b = ArenaOptions::new().create().unwrap();
    b.put("words", &vec![format!("v{version}"); 100]).unwrap();
    b.put_slice("version", &[version, version]).unwrap();
    b.seal().unwrap().save(path).unwrap();
}

fn wait_line(r: &mut impl BufRead, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "output ended before {prefix:?}"
        );
        if line.starts_with(prefix) {
            return line.trim_end().to_owned();
        }
    }
}

fn socket_listed(name: &str) -> bool {
    let needle = format!("/{name}");
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .any(|l| l.contains("@shmarena/") && l.trim_end().ends_with(&needle))
}

#[test]
fn serves_replaces_and_stops_cleanly() {
    let dir = tmp_dir("a");
    let path = dir.join("lex.arena");
    let name = format!("serve{}a", std::process::id());
    image(&path, 1);

    let mut daemon = Command::new(env!("CARGO_BIN_EXE_arena-serve"))
        .arg(format!("{name}={}", path.display()))
        .args(["--poll-ms", "20"])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(daemon.stdout.take().unwrap());
    let mut err = BufReader::new(daemon.stderr.take().unwrap());
    let first = wait_line(&mut out, "published");
    assert!(first.contains("generation 1"), "{first}");
    wait_line(&mut out, "ready");

    let mut sub = shmarena::subscribe(&name).unwrap();
    let old = sub.current().unwrap().slice::<u64>("version").unwrap();
    assert_eq!(&*old, &[1, 1]);
    let arena = Arena::connect(&name).unwrap();
    assert_eq!(arena.get::<Vec<String>>("words").unwrap()[99], "v1");

    // A new image renamed over the old file: the next generation.
    image(&path, 2);
    let line = wait_line(&mut out, "published");
    assert!(line.contains("generation 2"), "{line}");
    let now = sub.current().unwrap();
    assert_eq!(&*now.slice::<u64>("version").unwrap(), &[2, 2]);
    assert_eq!(now.get::<Vec<String>>("words").unwrap()[0], "v2");
    assert_eq!(sub.generation(), 2);
    assert_eq!(&*old, &[1, 1], "a view of generation 1 is unchanged");

    // A corrupt image: reported, generation 2 stays.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let tmp = dir.join("bad.tmp");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let complaint = wait_line(&mut err, "arena-serve: keeping generation 2");
    assert!(complaint.contains("lex.arena"), "{complaint}");
    assert_eq!(
        &*Arena::connect(&name)
            .unwrap()
            .slice::<u64>("version")
            .unwrap(),
        &[2, 2]
    );

    // SIGTERM: a clean exit; the name is gone, readers keep reading.
    let kill = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = daemon.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status}");
    assert!(rest.contains("stopped"), "{rest}");
    assert_eq!(
        &*sub.current().unwrap().slice::<u64>("version").unwrap(),
        &[2, 2]
    );
    assert_eq!(arena.get::<Vec<String>>("words").unwrap()[99], "v1");
    match Arena::connect(&name) {
        Err(Error::Service(ServiceError::NotPublished { .. })) => {}
        other => panic!("expected not published, got {other:?}"),
    }
    assert!(!socket_listed(&name));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_or_bad_image_fails_at_start() {
    let dir = tmp_dir("b");
    let out = Command::new(env!("CARGO_BIN_EXE_arena-serve"))
        .arg(format!("x=/{}", dir.join("missing.arena").display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.arena"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_arena-serve"))
        .arg("no-equals-sign")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts `arena-serve NAME=PATH` polling every 20 ms and waits for "ready"; the daemon is
/// killed and reaped when the guard drops.
struct Daemon {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    err: BufReader<std::process::ChildStderr>,
}

impl Daemon {
    fn start(name: &str, path: &Path) -> Daemon {
        Daemon::start_polling(name, path, 20)
    }

    /// With `--poll-ms POLL_MS`.
    fn start_polling(name: &str, path: &Path, poll_ms: u64) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_arena-serve"))
            .arg(format!("{name}={}", path.display()))
            .args(["--poll-ms", &poll_ms.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let err = BufReader::new(child.stderr.take().unwrap());
        wait_line(&mut out, "ready");
        Daemon { child, out, err }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `arena-inspect ARGS` (the library entry point the binary calls) and returns its exit
/// status and standard output.
fn inspect(args: &[&str]) -> (i32, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = arena_inspect::run_with_output(
        std::iter::once("arena-inspect").chain(args.iter().copied()),
        &mut out,
        &mut err,
    );
    let out = String::from_utf8(out).unwrap();
    assert!(
        code == 0,
        "arena-inspect {args:?}: {code}\n{out}\n{}",
        String::from_utf8_lossy(&err)
    );
    (code, out)
}

/// `arena-inspect list` shows the image `arena-serve` serves (a sealed copy of the file in a
/// memfd), with the daemon and a connected reader among its users.
#[test]
fn inspect_lists_the_served_arena() {
    let dir = tmp_dir("list");
    let path = dir.join("lex.arena");
    let name = format!("serve{}list", std::process::id());
    image(&path, 1);
    let daemon = Daemon::start(&name, &path);
    let reader = Arena::connect(&name).unwrap();
    let id = reader.id().to_string();

    let (_, json) = inspect(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("the served arena {id} is not listed:\n{json}"));
    assert_eq!(row["backing"], "memfd", "{row}");
    assert_eq!(row["state"], "sealed", "{row}");
    assert!(
        row["users"].as_u64().unwrap() >= 2,
        "daemon and reader: {row}"
    );
    let locator = row["arena"].as_str().unwrap().to_owned();
    let daemon_pid = daemon.child.id();
    let me = std::process::id();
    assert!(
        locator.starts_with(&format!("memfd:{daemon_pid}:"))
            || locator.starts_with(&format!("memfd:{me}:")),
        "{locator}"
    );
    // The table names it too, and `who` finds both processes.
    let (_, table) = inspect(&["list"]);
    assert!(table.contains(&locator), "{table}");
    let (_, who) = inspect(&["who", &locator, "--json"]);
    let who: serde_json::Value = serde_json::from_str(&who).unwrap();
    let pids: Vec<u64> = who
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["pid"].as_u64().unwrap())
        .collect();
    assert!(
        pids.contains(&u64::from(daemon_pid)) && pids.contains(&u64::from(me)),
        "{pids:?}"
    );
    drop(reader);
    drop(daemon);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes `bytes` beside `path` and renames it over `path`, as a publisher of images does.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A rejected image's log line names the cause, not only "cannot read file X": a truncated
/// image says how many bytes it needs, a damaged one which entry's checksum fails.
#[test]
fn a_rejected_image_is_logged_with_its_cause() {
    let dir = tmp_dir("cause");
    let path = dir.join("lex.arena");
    let name = format!("serve{}cause", std::process::id());
    image(&path, 1);
    let good = std::fs::read(&path).unwrap();
    std::fs::write(dir.join("good.arena"), &good).unwrap();
    let mut daemon = Daemon::start(&name, &path);

    replace(&path, &good[..good.len() / 2]);
    let line = wait_line(&mut daemon.err, "arena-serve: keeping generation 1");
    assert!(line.contains("lex.arena"), "{line}");
    assert!(
        line.contains(&format!("truncated: needs {} bytes", good.len())),
        "{line}"
    );

    // One byte of the "version" entry's payload flipped.
    let offset = Arena::load_file(dir.join("good.arena"))
        .unwrap()
        .layout()
        .entries
        .iter()
        .find(|e| e.name == "version")
        .unwrap()
        .offset as usize;
    let mut bad = good.clone();
    bad[offset] ^= 0xff;
    replace(&path, &bad);
    let line = wait_line(&mut daemon.err, "arena-serve: keeping generation 1");
    assert!(
        line.contains("entry \"version\": payload checksum mismatch"),
        "{line}"
    );
    // A good image after the bad ones: served as the next generation.
    replace(&path, &good);
    let line = wait_line(&mut daemon.out, "published");
    assert!(line.contains("generation 2"), "{line}");
    drop(daemon);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Kills `pid` unless told to stand down within `after`, so that a daemon that never prints the
/// line a test waits for ends the wait (its output closes) instead of hanging the test.
fn watchdog(pid: u32, after: std::time::Duration) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(after) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    tx
}

/// inotify: with the periodic check ten minutes apart, a rename over PATH is still published
/// at once, and so is an image written in place.
#[test]
fn inotify_notices_a_replaced_image() {
    let dir = tmp_dir("inotify");
    let path = dir.join("lex.arena");
    let name = format!("serve{}inotify", std::process::id());
    image(&path, 1);
    let mut daemon = Daemon::start_polling(&name, &path, 600_000);
    let stand_down = watchdog(daemon.child.id(), std::time::Duration::from_secs(30));

    let started = std::time::Instant::now();
    image(&path, 2); // Arena::save: written beside PATH, renamed over it
    let line = wait_line(&mut daemon.out, "published");
    assert!(line.contains("generation 2"), "{line}");
    let v = Arena::connect(&name)
        .unwrap()
        .slice::<u64>("version")
        .unwrap()[0];
    assert_eq!(v, 2);

    // Written in place (truncated and rewritten, then closed).
    image(&dir.join("v3.arena"), 3);
    std::fs::write(&path, std::fs::read(dir.join("v3.arena")).unwrap()).unwrap();
    let line = wait_line(&mut daemon.out, "published");
    assert!(line.contains("generation 3"), "{line}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "noticed by inotify, not by the ten-minute check"
    );
    let _ = stand_down.send(());
    drop(daemon);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The periodic check catches what inotify on PATH's directory cannot see: that directory is
/// reached through a symlink which is switched to another directory (how Kubernetes updates a
/// mounted ConfigMap), so the watched directory itself never changes.
#[test]
fn the_periodic_check_follows_a_switched_directory() {
    let dir = tmp_dir("switch");
    for (v, sub) in [(1, "v1"), (2, "v2")] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        image(&dir.join(sub).join("lex.arena"), v);
    }
    let current = dir.join("current");
    std::os::unix::fs::symlink("v1", &current).unwrap();
    let path = current.join("lex.arena");
    let mut daemon = Daemon::start_polling(&name_for("switch"), &path, 50);
    let stand_down = watchdog(daemon.child.id(), std::time::Duration::from_secs(30));
    // Switch `current` to v2 atomically: a new symlink renamed over it.
    let next = dir.join("next");
    std::os::unix::fs::symlink("v2", &next).unwrap();
    std::fs::rename(&next, &current).unwrap();
    let line = wait_line(&mut daemon.out, "published");
    assert!(line.contains("generation 2"), "{line}");
    let _ = stand_down.send(());
    drop(daemon);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn name_for(tag: &str) -> String {
    format!("serve{}{tag}", std::process::id())
}
