//! What the fuzz targets run, and the seed arenas they start from.
//!
//! [`check_all`] takes arbitrary bytes and:
//! 1. parses them with [`Layout::parse`]; when that succeeds, checks every entry's range and
//!    payload checksum ([`check_layout`]);
//! 2. does the same with the header and table-of-contents checksums (and, where the table
//!    parses, the payload checksums) recomputed ([`fix_checksums`]), so that random mutations
//!    reach the structural checks instead of stopping at a checksum mismatch;
//! 3. writes the checksum-fixed bytes to a real file, opens it with [`Arena::open`] (a `file:`
//!    locator: a checked copy), and on success attempts every typed read on every entry
//!    ([`check_file`]).
//!
//! Nothing may panic: the safe API promises typed errors on any bytes.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use shmarena::format::{
    self, entry_offsets, header_offsets as ho, Header, Layout, Prim, HEADER_LEN, MAGIC,
    TOC_ENTRY_LEN,
};
use shmarena::{Arena, ArenaOptions};
use shmarena_testkit::reads;

/// Runs every check on `data` (the fuzz target's body).
///
/// The file step costs system calls, so it runs for every input whose (checksum-fixed) bytes
/// parse, and for one in 16 of the others (chosen by a hash of the input, so runs are
/// reproducible): for those, `Arena::open` must refuse them as `Layout::parse` does.
pub fn check_all(data: &[u8]) {
    let parsed = check_layout(data).is_some();
    let fixed = fix_checksums(data);
    let parsed_fixed = fixed.as_deref().and_then(check_layout).is_some();
    if parsed || parsed_fixed || format::checksum(data).is_multiple_of(16) {
        check_file(fixed.as_deref().unwrap_or(data), scratch_path());
    }
}

/// A per-process scratch file for [`check_file`], in `$SHMARENA_FUZZ_DIR` or the temporary
/// directory. It is rewritten in place for every input (no unlink), which keeps the file path
/// cheap; the one file is left behind when the fuzzer stops.
fn scratch_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::var_os("SHMARENA_FUZZ_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        dir.join(format!("shmarena-fuzz-{}.arena", std::process::id()))
    })
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The table of contents range the header claims, if it lies inside `b`.
fn toc_range(b: &[u8]) -> Option<std::ops::Range<usize>> {
    let off = usize::try_from(get_u64(b, ho::TOC_OFFSET)).ok()?;
    let len = usize::try_from(get_u64(b, ho::TOC_LEN)).ok()?;
    let end = off.checked_add(len)?;
    (off >= HEADER_LEN && end <= b.len()).then_some(off..end)
}

fn fix_header_and_toc(b: &mut [u8]) {
    if let Some(toc) = toc_range(b) {
        let sum = format::checksum(&b[toc]);
        put_u64(b, ho::TOC_CHECKSUM, sum);
    }
    let sum = format::checksum(&b[..ho::HEADER_CHECKSUM]);
    put_u64(b, ho::HEADER_CHECKSUM, sum);
}

/// A copy of `data` whose header checksum, table-of-contents checksum and (where the table
/// parses) payload checksums are recomputed; `None` if `data` does not start like an arena.
pub fn fix_checksums(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < HEADER_LEN || data[..8] != MAGIC {
        return None;
    }
    let mut b = data.to_vec();
    fix_header_and_toc(&mut b);
    if let Ok(layout) = Layout::parse(&b) {
        let toc = layout.header.toc_offset as usize;
        for (i, e) in layout.entries.iter().enumerate() {
            let sum = format::checksum(&b[e.range()]);
            put_u64(
                &mut b,
                toc + i * TOC_ENTRY_LEN + entry_offsets::CHECKSUM,
                sum,
            );
        }
        fix_header_and_toc(&mut b);
    }
    Some(b)
}

/// Parses `data` as a sealed arena; when it parses, checks what [`Layout`] promises about every
/// entry, and checks each payload against its checksum. Returns the layout.
pub fn check_layout(data: &[u8]) -> Option<Layout> {
    let header = Header::parse(data);
    let _ = black_box(header.map(|h| h.state_name()).map_err(|e| e.to_string()));
    let layout = match Layout::parse(data) {
        Ok(layout) => layout,
        Err(e) => {
            black_box(e.to_string());
            return None;
        }
    };
    let h = &layout.header;
    assert!(h.total_len as usize <= data.len());
    assert_eq!(h.toc_offset + h.toc_len, h.total_len);
    assert_eq!(layout.entries.len(), h.entry_count as usize);
    let mut spans = Vec::new();
    for (i, e) in layout.entries.iter().enumerate() {
        let r = e.range();
        assert!(
            r.start >= HEADER_LEN && r.end <= h.toc_offset as usize,
            "{e:?}"
        );
        assert!(e.align.is_power_of_two());
        assert_eq!(r.start % e.align as usize, 0);
        assert_eq!(layout.find(&e.name).map(|(j, _)| j), Some(i));
        black_box(&data[r.clone()]);
        if let Err(err) = format::verify_payload(data, e) {
            black_box(err.to_string());
        }
        if !r.is_empty() {
            spans.push(r);
        }
    }
    spans.sort_by_key(|r| r.start);
    for w in spans.windows(2) {
        assert!(w[0].end <= w[1].start, "overlapping entries accepted");
    }
    Some(layout)
}

/// Writes `data` to `path`, opens it with [`Arena::open`] (a `file:` locator: a checked copy),
/// and on success attempts every typed read on every entry, touching every element a successful
/// read returns. Agrees with [`Layout::parse`] on whether the bytes are an arena.
pub fn check_file(data: &[u8], path: &Path) {
    // Rewriting in place is fine: the arena below is a copy, never a mapping of the file.
    std::fs::write(path, data).expect("writing the fuzz scratch file");
    // The safe open of a file locator: a checked copy into a sealed memfd (issue 11), then the
    // same header, table-of-contents and typed-read checks as a mapping in place.
    let opened = Arena::open(&shmarena::Locator::File {
        path: path.to_owned(),
    });
    match opened {
        Ok(arena) => {
            let layout = Layout::parse(data).expect("Arena::open accepted what parse refuses");
            assert_eq!(arena.layout(), &layout);
            assert_eq!(arena.as_bytes(), &data[..layout.header.total_len as usize]);
            read_everything(&arena);
        }
        Err(e) => {
            assert!(
                Layout::parse(data).is_err(),
                "Arena::open refused what parse accepts: {e}"
            );
            black_box(format!("{e:#}"));
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                black_box(s.to_string());
                source = s.source();
            }
        }
    }
}

/// Attempts every read this crate knows on every entry of `arena` ([`reads::read_entry`],
/// without hash lookups), touching every value and formatting every error.
pub fn read_everything(arena: &Arena) {
    if let Err(e) = arena.verify() {
        black_box(e.to_string());
    }
    for name in arena.layout().names() {
        reads::read_entry(arena, name, false, &mut |r| {
            if let Err(e) = r {
                black_box(e.to_string());
            }
        });
    }
}

/// Builds the seed arenas as files in `dir` and returns their bytes, with a file name for each.
/// Together they hold every entry kind [`read_everything`] reads.
pub fn seed_arenas(dir: &Path) -> shmarena::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut build =
        |file: &str, fill: &dyn Fn(&mut shmarena::ArenaWriter) -> shmarena::Result<()>| {
            let path = dir.join(file);
            let mut b = ArenaOptions::new().file(&path).capacity(4096).create()?;
            fill(&mut b)?;
            drop(b.seal()?);
            out.push((
                file.to_owned(),
                std::fs::read(&path).expect("reading a seed"),
            ));
            std::fs::remove_file(&path).expect("removing a seed");
            Ok::<_, shmarena::Error>(())
        };
    build("empty.arena", &|_| Ok(()))?;
    build("mixed.arena", &|b| {
        let lex: HashMap<String, u32> = (0..24u32).map(|i| (format!("w{i}"), i * 3)).collect();
        b.put("lexicon", &lex)?;
        b.put(
            "words",
            &vec!["alpha".to_string(), "beta".into(), String::new()],
        )?;
        b.put_slice("u32s", &[1u32, 2, 3, 4, 5])?;
        b.put_slice("f64s", &[0.5f64, -1.0, f64::NAN])?;
        b.put_bytes("blob", b"hello, arena")?;
        b.put_bytes("nothing", b"")?;
        Ok(())
    })?;
    build("archived.arena", &|b| {
        let tree: BTreeMap<u32, String> = (0..12u32).map(|i| (i, format!("v{i}"))).collect();
        b.put("tree", &tree)?;
        b.put("text", &"a string entry".to_string())?;
        b.put("ints", &(0..16u32).collect::<Vec<_>>())?;
        b.put("pair", &Some((7u64, 2.5f64)))?;
        b.put("none", &None::<(u64, f64)>)?;
        let nested: HashMap<String, Vec<String>> = (0..6)
            .map(|i| (format!("k{i}"), vec![format!("v{i}"); i]))
            .collect();
        b.put("nested", &nested)?;
        Ok(())
    })?;
    build("pod.arena", &|b| {
        b.put_slice("u8s", &[9u8; 7])?;
        b.put_slice("u16s", &[1u16, 2, 3])?;
        b.put_slice("u64s", &[u64::MAX, 0])?;
        b.put_slice("i32s", &[-1i32, 1])?;
        b.put_slice("i64s", &[i64::MIN])?;
        b.put_slice("f32s", &[1.5f32; 4])?;
        b.put_slice("points", &[[0.0f32, 1.0, 2.0], [3.0, 4.0, 5.0]])?;
        b.put_slice::<u32>("empty", &[])?;
        Ok(())
    })?;
    // Format version 2: shapes and the element types with no Rust primitive.
    build("shaped.arena", &|b| {
        b.put_array("grid", &[0.5f64; 6], &[2, 3])?;
        b.put_array("scalar", &[7u16], &[])?;
        b.put_array::<u8>("hollow", &[], &[0, 4])?;
        b.put_raw_array("flags", Prim::Bool, 0, 1, &[1, 0], &[2], None)?;
        b.put_raw_array("when", Prim::DateTime64, 10, 8, &[0; 16], &[2], None)?;
        b.put_raw_array("names", Prim::FixedUnicode, 0, 8, &[0; 8], &[1], None)?;
        b.put_raw_array("tags", Prim::FixedBytes, 0, 3, b"abcdef", &[2, 1], None)?;
        b.put_raw_array(
            "ld",
            Prim::Opaque,
            0,
            16,
            &[0; 16],
            &[1],
            Some("numpy:<f16"),
        )?;
        Ok(())
    })?;
    // A header that still says "building", as a reader would find a crashed builder's segment.
    let path = dir.join("building.arena");
    let mut b = ArenaOptions::new().file(&path).capacity(4096).create()?;
    b.put_slice("partial", &[1u32, 2, 3])?;
    let tmp = std::fs::read_dir(dir)
        .expect("listing the seed directory")
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().contains("building"))
        .map(|e| e.path())
        .expect("the builder's temporary file");
    let bytes = std::fs::read(&tmp).expect("reading the building seed");
    let used = (b.len() as usize).min(bytes.len());
    out.push(("building.arena".into(), bytes[..used].to_vec()));
    drop(b);
    Ok(out)
}
