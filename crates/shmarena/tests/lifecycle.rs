//! Named segments by name: `unlink` outcomes, `remove_named` from any process, gc keeping
//! persisted segments, and waiting for a segment that is still being built.

mod common;

use std::time::{Duration, Instant};

use common::{run_isolated, Scope};
use shmarena::inspect::{gc, GcOptions, SkipReason};
use shmarena::{Arena, ArenaOptions, Error};

#[test]
fn unlink_by_a_reader_is_an_error_that_names_remove_named() {
    let scope = Scope::new();
    let name = scope.name("rd");
    let mut b = ArenaOptions::new().named(&name).create().unwrap();
    b.put_slice("xs", &[1u32]).unwrap();
    let arena = b.seal().unwrap();
    // SAFETY: nothing writes to the segment while it is mapped here (it is sealed, and this
    // test is its only user).
    let reader = unsafe { Arena::open_named(&name) }.unwrap();
    let err = reader.unlink().unwrap_err();
    assert!(matches!(err, Error::NotBuilder { .. }), "{err:?}");
    assert!(err.to_string().contains("remove_named"), "{err}");
    assert!(Arena::load_named(&name).is_ok(), "the name is still there");
    // remove_named works from any process of the user, the builder's included.
    Arena::remove_named(&name).unwrap();
    assert!(matches!(
        Arena::load_named(&name),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        Arena::remove_named(&name),
        Err(Error::NotFound { .. })
    ));
    drop((arena, reader));
    scope.finish();
}

#[test]
fn remove_named_refuses_a_segment_that_is_not_an_arena() {
    let scope = Scope::new();
    let name = scope.name("foreign");
    let path = std::path::Path::new("/dev/shm").join(&name);
    std::fs::write(&path, b"not an arena, someone else's data").unwrap();
    let err = Arena::remove_named(&name).unwrap_err();
    assert!(err.format_error().is_some(), "{err:?}");
    assert!(path.exists());
    std::fs::remove_file(&path).unwrap();
    scope.finish();
}

/// In a fresh process: builds the segment named in LIFECYCLE_NAME; persists it if
/// LIFECYCLE_PERSIST is set; leaves it unsealed (an orphan) if LIFECYCLE_ORPHAN is set.
#[test]
#[ignore = "run by the lifecycle tests in a fresh process"]
fn child_builds_and_exits() {
    let name = std::env::var("LIFECYCLE_NAME").unwrap();
    let mut b = ArenaOptions::new().named(&name).create().unwrap();
    b.put_slice("xs", &[7u32, 8]).unwrap();
    if std::env::var_os("LIFECYCLE_ORPHAN").is_some() {
        println!("OK:child_builds_and_exits");
        // Exit without sealing and without running the builder's drop: a killed builder.
        std::process::exit(0);
    }
    let arena = b.seal().unwrap();
    if std::env::var_os("LIFECYCLE_PERSIST").is_some() {
        arena.persist();
    }
    println!("OK:child_builds_and_exits");
}

#[test]
fn gc_keeps_a_persisted_segment_whose_builder_exited() {
    let scope = Scope::new();
    let name = scope.name("kept");
    run_isolated(
        "child_builds_and_exits",
        &[
            ("LIFECYCLE_NAME", name.clone()),
            ("LIFECYCLE_PERSIST", "1".into()),
        ],
    );
    let arena = Arena::load_named(&name).unwrap();
    assert_eq!(&*arena.slice::<u32>("xs").unwrap(), &[7, 8]);
    drop(arena);
    let report = gc(&GcOptions::new().prefix(&name)).unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.name == name && s.reason == SkipReason::Persisted),
        "{report:?}"
    );
    assert!(Arena::load_named(&name).is_ok());
    // Asked to, gc takes it.
    let report = gc(&GcOptions::new().prefix(&name).include_persisted(true)).unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    scope.finish();
}

#[test]
fn wait_named_returns_once_the_builder_seals() {
    let scope = Scope::new();
    let name = scope.name("late");
    let builder = {
        let name = name.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            let mut b = ArenaOptions::new().named(&name).create().unwrap();
            b.put_slice("xs", &[1u64, 2, 3]).unwrap();
            std::thread::sleep(Duration::from_millis(150));
            let arena = b.seal().unwrap();
            std::thread::sleep(Duration::from_millis(500));
            drop(arena);
        })
    };
    Arena::wait_named(&name, Duration::from_secs(30)).unwrap();
    let arena = Arena::load_named(&name).unwrap();
    assert_eq!(&*arena.slice::<u64>("xs").unwrap(), &[1, 2, 3]);
    drop(arena);
    builder.join().unwrap();
    scope.finish();
}

#[test]
fn wait_named_times_out_and_gives_up_on_an_orphan() {
    let scope = Scope::new();
    let name = scope.name("never");
    let start = Instant::now();
    let err = Arena::wait_named(&name, Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(err.to_string().contains("not found"), "{err}");

    // A builder that died before sealing: no use waiting.
    let orphan = scope.name("orphan");
    run_isolated(
        "child_builds_and_exits",
        &[
            ("LIFECYCLE_NAME", orphan.clone()),
            ("LIFECYCLE_ORPHAN", "1".into()),
        ],
    );
    let start = Instant::now();
    let err = Arena::wait_named(&orphan, Duration::from_secs(30)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(err.to_string().contains("exited before sealing"), "{err}");
    // The orphan can be removed through the API.
    Arena::remove_named(&orphan).unwrap();
    scope.finish();
}
