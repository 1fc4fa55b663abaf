//! Arbitrary bytes as an arena: through `shmarena::format` (as given, and with the header and
//! table-of-contents checksums recomputed so the structural checks are reached), and through
//! `Arena::open` of a real file (a checked copy) with typed reads of every entry. Nothing may
//! panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmarena_fuzz::check_all(data);
});
