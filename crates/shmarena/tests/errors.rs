//! Bad input gets typed errors that name the thing and the cause.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use common::{report, Scope};
use shmarena::format::FormatError;
use shmarena::format::{header_offsets, HEADER_LEN};
use shmarena::{Arena, ArenaOptions, Error};

fn small_file_arena(scope: &Scope, file: &str) -> std::path::PathBuf {
    let path = scope.path(file);
    let mut b = ArenaOptions::new().file(&path).create().unwrap();
    let map: HashMap<String, Vec<String>> = (0..200)
        .map(|i| (format!("k{i}"), vec![format!("v{i}"); 3]))
        .collect();
    b.put("map", &map).unwrap();
    b.put_slice("nums", &(0..1000u32).collect::<Vec<_>>())
        .unwrap();
    b.seal().unwrap();
    path
}

/// Copies an arena file to a writable scratch file, lets `edit` change the bytes, and maps it in
/// place (payloads unverified, so damaged ones reach the typed reads).
fn open_edited(
    scope: &Scope,
    src: &std::path::Path,
    edit: impl FnOnce(&mut Vec<u8>),
) -> shmarena::Result<Arena> {
    let mut bytes = std::fs::read(src).unwrap();
    edit(&mut bytes);
    let dst = scope.path("edited.arena");
    let _ = std::fs::remove_file(&dst);
    std::fs::write(&dst, &bytes).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
    // SAFETY: the file is a new inode (the old one was removed first) that nothing writes to
    // after this point; it is unlinked below, which leaves the mapping intact.
    let r = unsafe { Arena::open_file(&dst) };
    std::fs::remove_file(&dst).unwrap();
    r
}

#[test]
fn wrong_type_and_wrong_name() {
    let mut b = ArenaOptions::new().create().unwrap();
    b.put("strings", &vec!["a".to_string()]).unwrap();
    b.put_slice("floats", &[1.0f32, 2.0]).unwrap();
    let arena = b.seal().unwrap();

    let e = arena.get::<Vec<u64>>("strings").unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("strings") && msg.contains("Vec<u64>") && msg.contains("String"),
        "{msg}"
    );

    let e = arena.slice::<u32>("floats").unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
    assert!(e.to_string().contains("f32"), "{e}");
    // Same size and alignment, different type: still a mismatch.
    let e = arena.slice::<i32>("floats").unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
    // Archived vs POD kinds do not mix.
    assert!(matches!(
        arena.get::<f32>("floats"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        arena.bytes("floats"),
        Err(Error::TypeMismatch { .. })
    ));

    let e = arena.slice::<f32>("flaots").unwrap_err();
    assert!(matches!(e, Error::NoSuchEntry { .. }), "{e}");
    assert!(e.to_string().contains("flaots"), "{e}");
}

#[test]
fn bad_names_and_duplicates() {
    for bad in ["", "a/b", "..", "x".repeat(31).as_str(), "sp ace", ".dot"] {
        let e = ArenaOptions::new().named(bad).create().unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{bad:?}: {e}");
        assert!(
            matches!(Arena::load_named(bad), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
    }
    let mut b = ArenaOptions::new().create().unwrap();
    b.put_slice("x", &[1u8]).unwrap();
    let e = b.put_slice("x", &[2u8]).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    assert!(matches!(
        b.put_bytes("", b""),
        Err(Error::InvalidName { .. })
    ));
    // The failed calls changed nothing.
    let arena = b.seal().unwrap();
    assert_eq!(&*arena.slice::<u8>("x").unwrap(), &[1]);
    assert_eq!(arena.layout().entries.len(), 1);
}

#[test]
fn missing_things_are_not_found() {
    let scope = Scope::new();
    let e = Arena::load_named(&scope.name("absent")).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("absent"), "{e}");
    let e = Arena::load_file(scope.path("nope.arena")).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let e = Arena::open_memfd(u32::MAX / 2, 3).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let name = scope.name("dup");
    let first = ArenaOptions::new().named(&name).create().unwrap();
    let e = ArenaOptions::new().named(&name).create().unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    drop(first);
    scope.finish();
}

#[test]
fn foreign_truncated_and_corrupted_files() {
    let scope = Scope::new();
    let path = small_file_arena(&scope, "good.arena");
    let good = std::fs::read(&path).unwrap();
    let layout = shmarena::format::Layout::parse(&good).unwrap();

    // Foreign bytes.
    let e = open_edited(&scope, &path, |b| {
        b[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00")
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Format {
                source: FormatError::BadMagic,
                ..
            }
        ),
        "{e}"
    );
    let e = open_edited(&scope, &path, |b| b.clear()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Format {
                source: FormatError::BadMagic,
                ..
            }
        ),
        "{e}"
    );

    // Truncations at every table boundary and inside the header.
    let toc = layout.header.toc_offset as usize;
    for len in [
        9,
        64,
        HEADER_LEN - 1,
        HEADER_LEN,
        toc,
        toc + 1,
        good.len() - 1,
    ] {
        let e = open_edited(&scope, &path, |b| b.truncate(len)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Format {
                    source: FormatError::Truncated { .. },
                    ..
                }
            ),
            "truncated to {len}: expected Truncated, got {e}"
        );
    }

    // Flipped bytes in the header and the table of contents.
    for at in [
        header_offsets::VERSION,
        header_offsets::TOC_OFFSET,
        header_offsets::STATE,
        toc + 3,
        good.len() - 2,
    ] {
        let e = open_edited(&scope, &path, |b| b[at] ^= 0x40).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Format {
                    source: FormatError::Corrupted { .. },
                    ..
                } | Error::Format {
                    source: FormatError::UnsupportedVersion { .. },
                    ..
                } | Error::Format {
                    source: FormatError::StillBuilding,
                    ..
                }
            ),
            "flip at {at}: {e}"
        );
    }

    // A flipped payload byte: the open succeeds (payloads are not read), verify() names the
    // entry, and reading the archived entry either validates or fails with Corrupted.
    for entry in &layout.entries {
        let at = entry.offset as usize + entry.len as usize / 2;
        let arena = open_edited(&scope, &path, |b| b[at] ^= 0xff).unwrap();
        let e = arena.verify().unwrap_err();
        assert!(
            matches!(
                e,
                Error::Format {
                    source: FormatError::Corrupted { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert!(report(&e).contains(&entry.name), "{}", report(&e));
    }
    std::fs::remove_file(&path).unwrap();
    scope.finish();
}

#[test]
fn corrupted_archives_fail_validation_not_the_process() {
    let scope = Scope::new();
    let path = small_file_arena(&scope, "fuzz.arena");
    let good = std::fs::read(&path).unwrap();
    let layout = shmarena::format::Layout::parse(&good).unwrap();
    let (_, map) = layout.find("map").unwrap();
    let mut failures = 0;
    // Flip every 7th byte of the archived payload, one at a time: get() must validate or fail
    // with a typed error, and a successful get must be readable.
    for at in (map.offset as usize..(map.offset + map.len) as usize).step_by(7) {
        let arena = open_edited(&scope, &path, |b| b[at] ^= 0x5a).unwrap();
        match arena.get::<HashMap<String, Vec<String>>>("map") {
            Ok(m) => {
                for (k, v) in m.iter() {
                    assert!(k.len() < 1 << 20 && v.len() < 1 << 20);
                }
            }
            Err(Error::Format {
                source: FormatError::Corrupted { detail },
                ..
            }) => {
                assert!(detail.contains("map"), "{detail}");
                failures += 1;
            }
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }
    assert!(failures > 0, "no flip was caught by validation");
    std::fs::remove_file(&path).unwrap();
    scope.finish();
}

#[test]
fn pointer_width_mismatch_is_refused() {
    let scope = Scope::new();
    let path = small_file_arena(&scope, "width.arena");
    let other = if shmarena::format::NATIVE_POINTER_WIDTH == 4 {
        8
    } else {
        4
    };
    let e = open_edited(&scope, &path, |b| {
        let mut h = shmarena::format::Header::parse(b).unwrap();
        h.pointer_width = other;
        b[..HEADER_LEN].copy_from_slice(&h.encode());
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Format {
                source: FormatError::PointerWidth { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(report(&e).contains("pointer_width_64"), "{}", report(&e));
    std::fs::remove_file(&path).unwrap();
    scope.finish();
}

#[test]
fn loose_permissions_are_refused_unless_allowed() {
    let scope = Scope::new();
    let path = small_file_arena(&scope, "perm.arena");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).unwrap();
    let loc = shmarena::Locator::File { path: path.clone() };
    let e = Arena::open(&loc).unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e}");
    assert!(e.to_string().contains("writable by group"), "{e}");
    let arena = shmarena::OpenOptions::new()
        .allow_foreign_owner(true)
        .open(&loc)
        .unwrap();
    assert_eq!(arena.slice::<u32>("nums").unwrap()[999], 999);
    drop(arena);
    std::fs::remove_file(&path).unwrap();
    scope.finish();
}

#[test]
fn symlinks_are_not_followed() {
    let scope = Scope::new();
    let path = small_file_arena(&scope, "target.arena");
    let link = scope.path("link.arena");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let e = Arena::load_file(&link).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    // SAFETY: the open fails (a symlink), so nothing is mapped.
    let e = unsafe { Arena::open_file(&link) }.unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    // And a builder never writes through one.
    let e = ArenaOptions::new().file(&link).create().unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    std::fs::remove_file(&link).unwrap();
    std::fs::remove_file(&path).unwrap();
    scope.finish();
}
