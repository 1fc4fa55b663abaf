//! numpy dtype strings of the format's POD element types, both ways: `put_array` storing a
//! typed entry, and reading a POD entry (written from Python or Rust) as a numpy array.
//!
//! docs/FORMAT.md "Element types" is the table: every numpy dtype `put_array` accepts has a
//! primitive, except a few (`longdouble`, `clongdouble`, datetimes with a unit multiplier such
//! as `M8[10s]`), which are stored as opaque elements whose type name is `numpy:` followed by
//! `dtype.str` ([`NUMPY_PREFIX`]).

use shmarena::format::{Entry, Kind, Prim, TIME_UNITS};

/// Type-name prefix of opaque POD entries that hold a numpy dtype with no primitive.
pub(crate) const NUMPY_PREFIX: &str = "numpy:";

/// The Rust primitives and numpy's `dtype.str` for them in little-endian order.
const FIXED: [(Prim, &str); 14] = [
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
    (Prim::Bool, "|b1"),
    (Prim::F16, "<f2"),
    (Prim::C64, "<c8"),
    (Prim::C128, "<c16"),
];

/// Whether a dtype string holds on this machine: all on a little-endian one, only the
/// single-byte (`|`) ones elsewhere.
fn native(dtype: &str) -> bool {
    cfg!(target_endian = "little") || dtype.starts_with('|')
}

/// How a numpy dtype is stored: `(primitive, its parameter, element size)`, or `None` for a
/// dtype with no primitive (stored opaque, see [`NUMPY_PREFIX`]).
pub(crate) fn prim_of(dtype: &str) -> Option<(Prim, u8, usize)> {
    if !native(dtype) {
        return None;
    }
    if let Some((p, d)) = FIXED.iter().find(|(_, d)| *d == dtype) {
        let size = d[2..].parse().ok()?;
        return Some((*p, 0, size));
    }
    let (order, rest) = dtype.split_at_checked(1)?;
    let (kind, rest) = rest.split_at_checked(1)?;
    let (digits, unit) = match rest.split_once('[') {
        Some((d, u)) => (d, u.strip_suffix(']')?),
        None => (rest, ""),
    };
    let n: usize = digits.parse().ok()?;
    match (order, kind) {
        ("<" | "=", "M" | "m") if n == 8 => {
            let unit = if unit.is_empty() { "generic" } else { unit };
            let code = TIME_UNITS.iter().position(|u| *u == unit)?;
            let prim = if kind == "M" {
                Prim::DateTime64
            } else {
                Prim::TimeDelta64
            };
            Some((prim, code as u8, 8))
        }
        ("|", "S") if n >= 1 && unit.is_empty() => Some((Prim::FixedBytes, 0, n)),
        ("<" | "=", "U") if n >= 1 && unit.is_empty() => Some((Prim::FixedUnicode, 0, 4 * n)),
        _ => None,
    }
}

/// The numpy dtype string of a POD or bytes entry, if it has one on this machine.
pub(crate) fn of_entry(e: &Entry) -> Option<String> {
    if e.kind == Kind::Bytes {
        return Some("|u1".into());
    }
    let s = match e.prim {
        Prim::Opaque => e.type_name.strip_prefix(NUMPY_PREFIX)?.to_owned(),
        Prim::DateTime64 | Prim::TimeDelta64 => {
            let kind = if e.prim == Prim::DateTime64 { 'M' } else { 'm' };
            match *TIME_UNITS.get(usize::from(e.prim_arg))? {
                "generic" => format!("<{kind}8"),
                unit => format!("<{kind}8[{unit}]"),
            }
        }
        Prim::FixedBytes => format!("|S{}", e.elem_size),
        Prim::FixedUnicode => format!("<U{}", e.elem_size / 4),
        p => FIXED.iter().find(|(q, _)| *q == p)?.1.to_owned(),
    };
    native(&s).then_some(s)
}

/// Bytes of one element of a numpy dtype string (`<f16` 16, `<U3` 12, `<M8[10s]` 8).
pub(crate) fn itemsize(dtype: &str) -> Option<usize> {
    let rest = dtype.get(2..)?;
    let digits = rest.split('[').next()?;
    let n: usize = digits.parse().ok()?;
    Some(if dtype.get(1..2) == Some("U") {
        4 * n
    } else {
        n
    })
}
