//! Faults with real processes and real signals.
//!
//! - A builder SIGKILLed at random points of every phase (reserving the segment, writing
//!   entries, sealing): no reader ever opens a half-built arena; a memfd build leaves nothing
//!   behind; a named segment left building is an orphan that `inspect::gc` (what
//!   `arena-inspect gc` runs) removes.
//! - The owner SIGKILLed after sealing: attached readers keep reading correct data; new
//!   attaches fail clearly or succeed, as documented per backing.
//!
//! The fast versions run in CI. `SHMARENA_LONG=1` runs the long ones (240 builder kills per
//! backing); `SHMARENA_FAULT_SEED=<n>` replays a run.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Scope;
use shmarena::format::FormatError;
use shmarena::format::{Header, HEADER_LEN, STATE_BUILDING};
use shmarena::inspect::{gc, GcOptions};
use shmarena::{Arena, ArenaOptions, Error, Locator};

type Lexicon = HashMap<String, u32>;

const ENTRIES: [&str; 6] = ["lexicon", "weights", "blob", "words", "ids", "empty"];
/// Reserved up front, so the reservation itself takes measurable time and memory.
const CAPACITY: u64 = 32 << 20;

fn long() -> bool {
    std::env::var("SHMARENA_LONG").is_ok_and(|v| v == "1")
}

fn lexicon() -> Lexicon {
    (0..20_000u32).map(|i| (format!("w{i}"), i * 3)).collect()
}

fn blob_byte(i: usize) -> u8 {
    (i.wrapping_mul(31) >> 3) as u8
}

/// Builds the test arena entry by entry, calling `mark` before each phase.
fn build(builder: ArenaOptions, mut mark: impl FnMut(&str)) -> Arena {
    let capacity = std::env::var("SHMARENA_FAULT_CAPACITY")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CAPACITY);
    mark("create");
    let mut b = builder.capacity(capacity).create().unwrap();
    mark("put lexicon");
    b.put("lexicon", &lexicon()).unwrap();
    mark("put weights");
    b.put_slice_with::<f64>("weights", 1 << 18, |w| {
        for (i, x) in w.iter_mut().enumerate() {
            *x = i as f64;
        }
    })
    .unwrap();
    mark("put blob");
    let blob: Vec<u8> = (0..1 << 20).map(blob_byte).collect();
    b.put_bytes("blob", &blob).unwrap();
    mark("put words");
    let words: Vec<String> = (0..5000).map(|i| format!("word-{i}")).collect();
    b.put("words", &words).unwrap();
    mark("put ids");
    b.put_slice("ids", &(0..200_000u32).collect::<Vec<_>>())
        .unwrap();
    mark("put empty");
    b.put_bytes("empty", b"").unwrap();
    mark("seal");
    let arena = b.seal().unwrap();
    mark("sealed");
    arena
}

/// Checks that `arena` is the whole arena `build` makes, every payload intact.
fn check_complete(arena: &Arena) {
    let names: Vec<&str> = arena.layout().names().collect();
    assert_eq!(names, ENTRIES, "{}", arena.locator());
    arena.verify().unwrap();
    let lex = arena.get::<Lexicon>("lexicon").unwrap();
    assert_eq!(lex.len(), 20_000);
    assert_eq!(lex.get("w12345").map(|v| v.to_native()), Some(37035));
    let w = arena.slice::<f64>("weights").unwrap();
    assert_eq!(
        (w.len(), w[1000], w[(1 << 18) - 1]),
        (1 << 18, 1000.0, 262143.0)
    );
    let blob = arena.bytes("blob").unwrap();
    assert!(blob
        .iter()
        .enumerate()
        .step_by(4099)
        .all(|(i, b)| *b == blob_byte(i)));
    let words = arena.get::<Vec<String>>("words").unwrap();
    assert_eq!(words[4321].as_str(), "word-4321");
    assert_eq!(arena.slice::<u32>("ids").unwrap()[199_999], 199_999);
    assert!(arena.bytes("empty").unwrap().is_empty());
}

/// Entry point of the spawned builder: builds in the backing the parent names and announces
/// each phase on stdout (`@phase <name>`), then waits to be killed.
#[test]
#[ignore = "entry point for spawned builder children"]
fn fault_builder_child() {
    let Ok(target) = std::env::var("SHMARENA_FAULT_TARGET") else {
        return;
    };
    let builder = match target.split_once(':') {
        Some(("shm", name)) => ArenaOptions::new().named(name),
        _ => ArenaOptions::new(),
    };
    let arena = build(builder, |phase| println!("@phase {phase}"));
    if let Locator::Memfd { pid, fd } = arena.locator() {
        println!("@memfd {pid} {fd}");
    }
    println!("@ready");
    std::thread::sleep(Duration::from_secs(120));
    println!("@timeout");
}

fn spawn_builder(target: &str) -> (Child, BufReader<std::process::ChildStdout>) {
    spawn_builder_with(target, CAPACITY)
}

fn spawn_builder_with(
    target: &str,
    capacity: u64,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fault_builder_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SHMARENA_FAULT_TARGET", target)
        .env("SHMARENA_FAULT_CAPACITY", capacity.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// Reads lines until one contains `want` (returned from there on), or the child's stdout
/// closes.
fn read_until(out: &mut BufReader<std::process::ChildStdout>, want: &str) -> Option<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).ok()? == 0 {
            return None;
        }
        // libtest may print "test <name> ... " on the same line before the marker.
        if let Some(at) = line.find(want) {
            return Some(line[at..].trim_end().to_owned());
        }
    }
}

/// The last phase a killed child announced, given the last one already read.
fn last_phase(out: &mut BufReader<std::process::ChildStdout>, read: Option<&str>) -> String {
    let mut last = read
        .and_then(|l| l.strip_prefix("@phase "))
        .unwrap_or("spawn")
        .to_owned();
    let mut line = String::new();
    while out.read_line(&mut line).is_ok_and(|n| n > 0) {
        if let Some(at) = line.find("@phase ") {
            last = line[at + 7..].trim_end().to_owned();
        }
        line.clear();
    }
    last
}

/// A small deterministic generator (xorshift64*), seeded from the clock unless
/// `SHMARENA_FAULT_SEED` is set; the seed is printed so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn from_env(what: &str) -> Rng {
        let seed = std::env::var("SHMARENA_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{what}: SHMARENA_FAULT_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Where to aim one kill: after the child announces `phase`, wait a random time up to
/// `spread` and kill. `phase == None` kills at a random time after spawn.
fn aim(trial: usize, rng: &mut Rng) -> (Option<&'static str>, Duration) {
    const AIMS: [(Option<&str>, u64); 9] = [
        (None, 250_000),
        (Some("@phase create"), 20_000),
        (Some("@phase put lexicon"), 40_000),
        (Some("@phase put weights"), 8_000),
        (Some("@phase put blob"), 4_000),
        (Some("@phase put words"), 8_000),
        (Some("@phase put ids"), 4_000),
        (Some("@phase seal"), 3_000),
        (Some("@phase seal"), 300),
    ];
    let (phase, spread_us) = AIMS[trial % AIMS.len()];
    (phase, Duration::from_micros(rng.below(spread_us)))
}

/// What a reader got from the segment of a killed (or live) builder.
#[derive(Debug, Default)]
struct Outcomes {
    counts: std::collections::BTreeMap<String, usize>,
}

impl Outcomes {
    fn add(&mut self, what: impl Into<String>) {
        *self.counts.entry(what.into()).or_default() += 1;
    }
}

/// Opens what a builder left (or is still writing) and checks the one promise: the result is
/// a typed refusal, or the complete, intact arena.
fn reader_outcome(opened: shmarena::Result<Arena>) -> &'static str {
    match opened {
        Ok(arena) => {
            check_complete(&arena);
            "sealed and complete"
        }
        Err(Error::NotFound { .. }) => "not found",
        Err(Error::Format {
            source: FormatError::StillBuilding,
            ..
        }) => "still building",
        // Killed after creating the segment but before its header was written.
        Err(Error::Format {
            source: FormatError::BadMagic,
            ..
        }) => "no header yet",
        // A reader racing the 128-byte header write of `seal` can see it torn.
        Err(Error::Format {
            source: FormatError::Corrupted { detail },
            ..
        }) if detail.contains("header checksum") => "torn header",
        // A memfd whose header says sealed, caught before its builder added the seals.
        Err(Error::NotSealed { .. }) => "not sealed yet",
        Err(e) => panic!("a reader got an unexpected error: {e:?}"),
    }
}

/// A named segment a killed builder left is an orphan: its creator is dead, and if it never
/// sealed its header says "building" (or it has no header yet). `inspect::gc` (what
/// `arena-inspect gc` runs) removes every orphan that has a header; one killed before its
/// header was written carries no owner, so gc leaves it (as "not an arena") and the test
/// removes it.
fn collect_orphan(name: &str, pid: u32, last: &str, outcome: &str) {
    let path = format!("/dev/shm/{name}");
    let bytes = std::fs::read(&path).unwrap();
    let headerless = match Header::parse(&bytes) {
        Ok(h) => {
            assert_eq!(h.creator_pid, pid, "{name}");
            assert!(
                !shmarena::inspect::process_alive(h.creator_pid, h.creator_start),
                "{name}: its creator looks alive"
            );
            if outcome == "still building" {
                assert_eq!(h.state, STATE_BUILDING);
            }
            false
        }
        Err(e) => {
            assert!(
                bytes.len() < HEADER_LEN || bytes[..HEADER_LEN].iter().all(|b| *b == 0),
                "{name} (killed in {last}): {e}"
            );
            true
        }
    };
    let report = gc(&GcOptions::new().prefix(name)).unwrap();
    let removed: Vec<&str> = report.removed.iter().map(|r| r.name.as_str()).collect();
    let kept: Vec<(&str, &str)> = report
        .skipped
        .iter()
        .map(|s| (s.name.as_str(), s.reason.code()))
        .collect();
    if headerless {
        assert_eq!(kept, [(name, "not-an-arena")], "killed in {last}");
        std::fs::remove_file(&path).unwrap();
    } else {
        assert_eq!(removed, [name], "killed in {last}, gc kept {kept:?}");
    }
}

/// The kill tests and the owner test spawn builders that reserve 32 MiB each; one at a time,
/// so the Shmem check of the memfd test sees only its own children.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn kill_builder_trials(trials: usize, named: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scope = Scope::new();
    let mut rng = Rng::from_env(if named { "named" } else { "memfd" });
    let mut phases = Outcomes::default();
    let mut during = Outcomes::default();
    let mut after = Outcomes::default();
    let mut orphans = 0;
    let shmem_before = shmem_kib();
    for trial in 0..trials {
        // Fixed width, so no name is a prefix of another (gc selects by prefix).
        let name = scope.name(&format!("k{trial:04}"));
        let target = if named {
            format!("shm:{name}")
        } else {
            "memfd".to_owned()
        };
        let (mut child, mut out) = spawn_builder(&target);
        let pid = child.id();
        let (phase, delay) = aim(trial, &mut rng);
        let reached = phase.and_then(|p| read_until(&mut out, p));
        // A reader that tries while the builder works.
        if named {
            during.add(reader_outcome(Arena::load_named(&name)));
        } else if phase.is_some() {
            // The memfd exists once `create` returned; its descriptor number is not announced
            // until sealed, so try the usual first free ones.
            for fd in 3..8 {
                match Arena::open_memfd(pid, fd) {
                    Err(
                        Error::NotFound { .. }
                        | Error::Format {
                            source: FormatError::BadMagic,
                            ..
                        }
                        | Error::Io { .. },
                    ) => {}
                    other => during.add(reader_outcome(other)),
                }
            }
        }
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        let last = last_phase(&mut out, reached.as_deref());
        phases.add(last.clone());
        if named {
            let outcome = reader_outcome(Arena::load_named(&name));
            after.add(outcome);
            if outcome != "not found" {
                collect_orphan(&name, pid, &last, outcome);
                orphans += 1;
            }
        }
    }
    let shmem_after = shmem_kib();
    eprintln!(
        "{} builder kills ({}): last phase reached {:?}; reader during the build {:?}; \
         reader after the kill {:?}; orphans {} (all collected); Shmem {} -> {} KiB",
        trials,
        if named { "named" } else { "memfd" },
        phases.counts,
        during.counts,
        after.counts,
        orphans,
        shmem_before,
        shmem_after
    );
    if !named {
        // Each child reserved 32 MiB; a leaked memfd would hold it. Other processes on the
        // machine move Shmem too, so only a clear leak fails.
        assert!(
            shmem_after < shmem_before + (CAPACITY / 1024) * 3 / 4,
            "Shmem grew from {shmem_before} to {shmem_after} KiB"
        );
    }
    if long() {
        for p in [
            "create",
            "put lexicon",
            "put weights",
            "put blob",
            "put words",
            "put ids",
            "seal",
        ] {
            assert!(phases.counts.contains_key(p), "no kill in phase {p}");
        }
    }
    scope.finish();
}

/// `Shmem` from /proc/meminfo, in KiB: memory held by tmpfs files and memfds.
fn shmem_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Shmem:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_killed_named_builder_leaves_only_orphans_that_gc_removes() {
    kill_builder_trials(if long() { 240 } else { 18 }, true);
}

#[test]
fn a_killed_memfd_builder_leaves_nothing() {
    kill_builder_trials(if long() { 240 } else { 18 }, false);
}

#[test]
fn the_owner_killed_after_sealing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scope = Scope::new();
    let name = scope.name("owner");
    for target in ["memfd".to_owned(), format!("shm:{name}")] {
        let (mut child, mut out) = spawn_builder(&target);
        let pid = child.id();
        let mut memfd = None;
        loop {
            let line = read_until(&mut out, "@").expect("the builder sealed");
            if line.starts_with("@memfd") {
                memfd = Some(line);
            } else if line.starts_with("@ready") {
                break;
            }
        }
        // Attach as an unrelated reader would.
        let locator = match &memfd {
            Some(line) => {
                let mut it = line.split_whitespace().skip(1);
                let owner: u32 = it.next().unwrap().parse().unwrap();
                assert_eq!(owner, pid);
                Locator::Memfd {
                    pid,
                    fd: it.next().unwrap().parse().unwrap(),
                }
            }
            None => Locator::Shm { name: name.clone() },
        };
        let arena = match &locator {
            // Mapped in place, so that gc below sees the segment in use.
            // SAFETY: the only writer is the builder, which sealed the segment before
            // announcing it and is killed below; nothing writes to it while mapped.
            Locator::Shm { name } => unsafe { Arena::open_named(name) }.unwrap(),
            _ => Arena::open(&locator).unwrap(),
        };
        let lex = arena.get::<Lexicon>("lexicon").unwrap();
        let ids = arena.slice::<u32>("ids").unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        // The reader keeps reading correct data from its own mapping.
        assert_eq!(lex.get("w777").map(|v| v.to_native()), Some(2331));
        assert_eq!(ids[123_456], 123_456);
        check_complete(&arena);
        match &locator {
            Locator::Memfd { .. } => {
                // The owner's descriptor is gone with it: a new attach there is a clear error...
                let e = Arena::open(&locator).unwrap_err();
                assert!(matches!(e, Error::NotFound { .. }), "{e}");
                // ... but the memfd lives on in the reader, which can hand it on through its
                // own descriptor.
                use std::os::fd::{AsFd, AsRawFd};
                let mine = Locator::Memfd {
                    pid: std::process::id(),
                    fd: arena.as_fd().as_raw_fd(),
                };
                let again = Arena::open(&mine).unwrap();
                assert_eq!(again.id(), arena.id());
                check_complete(&again);
            }
            _ => {
                // A named segment outlives its killed owner until someone unlinks it.
                let again = Arena::open(&locator).unwrap();
                check_complete(&again);
                drop(again);
                // While mapped it is in use, so gc keeps it even though its owner is dead.
                let report = gc(&GcOptions::new().prefix(&scope.prefix)).unwrap();
                assert!(report.removed.is_empty(), "{report:?}");
                assert_eq!(report.skipped[0].reason.code(), "in-use", "{report:?}");
                // Unlinked: new attaches fail, mapped readers keep reading.
                std::fs::remove_file(format!("/dev/shm/{name}")).unwrap();
                let e = Arena::open(&locator).unwrap_err();
                assert!(matches!(e, Error::NotFound { .. }), "{e}");
                assert_eq!(lex.get("w1").map(|v| v.to_native()), Some(3));
                check_complete(&arena);
            }
        }
    }
    scope.finish();
}

/// What the named backing cannot promise: the same user can truncate a sealed segment (mode
/// 0400 only stops accidents; the owner can chmod it back), and a reader that then touches a
/// page past the new end gets SIGBUS. The library cannot prevent it; docs/RELIABILITY.md and
/// docs/DESIGN.md say so, and point at sealed memfds, which refuse the truncate
/// (processes.rs, `a_sealed_memfd_refuses_truncate_and_write`).
#[test]
fn a_named_segment_truncated_under_a_reader_faults_that_reader() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scope = Scope::new();
    let name = scope.name("trunc");
    let mut b = ArenaOptions::new().named(&name).create().unwrap();
    b.put_slice("ids", &(0..1_000_000u32).collect::<Vec<_>>())
        .unwrap();
    let owner = b.seal().unwrap();
    // The safe way: a copy in a sealed memfd, which the truncation below cannot touch.
    let copy = Arena::load_named(&name).unwrap();
    // SAFETY: this test breaks the promise on purpose (it truncates the segment while mapped)
    // to show what it guards against; after the truncation, the mapping is touched only by the
    // volatile read in a forked child, which dies of it.
    let reader = unsafe { Arena::open_named(&name) }.unwrap();
    let ids = reader.slice::<u32>("ids").unwrap();
    let last = &ids[999_999] as *const u32;
    let path = format!("/dev/shm/{name}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let status = common::fork_and_wait(|| {
        // SAFETY: deliberately touches a page the truncation removed, to show the fault; the
        // child dies with SIGBUS before the read returns.
        let v = unsafe { std::ptr::read_volatile(last) };
        i32::from(v != 999_999)
    });
    assert_eq!(common::killed_by(status), Some(libc::SIGBUS), "{status:#x}");
    // The copy is intact.
    assert_eq!(copy.slice::<u32>("ids").unwrap()[999_999], 999_999);
    // New opens see the damage as a typed error.
    let e = Arena::load_named(&name).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Format {
                source: FormatError::Truncated { .. },
                ..
            }
        ),
        "{e}"
    );
    drop((ids, reader, owner));
    scope.finish();
}

/// Regression test: the builder writes its "building" header before it reserves the capacity,
/// so a builder killed while reserving leaves an orphan that names its dead creator and that gc
/// collects. Before the fix the segment had no header during the whole reservation (empty, or
/// zeros), and gc kept it forever as "not an arena" (9 of 240 kills in a long run). The child
/// reserves 256 MiB, which takes long enough to look at the segment in the middle of it.
#[test]
fn a_builder_killed_while_reserving_leaves_a_collectable_orphan() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scope = Scope::new();
    let mut caught = 0;
    for attempt in 0..20 {
        let name = scope.name(&format!("r{attempt:02}"));
        let (mut child, mut out) = spawn_builder_with(&format!("shm:{name}"), 256 << 20);
        read_until(&mut out, "@phase create").unwrap();
        let path = format!("/dev/shm/{name}");
        // Wait for the segment to have content, then look at it before the reservation ends.
        let mut seen = None;
        for _ in 0..2000 {
            // Empty: created, header not yet written (a window of one system call); wait.
            if let Some(bytes) = std::fs::read(&path).ok().filter(|b| !b.is_empty()) {
                seen = Some(bytes.len());
                // Whenever the segment has content, it starts with the building header.
                let h = Header::parse(&bytes).expect("a building header");
                assert_eq!(h.state, STATE_BUILDING);
                assert_eq!(h.creator_pid, child.id());
                if bytes.len() < (256 << 20) {
                    caught += 1;
                }
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        match std::fs::read(&path) {
            Ok(bytes) => {
                assert!(
                    bytes.len() >= HEADER_LEN,
                    "seen {seen:?}, left {} bytes",
                    bytes.len()
                );
                let report = gc(&GcOptions::new().prefix(&name)).unwrap();
                let removed: Vec<&str> = report.removed.iter().map(|r| r.name.as_str()).collect();
                assert_eq!(removed, [name.as_str()], "{report:?}");
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        }
        if caught >= 3 {
            break;
        }
    }
    eprintln!("caught {caught} builders in the middle of their reservation");
    assert!(
        caught > 0,
        "never saw a segment in the middle of its reservation"
    );
    scope.finish();
}
