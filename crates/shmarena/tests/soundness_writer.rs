//! Soundness of the writer (issue 20, paths 1 to 3): the bytes under a trust row cannot change
//! between `put` and `seal`, and nothing safe code does to the building memfd, the named segment
//! or the temporary file kills the writer. Each attack runs in a fresh child process (a signal
//! there fails the test instead of killing the harness) and uses only std's safe calls, as any
//! process of the user could. Also: zero-sized element types, and a load that must return the
//! file it was given even when an arena of the same id is attached.

mod common;

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use common::{run_isolated, Scope};
use shmarena::format::{Header, HEADER_LEN};
use shmarena::{Arena, ArenaOptions, Error, Locator};

/// Set in the child processes that run the attacks.
const CHILD: &str = "SHMARENA_TEST_WRITER_ATTACK";

/// The memfds this (single-threaded) child holds that a builder created, as
/// `/proc/self/fd/N` paths, found the way an attacker finds them: by `readlink`.
fn building_memfds() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        // `shmarena`, or `shmarena-image` for a named segment's or file's private copy.
        if target.to_string_lossy().starts_with("/memfd:shmarena") {
            out.push(e.path());
        }
    }
    out
}

/// What an attack does to a file that the builder may be reading or writing.
#[derive(Clone, Copy)]
enum Attack {
    /// Overwrites 4 KiB after the header with 0x40: a `Vec`'s relative pointer and length
    /// become 0x40404040.
    Rewrite,
    /// Truncates the file to nothing.
    Truncate,
}

/// Attacks `path` through ordinary safe `std` calls. Returns what happened, for the log; the
/// test judges by what the writer and the arena do afterwards.
fn attack(path: &Path, how: Attack) -> String {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return format!("{}: open for writing refused: {e}", path.display()),
    };
    let done = match how {
        Attack::Rewrite => f.write_all_at(&[0x40u8; 4096], HEADER_LEN as u64),
        Attack::Truncate => f.set_len(0),
    };
    format!("{}: {:?}", path.display(), done.map_err(|e| e.to_string()))
}

/// The target of one attack, and the files to attack: the building memfd (found the way an
/// attacker finds it, by `readlink` of `/proc/self/fd/N`), and for a named segment or file
/// target the segment or the temporary file as well.
fn attack_entry(target: &str, how: Attack) {
    let scope = Scope::new();
    let name = scope.name("attack");
    let path = scope.path("f.arena");
    let options = match target {
        "memfd" => ArenaOptions::new(),
        "named" => ArenaOptions::new().named(&name),
        _ => ArenaOptions::new().file(&path),
    };
    let mut b = options.create().unwrap();
    b.put("v", &vec![1u8, 2, 3]).unwrap();
    let mut victims = building_memfds();
    if target == "memfd" {
        assert!(!victims.is_empty(), "no building memfd found");
    }
    match target {
        "named" => victims.push(Path::new("/dev/shm").join(&name)),
        "file" => {
            let temps: Vec<PathBuf> = std::fs::read_dir(&scope.dir)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            assert_eq!(temps.len(), 1, "one temporary file: {temps:?}");
            let file_name = temps[0].file_name().unwrap().to_string_lossy();
            assert!(file_name.starts_with(".f.arena.building-"), "{file_name}");
            victims.extend(temps);
        }
        _ => {}
    }
    for v in &victims {
        println!("{}", attack(v, how));
    }
    // More entries still go in (no SIGBUS), one within what the builder had reserved already
    // and one past it; sealing works, and the arena reads exactly what was put, both through
    // the writer's trust row and after a full validation.
    b.put_slice("small", &[5u64; 100]).unwrap();
    let big: Vec<u64> = (0..300_000).collect();
    b.put_slice("after", &big).unwrap();
    b.put("words", &vec!["after".to_string(); 1000]).unwrap();
    let arena = b.seal().unwrap();
    assert!(arena.trusts::<Vec<u8>>("v"));
    assert_eq!(arena.get::<Vec<u8>>("v").unwrap().as_slice(), &[1, 2, 3]);
    assert_eq!(&*arena.slice::<u64>("small").unwrap(), &[5; 100]);
    assert_eq!(&*arena.slice::<u64>("after").unwrap(), &big[..]);
    assert_eq!(arena.get::<Vec<String>>("words").unwrap().len(), 1000);
    arena.verify().unwrap();
    // Other readers read the same bytes: the memfd through /proc, and a named segment or file
    // holds what was sealed, whatever was written to it during the build.
    let again = match target {
        "memfd" => Arena::open(arena.locator()).unwrap(),
        "named" => Arena::load_named(&name).unwrap(),
        _ => Arena::load_file(&path).unwrap(),
    };
    assert_eq!(again.get::<Vec<u8>>("v").unwrap().as_slice(), &[1, 2, 3]);
    assert_eq!(again.as_bytes(), arena.as_bytes());
    drop((again, arena));
    if target == "file" {
        std::fs::remove_file(&path).unwrap();
    }
    scope.finish();
}

/// Runs one attack in a fresh child (`SHMARENA_TEST_WRITER_ATTACK=TARGET:HOW`).
#[test]
#[ignore = "entry point for a child process"]
fn attack_child() {
    let Ok(what) = std::env::var(CHILD) else {
        return;
    };
    let (target, how) = what.split_once(':').unwrap();
    let how = match how {
        "rewrite" => Attack::Rewrite,
        _ => Attack::Truncate,
    };
    attack_entry(target, how);
    println!("OK:attack_child");
}

fn run_attack(target: &str, how: &str) {
    run_isolated("attack_child", &[(CHILD, format!("{target}:{how}"))]);
}

/// Path 1: rewriting the building memfd through `/proc/self/fd/N` before `seal` made the
/// writer's trust row vouch for changed bytes (a 1 GiB `Vec` length, SIGSEGV).
#[test]
fn the_building_memfd_cannot_be_rewritten() {
    run_attack("memfd", "rewrite");
}

/// Path 3: truncating the building memfd killed the next `put` with SIGBUS.
#[test]
fn the_building_memfd_cannot_be_truncated() {
    run_attack("memfd", "truncate");
}

/// Path 2: rewriting `/dev/shm/NAME` while the writer builds.
#[test]
fn a_named_segment_rewritten_while_building_changes_nothing() {
    run_attack("named", "rewrite");
}

/// Path 3 on a named segment: truncating it while the writer builds.
#[test]
fn a_named_segment_truncated_while_building_changes_nothing() {
    run_attack("named", "truncate");
}

/// Path 2 on a file target: rewriting the temporary file beside the target path.
#[test]
fn a_temporary_file_rewritten_while_building_changes_nothing() {
    run_attack("file", "rewrite");
}

/// Path 3 on a file target: truncating the temporary file.
#[test]
fn a_temporary_file_truncated_while_building_changes_nothing() {
    run_attack("file", "truncate");
}

/// A zero-sized element type has no bytes to hold its count: refused with a typed error, not
/// recorded as an entry that reads back empty.
#[test]
fn zero_sized_elements_are_refused() {
    let mut b = ArenaOptions::new().create().unwrap();
    let many = vec![(); usize::MAX];
    let e = b.put_slice("units", &many).unwrap_err();
    assert!(matches!(e, Error::InvalidArray { .. }), "{e}");
    assert!(e.to_string().contains("units"), "{e}");
    let e = b
        .put_slice::<[u32; 0]>("empty arrays", &[[], []])
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArray { .. }), "{e}");
    let e = b.put_slice_with::<()>("units2", 7, |_| {}).unwrap_err();
    assert!(matches!(e, Error::InvalidArray { .. }), "{e}");
    let e = b.put_array("grid", &[(); 6], &[2, 3]).unwrap_err();
    assert!(matches!(e, Error::InvalidArray { .. }), "{e}");
    // The builder is as it was.
    assert_eq!(b.entry_count(), 0);
    b.put_slice("ok", &[1u8]).unwrap();
    assert_eq!(b.seal().unwrap().entry_count(), 1);
}

/// Two image files with one arena id but different bytes (a saved image, and another arena
/// whose header was given that id): a load, and an attach by locator, return the bytes of the
/// file named, never the arena of that id this process already holds.
#[test]
fn a_load_returns_the_file_it_was_given() {
    let scope = Scope::new();
    let first = scope.path("first.arena");
    let second = scope.path("second.arena");
    let mut b = ArenaOptions::new().create().unwrap();
    b.put_slice("xs", &[1u32, 2, 3]).unwrap();
    let a = b.seal().unwrap();
    a.save(&first).unwrap();
    let mut b = ArenaOptions::new().create().unwrap();
    b.put_slice("xs", &[7u32, 8, 9]).unwrap();
    let other = b.seal().unwrap();
    let mut bytes = other.as_bytes().to_vec();
    let mut header = Header::parse(&bytes).unwrap();
    header.arena_id = a.id().to_bytes();
    bytes[..HEADER_LEN].copy_from_slice(&header.encode());
    std::fs::write(&second, &bytes).unwrap();
    // `a` is attached here: a handle registers it in the attach cache.
    let h = a.slice_handle::<u32>("xs").unwrap();
    assert_eq!(&*h.get().unwrap(), &[1, 2, 3]);

    let loaded = Arena::load_file(&second).unwrap();
    assert_eq!(loaded.id(), a.id());
    assert_eq!(&*loaded.slice::<u32>("xs").unwrap(), &[7, 8, 9]);
    let attached = shmarena::attach(
        a.id(),
        &Locator::File {
            path: second.clone(),
        },
    )
    .unwrap();
    assert_eq!(&*attached.slice::<u32>("xs").unwrap(), &[7, 8, 9]);
    let attached = shmarena::attach(
        a.id(),
        &Locator::File {
            path: first.clone(),
        },
    )
    .unwrap();
    assert_eq!(&*attached.slice::<u32>("xs").unwrap(), &[1, 2, 3]);
    // The handle still resolves to the arena it was made from.
    assert_eq!(&*h.get().unwrap(), &[1, 2, 3]);
    shmarena::detach(a.id());
    std::fs::remove_file(&first).unwrap();
    std::fs::remove_file(&second).unwrap();
    scope.finish();
}

/// Opens never open a FIFO (or a device) before the regular-file check: a writer blocked in
/// `open` of a FIFO stays blocked through a load of that FIFO, which an open for reading (even
/// a non-blocking one) would have let through.
#[test]
fn a_fifo_is_refused_without_being_opened() {
    let scope = Scope::new();
    let name = scope.name("fifo");
    let in_shm = Path::new("/dev/shm").join(&name);
    let in_dir = scope.path("fifo.arena");
    type Load = fn(&Path, &str) -> shmarena::Result<Arena>;
    let loads: [(&Path, Load); 2] = [
        (&in_shm, |_, name| Arena::load_named(name)),
        (&in_dir, |path, _| Arena::load_file(path)),
    ];
    for (fifo, load) in loads {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.to_owned();
        let writer = std::thread::spawn(move || {
            // Blocks until someone opens the FIFO for reading.
            let f = std::fs::OpenOptions::new().write(true).open(&path);
            tx.send(()).unwrap();
            f
        });
        let e = load(fifo, &name).unwrap_err();
        assert!(e.format_error().is_some(), "{e}");
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the load opened the FIFO: its writer got through"
        );
        // Let the writer through, and clean up.
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
            .unwrap();
        rx.recv().unwrap();
        writer.join().unwrap().unwrap();
        drop(reader);
        std::fs::remove_file(fifo).unwrap();
    }
    scope.finish();
}
