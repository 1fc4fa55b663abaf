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

/// The numpy dtype string of a POD or bytes entry, from its primitive (docs/FORMAT.md, "Element
/// types"), never from its type name, except for an opaque element (`prim` 0): the dtype after
/// `numpy:` in the type name if it has that prefix, else `|V<elem_size>`.
///
/// `Ok(None)`: no numpy dtype on this machine (a little-endian primitive on a big-endian one).
/// `Err`: the entry is corrupt (a `numpy:` type name whose dtype breaks the grammar or whose
/// element size is not the entry's).
pub(crate) fn of_entry(e: &Entry) -> Result<Option<String>, String> {
    if e.kind == Kind::Bytes {
        return Ok(Some("|u1".into()));
    }
    let s = match e.prim {
        Prim::Opaque => match e.type_name.strip_prefix(NUMPY_PREFIX) {
            Some(d) => match parse(d) {
                Some(size) if size as u64 == e.elem_size => d.to_owned(),
                Some(size) => {
                    return Err(format!(
                        "type name {:?} names elements of {size} bytes, the entry's are {}",
                        e.type_name, e.elem_size
                    ))
                }
                None => {
                    return Err(format!(
                        "type name {:?} does not name a dtype shmarena stores",
                        e.type_name
                    ))
                }
            },
            None => format!("|V{}", e.elem_size),
        },
        Prim::DateTime64 | Prim::TimeDelta64 => {
            let kind = if e.prim == Prim::DateTime64 { 'M' } else { 'm' };
            match TIME_UNITS.get(usize::from(e.prim_arg)) {
                Some(&"generic") => format!("<{kind}8"),
                Some(unit) => format!("<{kind}8[{unit}]"),
                None => return Err(format!("time unit {} is unknown", e.prim_arg)),
            }
        }
        Prim::FixedBytes => format!("|S{}", e.elem_size),
        Prim::FixedUnicode => format!("<U{}", e.elem_size / 4),
        p => match FIXED.iter().find(|(q, _)| *q == p) {
            Some((_, d)) => (*d).to_owned(),
            None => return Ok(None),
        },
    };
    Ok(native(&s).then_some(s))
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

/// numpy's largest array size in bytes (`npy_intp`'s maximum on a 64-bit machine).
pub(crate) const MAX_NBYTES: u64 = i64::MAX as u64;

/// Largest datetime unit multiplier numpy reads (a C `int`).
const MAX_MULTIPLIER: u64 = i32::MAX as u64;

/// A decimal without leading zeros (`1`, `10`, not `01` or `0`), at most `max`.
fn positive(digits: &str, max: u64) -> Option<u64> {
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().filter(|n| *n <= max)
}

/// The element size of a dtype string that follows docs/VALUES.md's grammar ("dtype strings"),
/// or `None` if it does not: numpy's `dtype.str` of a little-endian array of a dtype the
/// bindings store.
///
/// ```text
/// dtype := "|b1" | "|i1" | "|u1" | "<i" N | "<u" N        N  = 2 | 4 | 8
///        | "<f" F | "<c" C                                F  = 2 | 4 | 8 | 16, C = 8 | 16 | 32
///        | "<M8" [unit] | "<m8" [unit]                    unit = "[" [mult] U "]"
///        | "|S" n | "<U" n
/// ```
pub(crate) fn parse(dtype: &str) -> Option<usize> {
    match dtype {
        "|b1" | "|i1" | "|u1" => return Some(1),
        "<i2" | "<u2" | "<f2" => return Some(2),
        "<i4" | "<u4" | "<f4" => return Some(4),
        "<i8" | "<u8" | "<f8" | "<c8" => return Some(8),
        "<f16" | "<c16" => return Some(16),
        "<c32" => return Some(32),
        "<M8" | "<m8" => return Some(8),
        _ => {}
    }
    if let Some(n) = dtype.strip_prefix("|S") {
        return positive(n, MAX_MULTIPLIER).map(|n| n as usize);
    }
    if let Some(n) = dtype.strip_prefix("<U") {
        return positive(n, MAX_MULTIPLIER / 4).map(|n| 4 * n as usize);
    }
    let unit = dtype
        .strip_prefix("<M8[")
        .or_else(|| dtype.strip_prefix("<m8["))?
        .strip_suffix(']')?;
    let split = unit
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(unit.len());
    let (mult, unit) = unit.split_at(split);
    if !mult.is_empty() && positive(mult, MAX_MULTIPLIER).is_none_or(|m| m < 2) {
        return None;
    }
    (unit != "generic" && TIME_UNITS.contains(&unit)).then_some(8)
}

/// Checks an array against docs/VALUES.md's array rules, in their order: the dtype string
/// follows the grammar (A1); the product of the non-zero dimensions times the element size is
/// at most [`MAX_NBYTES`] (A2, whatever the order of the dimensions); the product of all
/// dimensions times the element size is the data's length (A3). Returns the shape, or why the
/// array is corrupt.
pub(crate) fn check_array(dtype: &str, shape: &[u64], len: u64) -> Result<Vec<usize>, String> {
    let size =
        parse(dtype).ok_or_else(|| format!("dtype {dtype:?} is not a dtype shmarena stores"))?;
    let mut nbytes = size as u64;
    let mut empty = false;
    for &d in shape {
        if d == 0 {
            empty = true;
            continue;
        }
        nbytes = nbytes
            .checked_mul(d)
            .filter(|n| *n <= MAX_NBYTES)
            .ok_or_else(|| format!("shape {shape:?} of {dtype} is larger than numpy's limit"))?;
    }
    let nbytes = if empty { 0 } else { nbytes };
    if nbytes != len {
        return Err(format!(
            "shape {shape:?} of {dtype} needs {nbytes} bytes, the data has {len}"
        ));
    }
    shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d} does not fit")))
        .collect()
}
