//! numpy dtype strings of the library's POD primitives: one table for both directions
//! (`put_array` storing a typed entry, and reading a typed entry written from Rust).

use shmarena::format::Prim;

/// Each primitive and numpy's `dtype.str` for it in little-endian order.
const TABLE: [(Prim, &str); 10] = [
    (Prim::U8, "|u1"),
    (Prim::I8, "|i1"),
    (Prim::U16, "<u2"),
    (Prim::I16, "<i2"),
    (Prim::U32, "<u4"),
    (Prim::I32, "<i4"),
    (Prim::U64, "<u8"),
    (Prim::I64, "<i8"),
    (Prim::F32, "<f4"),
    (Prim::F64, "<f8"),
];

/// The table's rows that hold on this machine: all of them on a little-endian one, only the
/// single-byte ones elsewhere.
fn native() -> impl Iterator<Item = (Prim, &'static str)> {
    TABLE
        .into_iter()
        .filter(|(_, d)| cfg!(target_endian = "little") || d.starts_with('|'))
}

/// The numpy dtype of a primitive, if it has one in native byte order.
pub(crate) fn of_prim(p: Prim) -> Option<&'static str> {
    native().find(|(q, _)| *q == p).map(|(_, d)| d)
}

/// The primitive a numpy dtype string stands for, if any.
pub(crate) fn prim_of(dtype: &str) -> Option<Prim> {
    native().find(|(_, d)| *d == dtype).map(|(p, _)| p)
}
