//! Size limits: a full /dev/shm is `Error::NoSpace` (never SIGBUS), and POD entries go past
//! rkyv's 2 GiB relative-pointer limit.

mod common;

use std::process::Command;

use shmarena::{Arena, ArenaOptions, Error};

/// Runs in a private mount namespace where /dev/shm is a 2 MiB tmpfs (see the test below).
#[test]
#[ignore = "entry point for the child in a private mount namespace"]
fn nospace_child_entry() {
    let Ok(dir) = std::env::var("SHMARENA_TEST_SMALL_TMPFS") else {
        return;
    };
    let big = vec![7u8; 8 << 20];
    // Named segment in the small /dev/shm: growing past 2 MiB is refused, not a SIGBUS.
    let mut b = ArenaOptions::new().named("sa-nospace").create().unwrap();
    b.put_bytes("small", &[1u8; 1000]).unwrap();
    let e = b.put_bytes("big", &big).unwrap_err();
    assert!(matches!(e, Error::NoSpace { .. }), "named: {e}");
    assert!(e.to_string().contains("sa-nospace"), "{e}");
    // The writer lost nothing: it still seals with the entry that fit.
    let arena = b.seal().unwrap();
    assert_eq!(&*arena.bytes("small").unwrap(), &[1u8; 1000]);
    drop(arena);
    assert!(
        std::fs::read_dir("/dev/shm").unwrap().next().is_none(),
        "named segment left behind"
    );

    // A file arena in the same small tmpfs, grown by rkyv's writer.
    let path = std::path::Path::new(&dir).join("f.arena");
    let mut b = ArenaOptions::new().file(&path).create().unwrap();
    let e = b.put("vec", &big).unwrap_err();
    assert!(matches!(e, Error::NoSpace { .. }), "file: {e}");
    // Many small writes (each string's bytes) that the writer stages and copies in pieces:
    // the copy that does not fit fails, and the writer still takes what fits afterwards.
    let words: Vec<String> = (0..400_000)
        .map(|i| format!("word number {i:>12}"))
        .collect();
    let e = b.put("words", &words).unwrap_err();
    assert!(
        matches!(e, Error::NoSpace { .. }),
        "file, small writes: {e}"
    );
    let few: Vec<String> = words[..100].to_vec();
    b.put("few", &few).unwrap();
    let arena = b.seal().unwrap();
    let got = arena.get::<Vec<String>>("few").unwrap();
    assert_eq!(got.len(), 100);
    assert_eq!(got[99].as_str(), few[99]);
    drop(arena);
    std::fs::remove_file(&path).unwrap();
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "temporary file left behind"
    );

    // Sealing with no room left for the table of contents hands the writer back.
    let mut b = ArenaOptions::new()
        .named("sa-nospace-toc")
        .create()
        .unwrap();
    let mut added = 0;
    loop {
        let name = format!("{added:0>250}");
        match b.put_bytes(&name, &[9u8; 300]) {
            Ok(()) => added += 1,
            Err(Error::NoSpace { .. }) => break,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert!(added > 1000, "only {added} entries fit");
    let failed = b.seal().unwrap_err();
    assert!(matches!(failed.error(), Error::NoSpace { .. }), "{failed}");
    let b = failed.into_writer().expect("the writer comes back");
    assert_eq!(b.entry_count(), added);
    drop(b);
    assert!(
        std::fs::read_dir("/dev/shm").unwrap().next().is_none(),
        "segment left behind"
    );
    println!("NOSPACE-OK");
}

#[test]
fn a_full_tmpfs_is_no_space_not_sigbus() {
    let probe = Command::new("unshare").args(["-m", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: needs root and unshare(1) to mount a private small tmpfs");
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root and must run this test"
        );
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let script = r#"set -e
mount -t tmpfs -o size=2m shmarena-test /dev/shm
dir=$(mktemp -d)
mount -t tmpfs -o size=2m shmarena-test "$dir"
SHMARENA_TEST_SMALL_TMPFS="$dir" "$0" --exact nospace_child_entry --ignored --nocapture"#;
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .arg(&exe)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("NOSPACE-OK"),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_3_gib_pod_entry() {
    const LEN: usize = 3 << 30;
    let mut b = ArenaOptions::new().create().unwrap();
    b.put_slice("head", &[1u64, 2, 3]).unwrap();
    b.put_slice_with::<u8>("big", LEN, |dst| {
        dst.fill(0x5a);
        dst[0] = 1;
        dst[LEN / 2] = 2;
        dst[LEN - 1] = 3;
    })
    .unwrap();
    b.put_slice("tail", &[9u32; 16]).unwrap();
    let arena = b.seal().unwrap();
    let big = arena.slice::<u8>("big").unwrap();
    assert_eq!(big.len(), LEN);
    assert_eq!(
        (big[0], big[LEN / 2], big[LEN - 1], big[12345]),
        (1, 2, 3, 0x5a)
    );
    let (_, tail) = arena.layout().find("tail").unwrap();
    assert!(
        tail.offset > LEN as u64,
        "the tail lies past 3 GiB: {}",
        tail.offset
    );
    assert_eq!(&*arena.slice::<u32>("tail").unwrap(), &[9; 16]);
    // Reopen through /proc: offsets past 2 and 3 GiB parse.
    let again = Arena::open(arena.locator()).unwrap();
    assert_eq!(again.slice::<u8>("big").unwrap()[LEN - 1], 3);
}
