//! `dump`: the elements of a POD entry, or a hex dump with the rkyv root marked, or raw bytes.

use std::io::Write;
use std::ops::Range;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;
use shmarena::format::{Entry, Kind, Prim};

use crate::output::Table;

/// Elements shown when no `--range` is given.
const DEFAULT_ELEMENTS: u64 = 100;
/// Bytes shown in a hex dump when no `--range` is given.
const DEFAULT_BYTES: u64 = 512;

#[derive(clap::Args, Debug)]
pub(crate) struct DumpArgs {
    /// The arena (see "Naming an arena" in `arena-inspect --help`).
    arena: String,
    /// The entry's name (optional when ARENA is a handle string: then the entry it names).
    entry: Option<String>,
    /// Which part to show: `a..b`, `a..`, `..b`, `..` (all) or `a` (one). In elements for a POD
    /// entry of a primitive type, in bytes otherwise. Default: the first 100 elements, or 512
    /// bytes (for an archived entry the last 512, where rkyv puts the root); `--raw` defaults to
    /// everything.
    #[arg(long, value_name = "A..B")]
    range: Option<String>,
    /// How to print the elements of a POD entry (`json` also applies to hex dumps).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write the bytes unchanged to stdout (redirect it to a file).
    #[arg(long, conflicts_with = "format")]
    raw: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// Aligned columns.
    Table,
    /// `index,value` lines with a header.
    Csv,
    /// One JSON object.
    Json,
}

/// One element of a primitive POD entry.
#[derive(Serialize, Clone, Debug)]
#[serde(untagged)]
enum Num {
    U(u64),
    I(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    /// Complex numbers (`1.5+2j`), NaT, and the fixed-width strings.
    Text(String),
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::U(v) => write!(f, "{v}"),
            Num::I(v) => write!(f, "{v}"),
            Num::F32(v) => write!(f, "{v}"),
            Num::F64(v) => write!(f, "{v}"),
            Num::Bool(v) => write!(f, "{v}"),
            Num::Text(v) => write!(f, "{v}"),
        }
    }
}

/// Decodes one element; `None` for a primitive this build does not know.
fn decode(prim: Prim, b: &[u8]) -> Option<Num> {
    // The header check guarantees the arena has this machine's byte order.
    Some(match prim {
        Prim::U8 => Num::U(u64::from(b[0])),
        Prim::U16 => Num::U(u64::from(u16::from_ne_bytes(b.try_into().ok()?))),
        Prim::U32 => Num::U(u64::from(u32::from_ne_bytes(b.try_into().ok()?))),
        Prim::U64 => Num::U(u64::from_ne_bytes(b.try_into().ok()?)),
        Prim::I8 => Num::I(i64::from(i8::from_ne_bytes(b.try_into().ok()?))),
        Prim::I16 => Num::I(i64::from(i16::from_ne_bytes(b.try_into().ok()?))),
        Prim::I32 => Num::I(i64::from(i32::from_ne_bytes(b.try_into().ok()?))),
        Prim::I64 => Num::I(i64::from_ne_bytes(b.try_into().ok()?)),
        Prim::F32 => Num::F32(f32::from_ne_bytes(b.try_into().ok()?)),
        Prim::F64 => Num::F64(f64::from_ne_bytes(b.try_into().ok()?)),
        Prim::Bool => Num::Bool(b[0] != 0),
        Prim::F16 => Num::F32(f16_to_f32(u16::from_ne_bytes(b.try_into().ok()?))),
        Prim::C64 => {
            let re = f32::from_ne_bytes(b[..4].try_into().ok()?);
            let im = f32::from_ne_bytes(b[4..].try_into().ok()?);
            Num::Text(format!("{re}{im:+}j"))
        }
        Prim::C128 => {
            let re = f64::from_ne_bytes(b[..8].try_into().ok()?);
            let im = f64::from_ne_bytes(b[8..].try_into().ok()?);
            Num::Text(format!("{re}{im:+}j"))
        }
        Prim::DateTime64 | Prim::TimeDelta64 => match i64::from_ne_bytes(b.try_into().ok()?) {
            i64::MIN => Num::Text("NaT".into()),
            v => Num::I(v),
        },
        Prim::FixedBytes => {
            let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
            Num::Text(String::from_utf8_lossy(&b[..end]).into_owned())
        }
        Prim::FixedUnicode => Num::Text(
            b.chunks_exact(4)
                .map(|c| u32::from_ne_bytes(c.try_into().expect("4 bytes")))
                .take_while(|&c| c != 0)
                .map(|c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect(),
        ),
        _ => return None,
    })
}

/// An IEEE 754 binary16 value as an `f32` (exact: every half is an `f32`).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 if frac == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Parses `a..b`, `a..`, `..b`, `..` or `a` against a length; the end is clamped to `len`.
fn parse_range(spec: &str, len: u64) -> Result<Range<u64>> {
    let num = |s: &str, what: &str| -> Result<u64> {
        s.trim()
            .parse()
            .with_context(|| format!("bad range {spec:?}: {what} {s:?} is not a number"))
    };
    let (start, end) = match spec.split_once("..") {
        Some((a, b)) => (
            if a.is_empty() { 0 } else { num(a, "start")? },
            if b.is_empty() { len } else { num(b, "end")? },
        ),
        None => {
            let a = num(spec, "index")?;
            (a, a.saturating_add(1))
        }
    };
    if start > len || (start == len && end > start) {
        bail!("bad range {spec:?}: it starts past the end ({len})");
    }
    if start > end {
        bail!("bad range {spec:?}: it starts after it ends");
    }
    Ok(start..end.min(len))
}

/// The default hex window: everything if small, else the first bytes, or for an archived entry
/// the last bytes (rkyv writes the root last).
fn default_hex_window(e: &Entry) -> Range<u64> {
    if e.len <= DEFAULT_BYTES {
        return 0..e.len;
    }
    if e.kind == Kind::Archived {
        let end = e.len;
        let start = (end - DEFAULT_BYTES) & !15;
        start..end
    } else {
        0..DEFAULT_BYTES
    }
}

pub(crate) fn dump(args: &DumpArgs, json: bool, out: &mut dyn Write) -> Result<i32> {
    let target = crate::arena::target(&args.arena)?;
    let arena = crate::arena::open(target.locator(), &args.arena)?;
    let arena = crate::arena::check_handle(arena, &target)?;
    let wanted = match (&args.entry, target.handle()) {
        (Some(name), _) => name.clone(),
        (None, Some(h)) => arena
            .layout()
            .entries
            .get(h.entry_index() as usize)
            .map(|e| e.name.clone())
            .with_context(|| {
                format!(
                    "the handle names entry #{}, but {} has only {} entries",
                    h.entry_index(),
                    arena.locator().describe(),
                    arena.layout().entries.len()
                )
            })?,
        (None, None) => bail!("name the entry to dump: arena-inspect dump ARENA ENTRY"),
    };
    let Some((_, entry)) = arena.layout().find(&wanted) else {
        let names: Vec<&str> = arena.layout().names().collect();
        bail!(
            "{} has no entry {:?}; its entries are: {}",
            args.arena,
            wanted,
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    let payload = &arena.as_bytes()[entry.range()];
    let elem = match entry.kind {
        Kind::Pod if entry.prim != Prim::Opaque && entry.prim.fits(entry.elem_size) => {
            Some(entry.elem_size as usize)
        }
        _ => None,
    };
    let format = if json { Format::Json } else { args.format };

    if args.raw {
        let bytes = match (elem, &args.range) {
            (_, None) => 0..entry.len,
            (Some(size), Some(r)) => {
                let r = parse_range(r, entry.count)?;
                r.start * size as u64..r.end * size as u64
            }
            (None, Some(r)) => parse_range(r, entry.len)?,
        };
        out.write_all(&payload[bytes.start as usize..bytes.end as usize])?;
        return Ok(0);
    }

    match elem {
        Some(size) => dump_elements(args, entry, payload, size, format, out),
        None => {
            if format == Format::Csv {
                bail!(
                    "--format csv needs a POD entry of a primitive type; {:?} is {} {}",
                    entry.name,
                    entry.kind,
                    entry.type_name
                );
            }
            dump_hex(args, entry, payload, format, out)
        }
    }
}

fn note_window(shown: &Range<u64>, total: u64, unit: &str, given: bool) {
    if !given && (shown.start != 0 || shown.end != total) {
        eprintln!(
            "arena-inspect: showing {unit} {}..{} of {total}; use --range (`--range ..` for all)",
            shown.start, shown.end
        );
    }
}

fn dump_elements(
    args: &DumpArgs,
    entry: &Entry,
    payload: &[u8],
    size: usize,
    format: Format,
    out: &mut dyn Write,
) -> Result<i32> {
    let range = match &args.range {
        Some(r) => parse_range(r, entry.count)?,
        None => 0..entry.count.min(DEFAULT_ELEMENTS),
    };
    note_window(&range, entry.count, "elements", args.range.is_some());
    let bytes = &payload[range.start as usize * size..range.end as usize * size];
    let values = bytes
        .chunks_exact(size)
        .map(|b| decode(entry.prim, b))
        .collect::<Option<Vec<Num>>>()
        .context("unknown primitive type")?;
    match format {
        Format::Json => {
            let v = json!({
                "arena": args.arena,
                "entry": entry.name,
                "type": entry.dtype_name(),
                "shape": entry.dims(),
                "count": entry.count,
                "start": range.start,
                "end": range.end,
                "values": values,
            });
            serde_json::to_writer(&mut *out, &v)?;
            writeln!(out)?;
        }
        Format::Csv => {
            writeln!(out, "index,value")?;
            for (i, v) in (range.start..).zip(&values) {
                writeln!(out, "{i},{v}")?;
            }
        }
        Format::Table => {
            writeln!(
                out,
                "entry {:?}: {} elements of {}, shape {:?}, showing {}..{} (flat, row-major)",
                entry.name,
                entry.count,
                entry.dtype_name(),
                entry.dims(),
                range.start,
                range.end
            )?;
            let mut t = Table::new(&[">INDEX", ">VALUE"]);
            for (i, v) in (range.start..).zip(&values) {
                t.row(vec![i.to_string(), v.to_string()]);
            }
            t.print(out)?;
        }
    }
    Ok(0)
}

fn dump_hex(
    args: &DumpArgs,
    entry: &Entry,
    payload: &[u8],
    format: Format,
    out: &mut dyn Write,
) -> Result<i32> {
    let range = match &args.range {
        Some(r) => parse_range(r, entry.len)?,
        None => default_hex_window(entry),
    };
    note_window(&range, entry.len, "bytes", args.range.is_some());
    let root =
        (entry.kind == Kind::Archived).then(|| entry.root_pos..entry.root_pos + entry.elem_size);
    if format == Format::Json {
        let bytes = &payload[range.start as usize..range.end as usize];
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let v = json!({
            "arena": args.arena,
            "entry": entry.name,
            "kind": entry.kind.as_str(),
            "type_name": entry.type_name,
            "offset": entry.offset,
            "len": entry.len,
            "start": range.start,
            "end": range.end,
            "root_pos": root.as_ref().map(|r| r.start),
            "root_size": root.as_ref().map(|r| r.end - r.start),
            "hex": hex,
        });
        serde_json::to_writer(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(0);
    }
    writeln!(
        out,
        "entry {:?}: {} {}, {} bytes at arena offset {:#x}",
        entry.name, entry.kind, entry.type_name, entry.len, entry.offset
    )?;
    if let Some(r) = &root {
        writeln!(
            out,
            "rkyv root: +{:#x}..+{:#x} ({} bytes), lines marked <- root",
            r.start,
            r.end,
            r.end - r.start
        )?;
    }
    // Lines start at multiples of 16 relative to the payload.
    let mut line_start = range.start & !15;
    while line_start < range.end {
        let line_end = line_start + 16;
        let mut hex = String::with_capacity(50);
        let mut text = String::with_capacity(16);
        for at in line_start..line_end {
            if at == line_start + 8 {
                hex.push(' ');
            }
            if (range.start..range.end).contains(&at) {
                let b = payload[at as usize];
                hex.push_str(&format!("{b:02x} "));
                text.push(if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '.'
                });
            } else {
                hex.push_str("   ");
                text.push(' ');
            }
        }
        let mark = match &root {
            Some(r) if r.start < line_end && line_start < r.end.max(r.start + 1) => "  <- root",
            _ => "",
        };
        writeln!(out, "+{line_start:08x}  {hex} |{text}|{mark}")?;
        line_start = line_end;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("2..5", 10).unwrap(), 2..5);
        assert_eq!(parse_range("..", 10).unwrap(), 0..10);
        assert_eq!(parse_range("3..", 10).unwrap(), 3..10);
        assert_eq!(parse_range("..4", 10).unwrap(), 0..4);
        assert_eq!(parse_range("7", 10).unwrap(), 7..8);
        assert_eq!(parse_range("5..100", 10).unwrap(), 5..10);
        assert_eq!(parse_range("10..", 10).unwrap(), 10..10);
        assert_eq!(parse_range("..", 0).unwrap(), 0..0);
        for bad in ["5..2", "11..", "10", "x..2", "1..y", ""] {
            assert!(parse_range(bad, 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn decodes() {
        assert!(matches!(
            decode(Prim::I16, &(-3i16).to_ne_bytes()),
            Some(Num::I(-3))
        ));
        assert!(matches!(decode(Prim::F32, &1.5f32.to_ne_bytes()), Some(Num::F32(v)) if v == 1.5));
        assert!(decode(Prim::Opaque, &[0]).is_none());
    }
}
