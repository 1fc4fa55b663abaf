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
