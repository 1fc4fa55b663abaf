//! What a user reaches for: listing entries, owned copies, consistent names and signatures,
//! clear errors for a missing handle variable, and handles to files with long paths.

mod common;

use std::collections::HashMap;

use common::{run_isolated, Scope};
use shmarena::format::Kind;
use shmarena::{Arena, ArenaOptions, Error, Handle, SliceHandle};

#[test]
fn entries_contains_and_counts() {
    let mut b = ArenaOptions::new().create().unwrap();
    let lex: HashMap<String, u32> = [("apple".to_string(), 1)].into();
    b.put("lexicon", &lex).unwrap();
    b.put_slice("weights", &[1.0f32, 2.0, 3.0]).unwrap();
    b.put_bytes("blob", b"hello").unwrap();
    let arena = b.seal().unwrap();
    assert_eq!(arena.entry_count(), 3);
    assert!(!arena.is_empty());
    assert!(arena.byte_len() > 5);
    let infos: Vec<_> = arena.entries().collect();
    assert_eq!(infos.len(), 3);
    assert_eq!(infos[0].name, "lexicon");
    assert_eq!(infos[0].kind, Kind::Archived);
    assert!(
        infos[0].type_name.contains("HashMap"),
        "{}",
        infos[0].type_name
    );
    assert_eq!(
        (infos[1].kind, infos[1].count, infos[1].byte_len),
        (Kind::Pod, 3, 12)
    );
    assert_eq!(infos[1].type_name, "f32");
    assert_eq!((infos[2].kind, infos[2].count), (Kind::Bytes, 5));
    assert!(arena.contains("blob"));
    assert!(!arena.contains("nope"));

    let empty = ArenaOptions::new().create().unwrap().seal().unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.entry_count(), 0);
    assert!(empty.byte_len() > 0, "an empty arena still has a header");
}

#[test]
fn a_view_deserializes_into_an_owned_value() {
    let mut b = ArenaOptions::new().create().unwrap();
    let lex: HashMap<String, (u8, f32)> = [("apple".to_string(), (1, 0.5))].into();
    b.put("lexicon", &lex).unwrap();
    let arena = b.seal().unwrap();
    let owned: HashMap<String, (u8, f32)> = arena
        .get::<HashMap<String, (u8, f32)>>("lexicon")
        .unwrap()
        .deserialize()
        .unwrap();
    assert_eq!(owned, lex);
}

#[test]
fn from_env_on_a_missing_variable_says_it_is_not_set() {
    let var = format!("SHMARENA_TEST_UNSET_{}", std::process::id());
    let err = Handle::<Vec<u32>>::from_env(&var).unwrap_err();
    assert!(
        matches!(&err, Error::EnvNotSet { var: v } if *v == var),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&var) && text.contains("is not set"), "{text}");
    assert_eq!(text.matches(&var).count(), 1, "{text}");
}

#[test]
fn share_with_returns_the_command_in_both_forms() {
    let mut b = ArenaOptions::new().create().unwrap();
    b.put_slice("xs", &[1u32, 2]).unwrap();
    let arena = b.seal().unwrap();
    let h = arena.slice_handle::<u32>("xs").unwrap();
    let mut cmd = std::process::Command::new("true");
    // Both return `Result<&mut Command>`, so they chain the same way.
    arena.share_with(&mut cmd).unwrap().arg("--a");
    h.share_with(&mut cmd, "XS").unwrap().arg("--b");
    let args: Vec<_> = cmd.get_args().collect();
    assert_eq!(args, ["--a", "--b"]);
    assert!(cmd.get_envs().any(|(k, _)| k == "XS"));
}

/// A file arena whose path is far longer than the 33 bytes a handle value holds.
fn long_path_arena(scope: &Scope) -> (Arena, std::path::PathBuf) {
    let dir = scope.path("a-directory-name-long-enough-to-overflow-the-inline-locator");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("weights-with-a-long-file-name.arena");
    let mut b = ArenaOptions::new().file(&path).create().unwrap();
    b.put_slice("weights", &[1.5f32, 2.5, 3.5]).unwrap();
    (b.seal().unwrap(), path)
}

#[test]
fn long_file_paths_travel_in_the_string_form() {
    let scope = Scope::new();
    let (arena, path) = long_path_arena(&scope);
    assert!(path.as_os_str().len() > 33);
    let h = arena.slice_handle::<f32>("weights").unwrap();
    assert!(!h.raw().resolves_anywhere());
    let text = h.to_string();
    assert!(
        text.ends_with(&format!("file:{}", path.display())),
        "{text}"
    );
    // Another process (a fresh one, which has never opened the arena) resolves it.
    run_isolated(
        "child_resolves_a_long_path_handle",
        &[("LONG_PATH_HANDLE", text)],
    );
    // A handle to a short path resolves anywhere.
    let mut b = ArenaOptions::new().create().unwrap();
    b.put_slice("xs", &[1u8]).unwrap();
    let memfd = b.seal().unwrap();
    assert!(memfd
        .slice_handle::<u8>("xs")
        .unwrap()
        .raw()
        .resolves_anywhere());
    drop(arena);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    scope.finish();
}

#[test]
#[ignore = "run by long_file_paths_travel_in_the_string_form in a fresh process"]
fn child_resolves_a_long_path_handle() {
    let h = SliceHandle::<f32>::from_env("LONG_PATH_HANDLE").unwrap();
    assert_eq!(&*h.get().unwrap(), &[1.5, 2.5, 3.5]);
    // Its string form still carries the full path.
    assert_eq!(h.to_string(), std::env::var("LONG_PATH_HANDLE").unwrap());
    println!("OK:child_resolves_a_long_path_handle");
}
