//! Round trips through all three backings, with nested and empty entries.

mod common;

use std::collections::HashMap;

use common::Scope;
use rkyv::{Archive, Deserialize, Serialize};
use shmarena::format::FormatError;
use shmarena::{Arena, ArenaOptions, ArenaWriter, Error};

#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Shape {
    Point,
    Circle { radius: f64 },
    Poly(Vec<(i32, i32)>),
}

#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Record {
    id: u64,
    label: Option<String>,
    shape: Shape,
    tags: Vec<String>,
    parent: Option<Box<Parent>>,
}

#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Parent {
    id: u64,
    shape: Shape,
    tags: Vec<String>,
}

fn sample_map() -> HashMap<String, Vec<u32>> {
    (0..500u32)
        .map(|i| {
            (
                format!("key-{i}"),
                (0..i % 17).map(|j| i * 31 + j).collect(),
            )
        })
        .collect()
}

fn sample_records() -> Vec<Record> {
    vec![
        Record {
            id: 1,
            label: Some("root".into()),
            shape: Shape::Point,
            tags: vec![],
            parent: None,
        },
        Record {
            id: 2,
            label: None,
            shape: Shape::Circle { radius: 2.5 },
            tags: vec!["a".into(), "ünïcode".into()],
            parent: Some(Box::new(Parent {
                id: 1,
                shape: Shape::Poly(vec![(1, 2), (-3, 4)]),
                tags: vec!["x".into()],
            })),
        },
    ]
}

fn fill(b: &mut ArenaWriter) {
    b.put("map", &sample_map()).unwrap();
    b.put("records", &sample_records()).unwrap();
    b.put_slice(
        "weights",
        &(0..10_000).map(|i| i as f32 * 0.25).collect::<Vec<_>>(),
    )
    .unwrap();
    b.put_slice_with::<u64>("squares", 1000, |dst| {
        for (i, x) in dst.iter_mut().enumerate() {
            *x = (i * i) as u64;
        }
    })
    .unwrap();
    b.put_bytes("blob", b"\x00\x01binary\xff").unwrap();
    b.put("empty-vec", &Vec::<String>::new()).unwrap();
    b.put_slice::<u32>("empty-slice", &[]).unwrap();
    b.put_bytes("empty-bytes", &[]).unwrap();
    b.put("unit", &()).unwrap();
}

fn check(arena: &Arena) {
    let map = arena.get::<HashMap<String, Vec<u32>>>("map").unwrap();
    let want = sample_map();
    assert_eq!(map.len(), want.len());
    for (k, v) in &want {
        let got = map.get(k.as_str()).unwrap_or_else(|| panic!("missing {k}"));
        assert_eq!(got.iter().map(|x| x.to_native()).collect::<Vec<_>>(), *v);
    }
    assert!(map.get("absent").is_none());

    let records = arena.get::<Vec<Record>>("records").unwrap();
    let back: Vec<Record> = rkyv::deserialize::<_, rkyv::rancor::Error>(&*records).unwrap();
    assert_eq!(back, sample_records());

    let w = arena.slice::<f32>("weights").unwrap();
    assert_eq!(w.len(), 10_000);
    assert_eq!(w[4000], 1000.0);
    assert_eq!(
        w.as_ptr() as usize % 64,
        0,
        "POD entries are 64-byte aligned"
    );
    let sq = arena.slice::<u64>("squares").unwrap();
    assert_eq!(sq[999], 999 * 999);
    assert_eq!(&*arena.bytes("blob").unwrap(), b"\x00\x01binary\xff");
    assert!(arena.get::<Vec<String>>("empty-vec").unwrap().is_empty());
    assert!(arena.slice::<u32>("empty-slice").unwrap().is_empty());
    assert!(arena.bytes("empty-bytes").unwrap().is_empty());
    arena.get::<()>("unit").unwrap();
    arena.verify().unwrap();
    assert_eq!(arena.layout().entries.len(), 9);
}

#[test]
fn memfd_round_trip() {
    let scope = Scope::new();
    let mut b = ArenaOptions::new().create().unwrap();
    fill(&mut b);
    let arena = b.seal().unwrap();
    assert!(
        arena.is_kernel_sealed(),
        "an own sealed memfd skips validation"
    );
    check(&arena);
    // Another open of the same memfd through /proc sees the same arena.
    let shmarena::Locator::Memfd { pid, fd } = arena.locator().clone() else {
        panic!("not a memfd locator: {:?}", arena.locator())
    };
    let again = Arena::open_memfd(pid, fd).unwrap();
    assert_eq!(again.id(), arena.id());
    assert!(again.is_kernel_sealed());
    check(&again);
    scope.finish();
}

#[test]
fn named_round_trip_and_unlink_on_drop() {
    let scope = Scope::new();
    let name = scope.name("rt");
    let mut b = ArenaOptions::new().named(&name).create().unwrap();
    fill(&mut b);
    let arena = b.seal().unwrap();
    assert!(
        arena.is_kernel_sealed(),
        "the builder reads a sealed memfd copy of its named segment"
    );
    check(&arena);
    let copy = Arena::load_named(&format!("/{name}")).unwrap();
    assert_eq!(copy.id(), arena.id());
    check(&copy);
    drop(copy);
    // SAFETY: nothing writes to the segment while it is mapped here.
    let reader = unsafe { Arena::open_named(&format!("/{name}")) }.unwrap();
    assert_eq!(reader.id(), arena.id());
    check(&reader);
    drop(reader);
    assert_eq!(scope.leftover_segments().len(), 1, "a reader never unlinks");
    drop(arena);
    assert!(
        scope.leftover_segments().is_empty(),
        "the owner unlinks on drop"
    );
    scope.finish();
}

#[test]
fn named_persist_keeps_the_segment() {
    let scope = Scope::new();
    let name = scope.name("persist");
    let mut b = ArenaOptions::new().named(&name).create().unwrap();
    b.put_slice("x", &[1u8, 2, 3]).unwrap();
    let arena = b.seal().unwrap();
    arena.persist();
    let id = arena.id();
    drop(arena);
    let again = Arena::load_named(&name).unwrap();
    assert_eq!(again.id(), id);
    assert_eq!(&*again.slice::<u8>("x").unwrap(), &[1, 2, 3]);
    drop(again);
    std::fs::remove_file(format!("/dev/shm/{name}")).unwrap();
    scope.finish();
}

#[test]
fn file_round_trip() {
    let scope = Scope::new();
    let path = scope.path("data.arena");
    let mut b = ArenaOptions::new().file(&path).create().unwrap();
    fill(&mut b);
    assert!(!path.exists(), "the final path appears only when sealed");
    let arena = b.seal().unwrap();
    check(&arena);
    drop(arena);
    // A copy of the image elsewhere is the same arena.
    let copy = scope.path("copy.arena");
    std::fs::copy(&path, &copy).unwrap();
    let opened = Arena::load_file(&copy).unwrap();
    check(&opened);
    drop(opened);
    // Refuses to replace an existing file unless asked to.
    let err = ArenaOptions::new().file(&path).create().unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let mut b = ArenaOptions::new()
        .file(&path)
        .overwrite(true)
        .create()
        .unwrap();
    b.put_bytes("only", b"new").unwrap();
    let arena = b.seal().unwrap();
    assert_eq!(arena.layout().entries.len(), 1);
    drop(arena);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&copy).unwrap();
    scope.finish();
}

#[test]
fn dropped_builders_leave_nothing() {
    let scope = Scope::new();
    let name = scope.name("drop");
    let mut b = ArenaOptions::new().named(&name).create().unwrap();
    b.put_slice("x", &[0u64; 1000]).unwrap();
    assert_eq!(scope.leftover_segments(), vec![name.clone()]);
    // While building, a reader is refused.
    let err = Arena::load_named(&name).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Format {
                source: FormatError::StillBuilding,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&name), "{err}");
    drop(b);
    let mut b = ArenaOptions::new()
        .file(scope.path("f.arena"))
        .create()
        .unwrap();
    b.put_slice("x", &[0u64; 1000]).unwrap();
    drop(b);
    drop(ArenaOptions::new().create().unwrap());
    scope.finish();
}

#[test]
fn many_entries_and_growth() {
    let scope = Scope::new();
    // Start tiny so the segment has to grow many times, across rkyv and POD entries.
    let mut b = ArenaOptions::new().capacity(4096).create().unwrap();
    for i in 0..2000u32 {
        if i % 2 == 0 {
            b.put(
                &format!("s{i}"),
                &format!("value {i}").repeat(i as usize % 50),
            )
            .unwrap();
        } else {
            b.put_slice(&format!("p{i}"), &vec![i; i as usize]).unwrap();
        }
    }
    let arena = b.seal().unwrap();
    for i in (0..2000u32).step_by(7) {
        if i % 2 == 0 {
            let s = arena.get::<String>(&format!("s{i}")).unwrap();
            assert_eq!(s.as_str(), format!("value {i}").repeat(i as usize % 50));
        } else {
            let p = arena.slice::<u32>(&format!("p{i}")).unwrap();
            assert_eq!(p.len(), i as usize);
            assert!(p.iter().all(|x| *x == i));
        }
    }
    arena.verify().unwrap();
    scope.finish();
}

#[test]
fn views_outlive_the_arena_handle() {
    let mut b = ArenaOptions::new().create().unwrap();
    b.put("v", &vec![String::from("kept alive")]).unwrap();
    b.put_slice("s", &[7u16; 3]).unwrap();
    let arena = b.seal().unwrap();
    let v = arena.get::<Vec<String>>("v").unwrap();
    let s = arena.slice::<u16>("s").unwrap();
    drop(arena);
    // The views hold the mapping.
    assert_eq!(v[0].as_str(), "kept alive");
    assert_eq!(&*s, &[7, 7, 7]);
    // And they can move to other threads.
    let t = std::thread::spawn(move || (v[0].len(), s.iter().map(|x| *x as u32).sum::<u32>()));
    assert_eq!(t.join().unwrap(), (10, 21));
}

#[test]
fn validation_is_cached_per_entry() {
    let scope = Scope::new();
    let name = scope.name("cache");
    let mut b = ArenaOptions::new().named(&name).create().unwrap();
    b.put("m", &sample_map()).unwrap();
    let arena = b.seal().unwrap();
    for _ in 0..3 {
        let m = arena.get::<HashMap<String, Vec<u32>>>("m").unwrap();
        assert_eq!(m.len(), 500);
    }
    drop(arena);
    scope.finish();
}

#[test]
fn always_validate_option_reads_the_same() {
    let mut b = ArenaOptions::new().create().unwrap();
    b.put("m", &sample_map()).unwrap();
    let arena = b.seal().unwrap();
    let shmarena::Locator::Memfd { pid, fd } = arena.locator().clone() else {
        unreachable!()
    };
    let checked = shmarena::OpenOptions::new()
        .always_validate(true)
        .open_memfd(pid, fd)
        .unwrap();
    assert_eq!(
        checked.get::<HashMap<String, Vec<u32>>>("m").unwrap().len(),
        500
    );
}
