//! Archived values that nest deeper than `shmarena::MAX_NESTING` are refused with a typed error,
//! at `put` and on every read, instead of overflowing the stack of the thread that validates
//! them (bytecheck checks by recursion, one stack level a nesting level).

use std::os::fd::AsFd;

use shmarena::rkyv::{Archive, Serialize};
use shmarena::{ArenaOptions, Error, MAX_NESTING};

/// A value whose nesting is its length: each link is a pointer inside the previous one.
/// (A recursive type: rkyv needs the bounds spelled out, as in its own recursive example.)
#[derive(Archive, Serialize)]
#[rkyv(
    crate = shmarena::rkyv,
    serialize_bounds(
        __S: shmarena::rkyv::ser::Writer + shmarena::rkyv::ser::Allocator,
        __S::Error: shmarena::rkyv::rancor::Source,
    ),
    bytecheck(bounds(
        __C: shmarena::rkyv::validation::ArchiveContext,
        __C::Error: shmarena::rkyv::rancor::Source,
    )),
)]
struct Chain {
    #[rkyv(omit_bounds)]
    next: Option<Box<Chain>>,
}

/// A chain of `links` links, built (and later dropped) iteratively.
fn chain(links: usize) -> Chain {
    let mut head = Chain { next: None };
    for _ in 1..links {
        head = Chain {
            next: Some(Box::new(head)),
        };
    }
    head
}

/// Drops a chain without recursing (the derived drop recurses once a link).
fn drop_chain(mut head: Chain) {
    while let Some(next) = head.next.take() {
        head = *next;
    }
}

/// Runs `f` in a thread with a stack of `bytes` (serializing a deep value recurses too).
fn with_stack<R: Send + 'static>(bytes: usize, f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new()
        .stack_size(bytes)
        .spawn(f)
        .expect("a thread")
        .join()
        .expect("the thread did not panic")
}

#[test]
fn a_value_at_the_nesting_bound_is_written_and_read_in_a_small_stack() {
    // The deepest value `put` accepts validates within the 2 MiB stack of a default thread,
    // in a debug build, at build and on a read.
    with_stack(2 << 20, || {
        let value = chain(MAX_NESTING);
        let mut b = ArenaOptions::new().create().unwrap();
        b.put("chain", &value).unwrap();
        drop_chain(value);
        let arena = b.seal().unwrap();
        let reopened =
            shmarena::Arena::open_fd(arena.as_fd().try_clone_to_owned().unwrap()).unwrap();
        let mut links = 0;
        let mut at = Some(&*reopened.get::<Chain>("chain").unwrap());
        while let Some(link) = at {
            links += 1;
            at = link.next.as_ref().map(|b| b.get());
        }
        assert_eq!(links, MAX_NESTING);
    });
}

#[test]
fn put_refuses_a_value_nested_past_the_bound() {
    let value = chain(MAX_NESTING + 2);
    let mut b = ArenaOptions::new().create().unwrap();
    match b.put("chain", &value) {
        Err(Error::Serialize { entry, message }) => {
            assert_eq!(entry, "chain");
            assert!(message.contains("does not validate"), "{message}");
        }
        other => panic!("expected a serialize error, got {:?}", other.map(|_| ())),
    }
    drop_chain(value);
}

#[test]
fn a_forged_deep_value_is_a_typed_error_not_a_stack_overflow() {
    // Bytes that nest 200,000 levels deep (written without the build-time check, as a forger
    // would write them): a reader in a default 2 MiB thread gets `Corrupted`.
    let arena = with_stack(256 << 20, || {
        let value = chain(200_000);
        let mut b = ArenaOptions::new().create().unwrap();
        b.put_unvalidated("chain", &value).unwrap();
        drop_chain(value);
        b.seal().unwrap()
    });
    let fd = arena.as_fd().try_clone_to_owned().unwrap();
    let got = with_stack(2 << 20, move || {
        let reader = shmarena::Arena::open_fd(fd).unwrap();
        reader
            .get::<Chain>("chain")
            .map(|_| ())
            .map_err(|e| shmarena::error_chain(&e))
    });
    let err = got.expect_err("a value nested 200,000 deep must be refused");
    assert!(err.contains("does not validate"), "{err}");
}
