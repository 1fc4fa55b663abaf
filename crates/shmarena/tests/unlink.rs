//! `Arena::unlink`: the builder's process removes a named segment's name early; readers and
//! other backings are unaffected.

mod common;

use common::Scope;

#[test]
fn owner_unlinks_once_and_mappings_stay_readable() {
    let scope = Scope::new();
    let name = scope.name("u");
    let mut b = shmarena::ArenaOptions::new().named(&name).create().unwrap();
    b.put_slice("xs", &[1u32, 2, 3]).unwrap();
    let arena = b.seal().unwrap();
    // SAFETY: nothing writes to the segment while it is mapped here.
    let reader = unsafe { shmarena::Arena::open_named(&name) }.unwrap();
    // A reader never unlinks: it is told so (Arena::remove_named would).
    assert!(matches!(
        reader.unlink(),
        Err(shmarena::Error::NotBuilder { .. })
    ));
    assert!(shmarena::Arena::load_named(&name).is_ok());
    // The owner does, once.
    assert!(arena.unlink().unwrap());
    assert!(!arena.unlink().unwrap());
    assert!(matches!(
        shmarena::Arena::load_named(&name),
        Err(shmarena::Error::NotFound { .. })
    ));
    assert_eq!(&*arena.slice::<u32>("xs").unwrap(), &[1, 2, 3]);
    assert_eq!(&*reader.slice::<u32>("xs").unwrap(), &[1, 2, 3]);
    // A segment made later under the same name is not unlinked by the old arena's drop.
    let mut b2 = shmarena::ArenaOptions::new().named(&name).create().unwrap();
    b2.put_slice("ys", &[4u8]).unwrap();
    let second = b2.seal().unwrap();
    drop(arena);
    drop(reader);
    assert!(shmarena::Arena::load_named(&name).is_ok());
    drop(second);
    scope.finish();
}

#[test]
fn unlink_is_a_no_op_for_memfd_and_file_arenas() {
    let scope = Scope::new();
    let mut b = shmarena::ArenaOptions::new().create().unwrap();
    b.put_bytes("b", b"x").unwrap();
    assert!(!b.seal().unwrap().unlink().unwrap());
    let path = scope.path("a.arena");
    let mut b = shmarena::ArenaOptions::new().file(&path).create().unwrap();
    b.put_bytes("b", b"x").unwrap();
    let arena = b.seal().unwrap();
    assert!(!arena.unlink().unwrap());
    assert!(path.exists());
    drop(arena);
    std::fs::remove_file(&path).unwrap();
    scope.finish();
}
