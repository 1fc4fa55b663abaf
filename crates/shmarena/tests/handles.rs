//! Handles: their forms, resolution through the attach cache, fork and spawn, stale and forged
//! handles.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::{exited_with, fork_and_wait, run_checked, run_isolated, Scope};
use shmarena::handle::RawHandle;
use shmarena::{Arena, ArenaOptions, Error, Handle, SliceHandle};

type Lexicon = HashMap<String, u32>;

fn build(builder: ArenaOptions) -> Arena {
    let lexicon: Lexicon = (0..1000u32).map(|i| (format!("w{i}"), i)).collect();
    let mut b = builder.create().unwrap();
    b.put("lexicon", &lexicon).unwrap();
    b.put_slice("weights", &(0..100).map(|i| i as f32).collect::<Vec<_>>())
        .unwrap();
    b.seal().unwrap()
}

#[test]
fn handles_are_small_copy_values_in_three_forms() {
    assert_eq!(size_of::<Handle<Lexicon>>(), 64);
    assert_eq!(size_of::<SliceHandle<f32>>(), 64);
    let scope = Scope::new();
    let name = scope.name("forms");
    for arena in [
        build(ArenaOptions::new()),
        build(ArenaOptions::new().named(&name)),
    ] {
        let h: Handle<Lexicon> = arena.handle("lexicon").unwrap();
        let copy = h; // Copy
        assert_eq!(copy, h);

        let text = h.to_string();
        assert!(text.starts_with("shmarena1:") && text.len() < 120, "{text}");
        assert_eq!(text.parse::<Handle<Lexicon>>().unwrap(), h);

        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Handle<Lexicon>>(&json).unwrap(), h);

        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&h).unwrap();
        let back: Handle<Lexicon> = rkyv::from_bytes::<_, rkyv::rancor::Error>(&bytes).unwrap();
        assert_eq!(back, h);

        assert_eq!(h.get().unwrap().get("w77").map(|v| v.to_native()), Some(77));
        let s: SliceHandle<f32> = arena.slice_handle("weights").unwrap();
        assert_eq!(s.get().unwrap()[99], 99.0);
        assert_eq!(s.to_string().parse::<SliceHandle<f32>>().unwrap(), s);
    }
    scope.finish();
}

#[test]
fn making_a_handle_checks_the_type() {
    let arena = build(ArenaOptions::new());
    assert!(matches!(
        arena.handle::<Vec<u8>>("lexicon"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        arena.slice_handle::<u32>("weights"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        arena.handle::<Lexicon>("nope"),
        Err(Error::NoSuchEntry { .. })
    ));
    // A POD handle string cannot be read as an archived handle.
    let s = arena.slice_handle::<f32>("weights").unwrap().to_string();
    assert!(matches!(
        s.parse::<Handle<Lexicon>>(),
        Err(Error::BadHandle { .. })
    ));
}

#[test]
fn forged_handles_are_errors_never_reads() {
    let arena = build(ArenaOptions::new());
    let h = arena.handle::<Lexicon>("lexicon").unwrap().to_string();
    let parts: Vec<&str> = h.splitn(6, ':').collect();
    let forge = |i: usize, v: &str| {
        let mut p = parts.clone();
        p[i] = v;
        p.join(":")
    };
    // Past the end of the table of contents.
    let past = forge(2, "4000000000").parse::<Handle<Lexicon>>().unwrap();
    let e = past.get().unwrap_err();
    assert!(matches!(e, Error::BadHandle { .. }), "{e}");
    // Another entry's index with this type's hash.
    let other = forge(2, "1").parse::<Handle<Lexicon>>().unwrap();
    let e = other.get().unwrap_err();
    assert!(matches!(e, Error::BadHandle { .. }), "{e}");
    // A wrong type hash.
    let e = forge(4, "0123456789abcdef")
        .parse::<Handle<Lexicon>>()
        .unwrap()
        .get()
        .unwrap_err();
    assert!(matches!(e, Error::BadHandle { .. }), "{e}");
    // Malformed strings.
    for bad in [
        "",
        "shmarena1",
        "shmarena2:x",
        &forge(1, "zz"),
        &forge(5, "shm/../etc"),
        &forge(5, "tcp/1.2.3.4"),
    ] {
        let e = bad.parse::<RawHandle>().unwrap_err();
        assert!(
            matches!(e, Error::BadHandle { .. } | Error::InvalidName { .. }),
            "{bad:?}: {e}"
        );
    }
    // A locator pointing at a non-arena descriptor (this process's stdin is not one).
    let e = forge(5, &format!("memfd/{}/0", std::process::id()))
        .parse::<Handle<Lexicon>>()
        .unwrap();
    let e = forge_fresh_id(&e.to_string())
        .parse::<Handle<Lexicon>>()
        .unwrap()
        .get()
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::StaleHandle { .. } | Error::PermissionDenied { .. } | Error::Io { .. }
        ),
        "{e}"
    );
}

/// The same handle with another (random-looking) arena id, so the cache cannot answer.
fn forge_fresh_id(handle: &str) -> String {
    let mut p: Vec<String> = handle.splitn(6, ':').map(str::to_owned).collect();
    p[1] = format!(
        "{:032x}",
        0x5eed_0000_0000_0000_0000_0000_0000_0001u128 ^ std::process::id() as u128
    );
    p.join(":")
}

#[test]
fn stale_handles_are_clear_errors() {
    let scope = Scope::new();
    // The arena is gone (memfd freed with its last descriptor and mapping).
    let arena = build(ArenaOptions::new());
    let h = arena.handle::<Lexicon>("lexicon").unwrap();
    drop(arena);
    let e = h.get().unwrap_err();
    assert!(matches!(e, Error::StaleHandle { .. }), "{e}");
    assert!(e.to_string().contains("gone"), "{e}");

    // A named arena unlinked by its owner.
    let name = scope.name("stale");
    let arena = build(ArenaOptions::new().named(&name));
    let h = arena.handle::<Lexicon>("lexicon").unwrap();
    drop(arena);
    assert!(matches!(h.get(), Err(Error::StaleHandle { .. })));

    // The place now holds another arena (pid/fd or name reused): the id tells them apart.
    let newer = build(ArenaOptions::new().named(&name));
    let forged = forge_fresh_id(&newer.handle::<Lexicon>("lexicon").unwrap().to_string());
    let e = forged
        .parse::<Handle<Lexicon>>()
        .unwrap()
        .get()
        .unwrap_err();
    assert!(matches!(e, Error::StaleHandle { .. }), "{e}");
    assert!(e.to_string().contains("reused"), "{e}");
    drop(newer);
    scope.finish();
}

#[test]
#[ignore = "entry point: runs single-threaded in its own process"]
fn fork_child_uses_prebuilt_handles() {
    if std::env::var("SHMARENA_TEST_ISOLATED").is_err() {
        return;
    }
    let arena = build(ArenaOptions::new());
    let h: Handle<Lexicon> = arena.handle("lexicon").unwrap();
    let view = h.get().unwrap();
    let status = fork_and_wait(|| {
        // Zero work: the cache and mapping were inherited.
        let ok = h
            .get()
            .is_ok_and(|v| v.get("w999").map(|x| x.to_native()) == Some(999))
            && view.len() == 1000;
        i32::from(!ok)
    });
    assert_eq!(exited_with(status), Some(0), "child status {status:#x}");
    println!("OK:fork_child_uses_prebuilt_handles");
}

#[test]
fn handles_work_in_forked_children() {
    run_isolated(
        "fork_child_uses_prebuilt_handles",
        &[("SHMARENA_TEST_ISOLATED", "1".into())],
    );
}

#[test]
#[ignore = "entry point for spawned children"]
fn spawned_handle_child() {
    let Ok(expect) = std::env::var("SHMARENA_TEST_EXPECT_LOCAL_FD") else {
        return;
    };
    let h = Handle::<Lexicon>::from_env("LEXICON").unwrap();
    let lex = h.get().unwrap();
    assert_eq!(lex.get("w500").map(|v| v.to_native()), Some(500));
    let w = SliceHandle::<f32>::from_env("WEIGHTS")
        .unwrap()
        .get()
        .unwrap();
    assert_eq!(w[3], 3.0);
    if expect == "1" {
        // Attached through the inherited descriptor, not /proc/<parent>/fd.
        match h.arena().unwrap().locator() {
            shmarena::Locator::Memfd { pid, .. } => assert_eq!(*pid, std::process::id()),
            other => panic!("expected a memfd locator, got {other}"),
        }
    }
    println!("OK:spawned_handle_child");
}

#[test]
fn spawned_children_resolve_shared_handles() {
    let scope = Scope::new();
    let name = scope.name("spawnh");
    for (arena, local) in [
        (build(ArenaOptions::new()), "1"),
        (build(ArenaOptions::new().named(&name)), "0"),
    ] {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "spawned_handle_child",
            "--ignored",
            "--nocapture",
        ]);
        cmd.env("SHMARENA_TEST_EXPECT_LOCAL_FD", local);
        arena
            .handle::<Lexicon>("lexicon")
            .unwrap()
            .share_with(&mut cmd, "LEXICON")
            .unwrap();
        arena
            .slice_handle::<f32>("weights")
            .unwrap()
            .share_with(&mut cmd, "WEIGHTS")
            .unwrap();
        run_checked(&mut cmd, "spawned_handle_child");
    }
    scope.finish();
}

#[test]
fn the_descriptor_is_not_leaked_to_other_children() {
    use std::os::fd::AsRawFd;
    let arena = build(ArenaOptions::new());
    let fd = std::os::fd::AsFd::as_fd(&arena).as_raw_fd();
    // A child spawned without share_with does not inherit the memfd.
    let out = Command::new("ls")
        .arg(format!("/proc/self/fd/{fd}"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "fd {fd} leaked into an unrelated child"
    );
}

#[test]
fn the_attach_cache_is_shared_by_threads() {
    let arena = build(ArenaOptions::new());
    let h: Handle<Lexicon> = arena.handle("lexicon").unwrap();
    let s: SliceHandle<f32> = arena.slice_handle("weights").unwrap();
    std::thread::scope(|scope| {
        for t in 0..16u32 {
            scope.spawn(move || {
                for i in 0..2000u32 {
                    let key = format!("w{}", (i * 7 + t) % 1000);
                    assert_eq!(
                        h.get().unwrap().get(key.as_str()).map(|v| v.to_native()),
                        Some((i * 7 + t) % 1000)
                    );
                    assert_eq!(s.get().unwrap().len(), 100);
                }
            });
        }
    });
}
