//! Format versions: a version-1 arena (a fixture file, byte for byte as version 1 wrote it)
//! still reads; shaped and version-2 element types round-trip; the writer writes the lowest
//! version its entries need.

use std::collections::HashMap;

use shmarena::format::{Prim, FORMAT_VERSION, MIN_FORMAT_VERSION};
use shmarena::{Arena, ArenaOptions, Error};

/// Written by `examples/conformance_fixtures.rs` (`rust-v1.arena`): put, put_slice and
/// put_bytes only, so format version 1, the layout every earlier release wrote.
const V1: &[u8] = include_bytes!("fixtures/v1-sample.arena");

fn load(bytes: &[u8]) -> Arena {
    let dir = tempfile_dir();
    let path = dir.join("a.arena");
    std::fs::write(&path, bytes).unwrap();
    let arena = Arena::load_file(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    arena
}

fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "shmarena-fv-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_version_1_fixture_reads() {
    assert_eq!(&V1[8..12], &1u32.to_le_bytes());
    let arena = load(V1);
    assert_eq!(arena.layout().header.version, 1);
    let lex = arena.get::<HashMap<String, u32>>("lexicon").unwrap();
    assert_eq!(lex.get("pear").map(|v| v.to_native()), Some(2));
    assert_eq!(
        &*arena.slice::<u32>("nums").unwrap(),
        &(0..10).collect::<Vec<_>>()[..]
    );
    assert_eq!(&*arena.bytes("greeting").unwrap(), b"hello");
    assert!(arena.slice::<f64>("empty").unwrap().is_empty());
    assert_eq!(arena.entry("nums").unwrap().dims(), [10]);
    assert_eq!(arena.entry("nums").unwrap().shape, None);
    arena.verify().unwrap();
}

#[test]
fn plain_arenas_are_written_as_version_1() {
    let mut b = ArenaOptions::new().create().unwrap();
    b.put_slice("x", &[1u8, 2]).unwrap();
    b.put("y", &vec![1u32]).unwrap();
    let arena = b.seal().unwrap();
    assert_eq!(arena.layout().header.version, MIN_FORMAT_VERSION);
    assert_eq!(&arena.as_bytes()[8..12], &1u32.to_le_bytes());
}

#[test]
fn shapes_and_version_2_types_round_trip() {
    let mut b = ArenaOptions::new().create().unwrap();
    let grid: Vec<f32> = (0..24).map(|i| i as f32).collect();
    b.put_array("grid", &grid, &[2, 3, 4]).unwrap();
    b.put_array("one", &[5u16], &[]).unwrap();
    b.put_array_with::<i64>("filled", &[2, 2], |d| d.copy_from_slice(&[1, 2, 3, 4]))
        .unwrap();
    b.put_raw_array("flags", Prim::Bool, 0, 1, &[0, 1, 1], &[3], None)
        .unwrap();
    b.put_raw_array("when", Prim::DateTime64, 9, 8, &[0; 16], &[2, 1], None)
        .unwrap();
    b.put_raw_array("names", Prim::FixedUnicode, 0, 8, &[0; 16], &[2], None)
        .unwrap();
    b.put_raw_array(
        "ld",
        Prim::Opaque,
        0,
        16,
        &[0; 32],
        &[2],
        Some("numpy:<f16"),
    )
    .unwrap();
    let arena = b.seal().unwrap();
    assert_eq!(arena.layout().header.version, FORMAT_VERSION);
    arena.verify().unwrap();
    assert_eq!(arena.entry("grid").unwrap().dims(), [2, 3, 4]);
    assert_eq!(&*arena.slice::<f32>("grid").unwrap(), &grid[..]);
    assert_eq!(arena.entry("one").unwrap().dims(), Vec::<u64>::new());
    assert_eq!(&*arena.slice::<i64>("filled").unwrap(), &[1, 2, 3, 4]);
    let when = arena.entry("when").unwrap();
    assert_eq!((when.prim, when.prim_arg), (Prim::DateTime64, 9));
    assert_eq!(when.dtype_name(), "datetime64[us]");
    assert_eq!(
        arena.entry("names").unwrap().dtype_name(),
        "unicode-string[2]"
    );
    let ld = arena.entry("ld").unwrap();
    assert_eq!((ld.type_name.as_str(), ld.align), ("numpy:<f16", 16));
    assert_eq!(arena.entry("flags").unwrap().type_name, "bool");
    // The fingerprint of a version-2 entry is as before: a u16 slice reads as u16.
    assert_eq!(&*arena.slice::<u16>("one").unwrap(), &[5]);
    assert!(arena.entry("missing").is_err());
}

#[test]
fn bad_shapes_and_types_are_refused_and_leave_the_writer_unchanged() {
    let mut b = ArenaOptions::new().create().unwrap();
    let bad =
        |r: shmarena::Result<()>| assert!(matches!(r, Err(Error::InvalidArray { .. })), "{r:?}");
    bad(b.put_array("a", &[1u8, 2, 3], &[2, 2]));
    bad(b.put_array("a", &[1u8; 1], &[1; 65]));
    bad(b.put_array_with::<u8>("a", &[u64::MAX, 2], |_| {}));
    bad(b.put_raw_array("a", Prim::F16, 0, 4, &[0; 8], &[2], None));
    bad(b.put_raw_array("a", Prim::F64, 3, 8, &[0; 8], &[1], None));
    bad(b.put_raw_array("a", Prim::TimeDelta64, 14, 8, &[0; 8], &[1], None));
    bad(b.put_raw_array("a", Prim::FixedUnicode, 0, 6, &[0; 12], &[2], None));
    bad(b.put_raw_array("a", Prim::FixedBytes, 0, 3, &[0; 7], &[2], None));
    assert_eq!(b.entry_count(), 0);
    let arena = b.seal().unwrap();
    assert_eq!(arena.layout().header.version, 1);
}
