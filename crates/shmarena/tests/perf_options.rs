//! `ArenaWriter::put_unvalidated` and `release_free_memory` (issue 14).

use std::collections::HashMap;
use std::os::fd::AsFd;

use shmarena::{Arena, ArenaOptions};

#[test]
fn an_unvalidated_entry_is_not_marked_validated_and_reads_back() {
    let map: HashMap<String, u32> = (0..1000).map(|i| (format!("k{i}"), i)).collect();
    let mut b = ArenaOptions::new().create().unwrap();
    b.put("checked", &map).unwrap();
    b.put_unvalidated("unchecked", &map).unwrap();
    // The flag is restored after the call.
    b.put("checked2", &vec![1u32, 2, 3]).unwrap();
    let arena = b.seal().unwrap();
    let layout = arena.layout();
    let flag = |name: &str| {
        layout
            .entries
            .iter()
            .find(|e| e.name == name)
            .unwrap()
            .validated_at_build()
    };
    assert!(flag("checked"));
    assert!(!flag("unchecked"));
    assert!(flag("checked2"));
    let got = arena.get::<HashMap<String, u32>>("unchecked").unwrap();
    assert_eq!(got.get("k7").map(|v| v.to_native()), Some(7));
    // And through a fresh open of the sealed memfd, which validates it on first access.
    let again = Arena::open_fd(arena.as_fd().try_clone_to_owned().unwrap()).unwrap();
    assert_eq!(
        again
            .get::<HashMap<String, u32>>("unchecked")
            .unwrap()
            .len(),
        1000
    );
}

#[test]
fn release_free_memory_can_be_called_any_time() {
    let big: Vec<String> = (0..200_000).map(|i| format!("string number {i}")).collect();
    drop(big);
    // Whether glibc had pages to give back depends on the heap's layout; it must not fail.
    let _ = shmarena::release_free_memory();
    let _ = shmarena::release_free_memory();
}
