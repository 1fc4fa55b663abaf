//! Every typed read of one arena entry, each value a read returns touched in full: the one list
//! of reads that the fuzz target (`read_everything` in `fuzz/src/lib.rs`) and the deterministic
//! corruption suite (`crates/shmarena/tests/corruption.rs`) run
//! on damaged arenas. Each read's outcome goes to a callback, which decides what an error means.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;

use shmarena::{bytemuck, Arena, Result};

/// Runs every read on entry `name`, passing each outcome (after touching the value) to `note`.
///
/// With `hash_lookups`, the hash map reads also look keys up (`get`, `contains_key`). The fuzz
/// target leaves those out: on a crafted table that rkyv 0.8.18 validates they can probe
/// forever (a known upstream limitation the fuzzer found; see the ignored
/// `validated_hash_map_lookups_terminate` in the corruption suite). The corruption suite's
/// deterministic damage builds no such table, so it keeps the lookups. Iteration is bounded by
/// the validated length and is always done.
pub fn read_entry(arena: &Arena, name: &str, hash_lookups: bool, note: &mut dyn FnMut(Result<()>)) {
    note(touched(arena.bytes(name), |b| {
        black_box(b.iter().fold(0u8, |a, b| a ^ b));
    }));
    note(pod::<u8>(arena, name));
    note(pod::<u16>(arena, name));
    note(pod::<u32>(arena, name));
    note(pod::<u64>(arena, name));
    note(pod::<i32>(arena, name));
    note(pod::<i64>(arena, name));
    note(pod::<f32>(arena, name));
    note(pod::<f64>(arena, name));
    note(pod::<[f32; 3]>(arena, name));
    note(touched(arena.get::<HashMap<String, u32>>(name), |m| {
        let mut n = 0u32;
        for (k, v) in m.iter() {
            n = n.wrapping_add(v.to_native());
            black_box(k.as_str());
            if hash_lookups {
                black_box(m.get(k.as_str()));
            }
        }
        black_box(n);
        if hash_lookups {
            black_box(m.get("absent"));
        }
    }));
    note(touched(
        arena.get::<HashMap<String, Vec<String>>>(name),
        |m| {
            for (k, v) in m.iter() {
                black_box((k.as_str(), v.iter().map(|s| s.len()).sum::<usize>()));
                if hash_lookups {
                    black_box(m.contains_key(k.as_str()));
                }
            }
        },
    ));
    note(touched(arena.get::<Vec<String>>(name), |v| {
        black_box(v.iter().map(|s| s.as_str().len()).sum::<usize>());
    }));
    note(touched(arena.get::<String>(name), |s| {
        black_box(s.as_str());
    }));
    note(touched(arena.get::<BTreeMap<u32, String>>(name), |m| {
        for (k, v) in m.iter() {
            black_box((k.to_native(), v.as_str()));
        }
        black_box(m.get(&7u32.into()));
    }));
    note(touched(arena.get::<Option<(u64, f64)>>(name), |v| {
        black_box(v.as_ref().map(|t| (t.0.to_native(), t.1.to_native())));
    }));
    note(touched(arena.get::<Vec<u32>>(name), |v| {
        black_box(v.iter().map(|x| x.to_native()).fold(0, u32::wrapping_add));
    }));
}

/// A `[T]` read: folds every element's bytes so the whole slice is touched.
pub fn pod<T: bytemuck::Pod>(arena: &Arena, name: &str) -> Result<()> {
    touched(arena.slice::<T>(name), |s| {
        let bytes: &[u8] = bytemuck::cast_slice(s);
        black_box(bytes.iter().fold(0u8, |a, b| a ^ b));
    })
}

/// `read` with its value, if any, passed to `touch` and dropped.
pub fn touched<T>(read: Result<T>, touch: impl FnOnce(&T)) -> Result<()> {
    read.map(|v| touch(&v))
}
