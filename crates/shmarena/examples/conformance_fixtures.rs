//! Writes the fixture arenas the spec-only conformance reader (`conformance/`) is checked
//! against, with what they hold (`expect.json`) and xxh3-64 test vectors (`xxh3.json`).
//!
//! Run: `cargo run -p shmarena --example conformance_fixtures -- DIR` (add
//! `--features pointer_width_64` for arenas of 8-byte pointers, read with `run.py
//! --pointer-width 8`).

use std::collections::HashMap;
use std::path::Path;

use serde_json::json;
use shmarena::format::Prim;
use shmarena::ArenaOptions;

/// The Python bindings' value model (docs/VALUES.md), laid out by rkyv exactly as
/// `crates/shmarena-py/src/value.rs` lays it out, so that 8-byte pointers can be written from
/// here too (the bindings are built with 4). Its entries carry this example's type name, not
/// the model's fingerprint: the reader decodes them with `value_at`, by layout.
mod model {
    use indexmap::IndexMap;
    use rkyv::rancor::{Fallible, Source};
    use rkyv::ser::{Allocator, Writer, WriterExt};
    use rkyv::vec::{ArchivedVec, VecResolver};
    use rkyv::{Archive, Place, Serialize};

    #[derive(Archive, Serialize)]
    #[rkyv(serialize_bounds(
        __S: rkyv::ser::Writer + rkyv::ser::Allocator,
        __S::Error: rkyv::rancor::Source,
    ))]
    #[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext)))]
    pub(crate) enum Value {
        None,
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
        Bytes(Vec<u8>),
        List(#[rkyv(omit_bounds)] Vec<Value>),
        Tuple(#[rkyv(omit_bounds)] Vec<Value>),
        Map(#[rkyv(omit_bounds)] IndexMap<Key, Value>),
        Array(Array),
    }

    #[derive(Archive, Serialize, PartialEq, Eq, Hash)]
    pub(crate) enum Key {
        Str(String),
        Int(i64),
        Bytes(Vec<u8>),
    }

    #[derive(Archive, Serialize)]
    pub(crate) struct Array {
        pub(crate) dtype: String,
        pub(crate) shape: Vec<u64>,
        pub(crate) data: ArrayData,
    }

    /// Array bytes whose data starts 16-aligned (VALUES.md, A4).
    pub(crate) struct ArrayData(pub(crate) Vec<u8>);

    impl Archive for ArrayData {
        type Archived = ArchivedVec<u8>;
        type Resolver = VecResolver;

        fn resolve(&self, resolver: VecResolver, out: Place<ArchivedVec<u8>>) {
            ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
        }
    }

    impl<S> Serialize<S> for ArrayData
    where
        S: Fallible + Writer + Allocator + ?Sized,
        S::Error: Source,
    {
        fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
            let pos = serializer.align(16)?;
            serializer.write(&self.0)?;
            Ok(VecResolver::from_pos(pos))
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: conformance_fixtures DIR")?;
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    let mut expect = serde_json::Map::new();

    // Version 1: what put, put_slice and put_bytes write (no shapes, Rust primitives only).
    let mut b = ArenaOptions::new()
        .file(dir.join("rust-v1.arena"))
        .create()?;
    let lexicon: HashMap<String, u32> = [("apple".into(), 1), ("pear".into(), 2)].into();
    b.put("lexicon", &lexicon)?;
    b.put_slice("nums", &(0u32..10).collect::<Vec<_>>())?;
    b.put_slice::<f64>("empty", &[])?;
    b.put_bytes("greeting", b"hello")?;
    b.put_bytes("nothing", b"")?;
    b.put_slice("signed", &[-1i16, 2, -3])?;
    b.put("words", &vec!["a".to_string(), "bc".into()])?;
    b.seal()?;
    expect.insert(
        "rust-v1.arena".into(),
        json!({
            "version": 1,
            "nums": {"dtype": "<u4", "shape": [10], "values": (0..10).collect::<Vec<_>>()},
            "empty": {"dtype": "<f8", "shape": [0], "values": []},
            "greeting": {"dtype": "|u1", "shape": [5], "values": b"hello".to_vec()},
            "nothing": {"dtype": "|u1", "shape": [0], "values": []},
            "signed": {"dtype": "<i2", "shape": [3], "values": [-1, 2, -3]},
        }),
    );

    // Version 2: shapes and the numpy element types with no Rust primitive.
    let mut b = ArenaOptions::new()
        .file(dir.join("rust-v2.arena"))
        .create()?;
    let grid: Vec<f64> = (0..12).map(|i| f64::from(i) * 0.5).collect();
    b.put_array("grid", &grid, &[3, 4])?;
    b.put_array("scalar", &[7i32], &[])?;
    b.put_array::<u8>("hollow", &[], &[0, 3])?;
    b.put_raw_array("flags", Prim::Bool, 0, 1, &[1, 0, 1, 1], &[2, 2], None)?;
    let halves: Vec<u8> = [0x3c00u16, 0xc000, 0x3800, 0x7bff]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    b.put_raw_array("halves", Prim::F16, 0, 2, &halves, &[4], None)?;
    let c64: Vec<u8> = [1.0f32, 2.0, -0.5, 0.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    b.put_raw_array("c64", Prim::C64, 0, 8, &c64, &[2], None)?;
    let c128: Vec<u8> = [3.0f64, -4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    b.put_raw_array("c128", Prim::C128, 0, 16, &c128, &[1], None)?;
    let times: Vec<u8> = [0i64, 1_000_000_000, i64::MIN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    b.put_raw_array("when", Prim::DateTime64, 10, 8, &times, &[3], None)?;
    b.put_raw_array("gap", Prim::TimeDelta64, 7, 8, &times[..16], &[2], None)?;
    b.put_raw_array("tags", Prim::FixedBytes, 0, 5, b"ab\0\0\0hello", &[2], None)?;
    let unicode: Vec<u8> = "hé\0xyz"
        .chars()
        .flat_map(|c| u32::from(c).to_le_bytes())
        .collect();
    b.put_raw_array("names", Prim::FixedUnicode, 0, 12, &unicode, &[2, 1], None)?;
    b.put_slice("flat", &[1u64, 2, 3])?;
    b.seal()?;
    expect.insert(
        "rust-v2.arena".into(),
        json!({
            "version": 2,
            "grid": {"dtype": "<f8", "shape": [3, 4], "values": grid},
            "scalar": {"dtype": "<i4", "shape": [], "values": [7]},
            "hollow": {"dtype": "|u1", "shape": [0, 3], "values": []},
            "flags": {"dtype": "|b1", "shape": [2, 2], "values": [true, false, true, true]},
            "halves": {"dtype": "<f2", "shape": [4], "values": [1.0, -2.0, 0.5, 65504.0]},
            "c64": {"dtype": "<c8", "shape": [2], "values": [[1.0, 2.0], [-0.5, 0.25]]},
            "c128": {"dtype": "<c16", "shape": [1], "values": [[3.0, -4.0]]},
            "when": {"dtype": "<M8[ns]", "shape": [3], "values": [0, 1_000_000_000, null]},
            "gap": {"dtype": "<m8[s]", "shape": [2], "values": [0, 1_000_000_000]},
            "tags": {"dtype": "|S5", "shape": [2], "values": ["ab", "hello"]},
            "names": {"dtype": "<U3", "shape": [2, 1], "values": ["hé", "xyz"]},
            "flat": {"dtype": "<u8", "shape": [3], "values": [1, 2, 3]},
        }),
    );
    // The value model's layout, with this build's pointer width.
    use model::{Array, ArrayData, Key, Value};
    let mut b = ArenaOptions::new()
        .file(dir.join("rust-values.arena"))
        .create()?;
    let mut map = indexmap::IndexMap::new();
    map.insert(Key::Str("short".into()), Value::Str("abc".into()));
    map.insert(Key::Str("long".into()), Value::Str("x".repeat(40)));
    map.insert(
        Key::Int(7),
        Value::List(vec![Value::Int(-2), Value::Float(0.5)]),
    );
    map.insert(
        Key::Bytes(b"raw".to_vec()),
        Value::Tuple(vec![
            Value::None,
            Value::Bool(true),
            Value::Bytes(vec![0, 255]),
        ]),
    );
    map.insert(
        Key::Str("arr".into()),
        Value::Array(Array {
            dtype: "<i2".into(),
            shape: vec![2, 3],
            data: ArrayData((0i16..6).flat_map(|v| v.to_le_bytes()).collect()),
        }),
    );
    map.insert(
        Key::Str("empty".into()),
        Value::Map(indexmap::IndexMap::new()),
    );
    b.put("tree", &Value::Map(map))?;
    b.put(
        "list",
        &Value::List(vec![Value::Str("é".repeat(30)), Value::List(vec![])]),
    )?;
    b.seal()?;
    let arr: Vec<u8> = (0i16..6).flat_map(|v| v.to_le_bytes()).collect();
    expect.insert(
        "rust-values.arena".into(),
        json!({
            "version": 1,
            "tree": {"value": {
                "short": "abc",
                "long": "x".repeat(40),
                "7": [-2, 0.5],
                "b'raw'": [null, true, [0, 255]],
                "arr": {"dtype": "<i2", "shape": [2, 3], "data": arr},
                "empty": {},
            }},
            "list": {"value": ["é".repeat(30), []]},
        }),
    );

    std::fs::write(
        dir.join("expect.json"),
        serde_json::to_string_pretty(&expect)?,
    )?;

    // xxh3-64 test vectors: every length 0..=300 and a few large ones, of a fixed pattern.
    let pattern = |n: usize| -> Vec<u8> { (0..n).map(|i| ((i * 31 + 7) % 251) as u8).collect() };
    let lengths = (0..=300).chain([1024, 1025, 4096, 65_543, 1 << 20]);
    let vectors: Vec<_> = lengths
        .map(|n| {
            json!([
                n,
                format!("{:016x}", shmarena::format::checksum(&pattern(n)))
            ])
        })
        .collect();
    std::fs::write(dir.join("xxh3.json"), serde_json::to_string(&vectors)?)?;
    println!("wrote fixtures to {}", dir.display());
    Ok(())
}
