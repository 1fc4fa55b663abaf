//! The gap before `F_SEAL_FUTURE_WRITE`: another process of the user stops the writer (SIGSTOP)
//! in the few system calls between `memfd_create` and the seal, `chmod`s the building memfd
//! through `/proc/PID/fd/N`, maps it writable, and after `put` has validated an entry rewrites
//! that entry's length and unmaps before `seal`. The writer's trust row must not survive: `seal`
//! checks every row again on the sealed bytes, so the changed entry is validated on read and is
//! a typed error. Before that check the reader trusted a `Vec` of 2^28 elements (SIGSEGV).

use std::os::fd::AsFd;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use shmarena::ArenaOptions;

/// The entry the attacker looks for in the memfd: four of these, then the archived `Vec`'s
/// root (a 4-byte relative pointer and a 4-byte length).
const MARK: u64 = 0xA1A2_A3A4_A5A6_A7A8;

/// The attacker process. Dropping it asks it to stop through a file and waits for it: it only
/// ever leaves this process running (it sends SIGCONT after each SIGSTOP before it looks at the
/// file), where a kill could land between the two and leave this process stopped for good.
struct Attacker {
    child: Child,
    stop_file: std::path::PathBuf,
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop_file, b"stop");
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stop_file);
    }
}

#[test]
fn a_mapping_made_before_the_write_seal_forges_no_trust_row() {
    let stop_file =
        std::env::temp_dir().join(format!("shmarena-writer-race-{}.stop", std::process::id()));
    let attacker = Attacker {
        child: Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "attacker_child", "--ignored", "--nocapture"])
            .env("WRITER_RACE_PID", std::process::id().to_string())
            .env("WRITER_RACE_STOP", &stop_file)
            .spawn()
            .unwrap(),
        stop_file,
    };
    let marker = vec![MARK; 4];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut hits = 0;
    let mut rounds = 0;
    while Instant::now() < deadline && hits == 0 {
        rounds += 1;
        let mut b = ArenaOptions::new().create().unwrap();
        b.put("v", &marker).unwrap();
        // The attacker rewrites about a millisecond after it mapped; give it the time.
        std::thread::sleep(Duration::from_millis(20));
        let arena = b.seal().unwrap();
        // Read the entry from a second arena over the same memfd, which validates: did the bytes
        // change after `put`?
        let fd = arena.as_fd().try_clone_to_owned().unwrap();
        let fresh = shmarena::Arena::open_fd(fd).unwrap();
        if fresh.get::<Vec<u64>>("v").is_err() {
            hits += 1;
            assert!(
                !arena.trusts::<Vec<u64>>("v"),
                "round {rounds}: the writer kept a trust row for an entry changed after put"
            );
            let got = arena.get::<Vec<u64>>("v").map(|v| v.len());
            assert!(
                got.is_err(),
                "round {rounds}: the changed entry read without validation: {got:?}"
            );
        } else {
            assert_eq!(&*arena.get::<Vec<u64>>("v").unwrap(), &marker[..]);
        }
    }
    drop(attacker);
    assert!(
        hits > 0,
        "the attacker never changed an entry in {rounds} rounds: the test proved nothing"
    );
}

/// The attacker: run as a child by the test above (a separate process of the same user).
#[test]
#[ignore = "run by a_mapping_made_before_the_write_seal_forges_no_trust_row"]
fn attacker_child() {
    use rustix::fs::SealFlags;
    use rustix::process::{kill_process, Pid, Signal};
    use std::os::unix::fs::PermissionsExt;

    let pid: i32 = std::env::var("WRITER_RACE_PID").unwrap().parse().unwrap();
    let stop_file = std::path::PathBuf::from(std::env::var_os("WRITER_RACE_STOP").unwrap());
    let target = Pid::from_raw(pid).unwrap();
    let stopped = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().unwrap_or("").split_whitespace().next() == Some("T"))
            .unwrap_or(true)
    };
    let mut seen = std::collections::HashSet::new();
    let mut maps: Vec<(memmap2::MmapMut, std::fs::File, Instant)> = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(70) && !stop_file.exists() {
        if kill_process(target, Signal::STOP).is_err() {
            return;
        }
        while !stopped() {}
        // Whatever happens while the writer is stopped, it is continued before the next look at
        // the stop file.
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut found = Vec::new();
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                return found;
            };
            for e in dir.flatten() {
                let path = e.path();
                let Ok(link) = std::fs::read_link(&path) else {
                    continue;
                };
                if !link
                    .to_string_lossy()
                    .starts_with("/memfd:shmarena (deleted)")
                {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !seen.insert(std::os::unix::fs::MetadataExt::ino(&meta)) {
                    continue;
                }
                // The owner may chmod the memfd back, whatever mode the writer gave it.
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
                let Ok(file) = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                else {
                    continue;
                };
                match rustix::fs::fcntl_get_seals(&file) {
                    Ok(seals) if !seals.contains(SealFlags::FUTURE_WRITE) => {}
                    _ => continue,
                }
                // SAFETY: an attacker's mapping of a file another process writes; only bytes
                // below the file's size at each access are touched (below), and the memfd is
                // sealed against shrinking, so they stay backed.
                if let Ok(map) = unsafe { memmap2::MmapOptions::new().len(1 << 20).map_mut(&file) }
                {
                    found.push((map, file, Instant::now()));
                }
            }
            found
        }));
        let _ = kill_process(target, Signal::CONT);
        maps.extend(found.unwrap_or_default());
        // About a millisecond after mapping (the writer has `put` by then): rewrite the `Vec`'s
        // length, then let the mapping go before `seal`.
        let mut i = 0;
        while i < maps.len() {
            if maps[i].2.elapsed() < Duration::from_millis(1) {
                i += 1;
                continue;
            }
            let (mut map, file, _) = maps.swap_remove(i);
            let len = (file.metadata().map(|m| m.len()).unwrap_or(0) as usize).min(map.len());
            let needle: Vec<u8> = MARK.to_le_bytes().repeat(4);
            if let Some(at) = map[..len].windows(32).position(|w| w == needle.as_slice()) {
                let root = at + 32;
                if root + 8 <= len {
                    map[root + 4..root + 8].copy_from_slice(&0x1000_0000u32.to_le_bytes());
                    println!("patched an entry after put");
                }
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
