//! Stable entry type names: the same struct reached through two module paths (as a second
//! binary that includes the model with `#[path]` would) is refused by Rust path, and matched
//! by its `StableName`, through `get_stable`, handles and a file on disk.

// The point of this test: one file loaded as two modules, as two binaries would.
#![allow(clippy::duplicate_mod)]

mod common;

#[path = "stable/model.rs"]
mod app_model;
#[path = "stable/model.rs"]
mod reader_model;

use common::Scope;
use shmarena::{Arena, ArenaOptions, Error, Handle, StableName};

fn catalog() -> app_model::Catalog {
    app_model::Catalog {
        items: vec!["apple".into(), "pear".into()],
        weights: vec![0.5, 0.25],
    }
}

#[test]
fn the_rust_path_differs_and_is_refused_with_a_hint() {
    let mut b = ArenaOptions::new().create().unwrap();
    b.put("catalog", &catalog()).unwrap();
    let arena = b.seal().unwrap();
    let err = arena.get::<reader_model::Catalog>("catalog").unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("app_model::Catalog"), "{text}");
    assert!(text.contains("StableName"), "{text}");
}

#[test]
fn a_stable_name_matches_across_module_paths_in_a_file() {
    let scope = Scope::new();
    let path = scope.path("catalog.arena");
    let mut b = ArenaOptions::new().file(&path).create().unwrap();
    b.put_stable("catalog", &catalog()).unwrap();
    drop(b.seal().unwrap());

    let arena = Arena::load_file(&path).unwrap();
    let info = arena.entries().next().unwrap();
    assert_eq!(info.type_name, "tests.Catalog@v1");
    let view = arena
        .get_stable::<reader_model::Catalog>("catalog")
        .unwrap();
    assert_eq!(view.items[1], "pear");
    assert_eq!(view.weights[0], 0.5);
    let owned: reader_model::Catalog = view.deserialize().unwrap();
    assert_eq!(owned.items, ["apple", "pear"]);
    // The Rust-path read does not match a stable entry, nor the other way round.
    assert!(matches!(
        arena.get::<app_model::Catalog>("catalog"),
        Err(Error::TypeMismatch { .. })
    ));
    drop((view, arena));
    std::fs::remove_file(&path).unwrap();
    scope.finish();
}

/// The same layout under another version is another type.
struct CatalogV2;
impl StableName for CatalogV2 {
    const NAME: &'static str = "tests.Catalog";
    const VERSION: u32 = 2;
}

#[derive(shmarena::rkyv::Archive, shmarena::rkyv::Serialize)]
#[rkyv(crate = shmarena::rkyv, derive(Debug))]
struct Catalog2 {
    items: Vec<String>,
    weights: Vec<f32>,
}
impl StableName for Catalog2 {
    const NAME: &'static str = CatalogV2::NAME;
    const VERSION: u32 = CatalogV2::VERSION;
}

#[test]
fn another_version_is_refused() {
    let mut b = ArenaOptions::new().create().unwrap();
    b.put_stable("catalog", &catalog()).unwrap();
    let arena = b.seal().unwrap();
    let err = arena.get_stable::<Catalog2>("catalog").unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("tests.Catalog@v1"), "{err}");
}

#[test]
fn stable_handles_resolve_under_the_other_path() {
    let mut b = ArenaOptions::new().create().unwrap();
    b.put_stable("catalog", &catalog()).unwrap();
    let arena = b.seal().unwrap();
    let h: Handle<app_model::Catalog> = arena.stable_handle("catalog").unwrap();
    let back: Handle<reader_model::Catalog> = h.to_string().parse().unwrap();
    assert_eq!(back.get_stable().unwrap().items[0], "apple");
    assert!(matches!(back.get(), Err(Error::TypeMismatch { .. })));
}
