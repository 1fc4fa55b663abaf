//! The deterministic corruption suite: a valid arena with every entry kind, damaged in every way
//! the format can be damaged, opened through `Arena::open_file` on a real file. Every open
//! either fails with a typed error or yields an arena on which every typed read of every entry
//! returns a value or a typed error: no panic, no out-of-bounds read, no SIGBUS.
//!
//! - every bit of every byte of the header and the table of contents, flipped one at a time;
//! - sampled byte flips in every payload;
//! - truncations at every table boundary;
//! - tables re-encoded with `format::encode_toc` and every checksum fixed, so the structural
//!   checks must catch them: overlapping and out-of-range entries, huge counts, wrong alignment,
//!   bad names, unknown kinds, lying headers, and entries relabelled as other types.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use common::{reads, report, Scope};
use shmarena::format::FormatError;
use shmarena::format::{
    self, entry_offsets as eo, header_offsets as ho, Entry, Header, Kind, Layout, Prim, HEADER_LEN,
    TOC_ENTRY_LEN,
};
use shmarena::{Arena, ArenaOptions, Error};

#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone)]
struct Record {
    id: u32,
    name: String,
    tags: Vec<String>,
    score: f64,
    parent: Option<Box<Leaf>>,
}

#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone)]
struct Leaf {
    id: u64,
    label: String,
}

#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Pixel {
    r: u8,
    g: u8,
    b: u8,
    a: u8,
}

type Lexicon = HashMap<String, u32>;
type Index = HashMap<String, Vec<String>>;

fn record(i: u32) -> Record {
    Record {
        id: i,
        name: format!("record-{i}"),
        tags: (0..i % 4).map(|t| format!("t{t}")).collect(),
        score: f64::from(i) * 0.25,
        parent: (i % 2 == 1).then(|| {
            Box::new(Leaf {
                id: u64::from(i) << 40,
                label: format!("parent of {i}"),
            })
        }),
    }
}

/// A sealed file arena with every entry kind, read back as bytes.
fn sample(scope: &Scope) -> Vec<u8> {
    let path = scope.path("sample.arena");
    let mut b = ArenaOptions::new().file(&path).create().unwrap();
    let lex: Lexicon = (0..64u32).map(|i| (format!("w{i}"), i * 7)).collect();
    b.put("lexicon", &lex).unwrap();
    b.put(
        "words",
        &vec!["alpha".to_string(), String::new(), "γάμμα".into()],
    )
    .unwrap();
    b.put("text", &"a plain string".to_string()).unwrap();
    b.put("record", &record(3)).unwrap();
    b.put("records", &(0..5).map(record).collect::<Vec<_>>())
        .unwrap();
    let tree: BTreeMap<u32, String> = (0..20u32).map(|i| (i * 3, format!("v{i}"))).collect();
    b.put("tree", &tree).unwrap();
    b.put("pair", &Some((7u64, 2.5f64))).unwrap();
    b.put("ints", &(0..40u32).collect::<Vec<_>>()).unwrap();
    let index: Index = (0..8)
        .map(|i| (format!("k{i}"), vec![format!("v{i}"); i]))
        .collect();
    b.put("index", &index).unwrap();
    b.put("empty_vec", &Vec::<u32>::new()).unwrap();
    b.put_slice("u8s", &[1u8, 2, 3, 4, 5]).unwrap();
    b.put_slice("u16s", &[1u16, 65535]).unwrap();
    b.put_slice("u32s", &(0..100u32).collect::<Vec<_>>())
        .unwrap();
    b.put_slice("u64s", &[u64::MAX, 0, 42]).unwrap();
    b.put_slice("i64s", &[i64::MIN, -1]).unwrap();
    b.put_slice("f32s", &[0.5f32; 9]).unwrap();
    b.put_slice("f64s", &[f64::NAN, f64::INFINITY, -0.0])
        .unwrap();
    b.put_slice("points", &[[1.0f32, 2.0, 3.0]; 4]).unwrap();
    b.put_slice(
        "pixels",
        &[Pixel {
            r: 1,
            g: 2,
            b: 3,
            a: 4,
        }; 6],
    )
    .unwrap();
    b.put_slice::<u64>("empty_pod", &[]).unwrap();
    b.put_bytes("blob", b"opaque bytes, any content").unwrap();
    b.put_bytes("empty_blob", b"").unwrap();
    drop(b.seal().unwrap());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    bytes
}

/// A scratch file that is rewritten in place (mode 0600 whatever the umask) and opened.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// On tmpfs (`/dev/shm`, under the scope's prefix, so the scope checks it is removed):
    /// the suite rewrites it tens of thousands of times, and a disk's journal would make that
    /// the slowest part.
    fn new(scope: &Scope) -> Scratch {
        Scratch {
            path: PathBuf::from("/dev/shm").join(scope.name("scratch")),
        }
    }

    /// Writes `bytes` to a new file and renames it over the scratch path, so arenas still
    /// mapping an earlier version keep their own (unchanged) inode, then maps it in place
    /// (the suite damages bytes on purpose; a checked copy would re-verify every payload).
    fn open(&self, bytes: &[u8]) -> shmarena::Result<Arena> {
        let tmp = self.path.with_extension("new");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .unwrap();
        f.write_all(bytes).unwrap();
        drop(f);
        std::fs::rename(&tmp, &self.path).unwrap();
        // SAFETY: nothing writes to or truncates this inode after the rename: the next `open`
        // writes a new file and renames it over the path.
        let opened = unsafe { Arena::open_file(&self.path) };
        // The format module, given the same bytes, must agree.
        assert_eq!(
            opened.is_ok(),
            Layout::parse(bytes).is_ok(),
            "open_file and Layout::parse disagree: {opened:?}"
        );
        if let Err(e) = &opened {
            let msg = e.to_string();
            assert!(
                msg.contains(&*self.path.to_string_lossy()),
                "the error does not name the file: {msg}"
            );
        }
        opened
    }

    fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the typed reads of an arena did.
#[derive(Default, Debug)]
struct Reads {
    /// Reads that returned a value (and every value was touched).
    ok: usize,
    /// Reads refused because the fingerprint did not match.
    mismatched: usize,
    /// Reads refused by validation (bytecheck) or the POD rules: `Error::Corrupted`.
    refused: usize,
}

impl Reads {
    fn note(&mut self, what: &str, r: shmarena::Result<()>) {
        match r {
            Ok(()) => self.ok += 1,
            Err(Error::TypeMismatch { .. }) => self.mismatched += 1,
            Err(Error::Format {
                source: FormatError::Corrupted { .. },
                ..
            }) => self.refused += 1,
            Err(e) => panic!("{what}: a typed read failed with an unexpected error: {e}"),
        }
    }
}

/// Attempts every typed read on every entry, touching every value a read returns: the reads
/// the fuzz target makes (with hash lookups), plus this suite's own types.
fn read_everything(arena: &Arena) -> Reads {
    let mut r = Reads::default();
    if let Err(e) = arena.verify() {
        assert!(
            matches!(
                e,
                Error::Format {
                    source: FormatError::Corrupted { .. },
                    ..
                }
            ),
            "verify: {e}"
        );
    }
    for name in arena.layout().names() {
        let n = name;
        reads::read_entry(arena, n, true, &mut |res| r.note(n, res));
        r.note(n, reads::pod::<Pixel>(arena, n));
        r.note(
            n,
            reads::touched(arena.get::<Record>(n), |c| {
                black_box((c.id.to_native(), c.name.as_str(), c.score.to_native()));
                black_box(c.tags.iter().map(|t| t.len()).sum::<usize>());
                black_box(
                    c.parent
                        .as_ref()
                        .map(|p| (p.id.to_native(), p.label.as_str())),
                );
            }),
        );
        r.note(
            n,
            reads::touched(arena.get::<Vec<Record>>(n), |v| {
                black_box(v.iter().map(|c| c.name.len()).sum::<usize>());
            }),
        );
    }
    r
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Builds an arena image from `base`'s payload area and a new table of contents, fixing every
/// checksum, then lets `edit` change the header before it is encoded.
fn image(base: &[u8], toc: &[u8], count: u32, edit: impl FnOnce(&mut Header)) -> Vec<u8> {
    let old = Header::parse(base).unwrap();
    let toc_off = old.toc_offset as usize;
    let mut out = base[..toc_off].to_vec();
    out.extend_from_slice(toc);
    let mut h = old;
    h.toc_len = toc.len() as u64;
    h.total_len = (toc_off + toc.len()) as u64;
    h.entry_count = count;
    h.toc_checksum = format::checksum(toc);
    edit(&mut h);
    out[..HEADER_LEN].copy_from_slice(&h.encode());
    out
}

/// `base` with its entries changed by `mutate`, re-encoded with valid checksums.
fn resealed(base: &[u8], mutate: impl FnOnce(&mut Vec<Entry>)) -> Vec<u8> {
    let mut entries = Layout::parse(base).unwrap().entries;
    mutate(&mut entries);
    let toc = format::encode_toc(&entries);
    image(base, &toc, entries.len() as u32, |_| {})
}

/// `base` with its encoded table of contents changed byte-wise by `edit`, checksums fixed.
fn raw_toc_edit(base: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let layout = Layout::parse(base).unwrap();
    let mut toc = base[layout.header.toc_offset as usize..].to_vec();
    edit(&mut toc);
    image(base, &toc, layout.entries.len() as u32, |_| {})
}

fn index_of(entries: &[Entry], name: &str) -> usize {
    entries.iter().position(|e| e.name == name).unwrap()
}

fn expect_err(scratch: &Scratch, what: &str, bytes: &[u8], ok: impl Fn(&Error) -> bool) {
    match scratch.open(bytes) {
        Ok(arena) => panic!("{what}: opened as {arena:?}"),
        Err(e) => assert!(ok(&e), "{what}: unexpected error {e}"),
    }
}

fn corrupted(e: &Error) -> bool {
    matches!(
        e,
        Error::Format {
            source: FormatError::Corrupted { .. },
            ..
        }
    )
}

#[test]
fn the_sample_is_valid_and_fully_readable() {
    let scope = Scope::new();
    let good = sample(&scope);
    let scratch = Scratch::new(&scope);
    let arena = scratch.open(&good).unwrap();
    arena.verify().unwrap();
    assert_eq!(arena.layout().entries.len(), 22);
    let kinds: Vec<Kind> = arena.layout().entries.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&Kind::Archived) && kinds.contains(&Kind::Pod));
    assert!(kinds.contains(&Kind::Bytes));
    let reads = read_everything(&arena);
    // Each entry has exactly one matching read (the lexicon also reads as nothing else).
    assert_eq!(reads.ok, 22, "{reads:?}");
    drop(arena);
    scratch.remove();
    scope.finish();
}

#[test]
fn every_bit_flip_in_the_header_and_table_is_refused() {
    let scope = Scope::new();
    let good = sample(&scope);
    let scratch = Scratch::new(&scope);
    let toc = Layout::parse(&good).unwrap().header.toc_offset as usize;
    let mut opens = 0;
    for at in (0..HEADER_LEN).chain(toc..good.len()) {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[at] ^= 1 << bit;
            let e = scratch
                .open(&bad)
                .expect_err(&format!("bit {bit} of byte {at} flipped"));
            let expected = match at {
                ho::MAGIC..8 => matches!(
                    e,
                    Error::Format {
                        source: FormatError::BadMagic,
                        ..
                    }
                ),
                ho::VERSION..12 => matches!(
                    e,
                    Error::Format {
                        source: FormatError::UnsupportedVersion { .. },
                        ..
                    }
                ),
                _ => corrupted(&e),
            };
            assert!(expected, "bit {bit} of byte {at}: {e}");
            opens += 1;
        }
    }
    eprintln!("header and table bit flips: {opens} opens, all refused");
    assert!(opens > 8 * (HEADER_LEN + 22 * TOC_ENTRY_LEN), "{opens}");
    scratch.remove();
    scope.finish();
}

/// A small deterministic generator for sampled positions (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

#[test]
fn sampled_payload_flips_are_caught_by_verify_and_validation() {
    let scope = Scope::new();
    let good = sample(&scope);
    let scratch = Scratch::new(&scope);
    let layout = Layout::parse(&good).unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut flips, mut refused_reads) = (0, 0);
    for e in layout.entries.iter().filter(|e| e.len > 0) {
        let r = e.range();
        let mut spots = vec![r.start, r.end - 1, r.start + (r.end - r.start) / 2];
        spots.extend((0..9).map(|_| r.start + rng.below(r.end - r.start)));
        for (i, at) in spots.into_iter().enumerate() {
            let mut bad = good.clone();
            bad[at] ^= [0x01, 0x80, 0xff, 0x5a][i % 4];
            // Payloads are not read at open: the open succeeds ...
            let arena = scratch.open(&bad).unwrap();
            // ... verify names the damaged entry ...
            let err = arena.verify().unwrap_err();
            assert!(
                corrupted(&err) && report(&err).contains(&format!("{:?}", e.name)),
                "{}",
                report(&err)
            );
            // ... and every typed read returns a value or a typed error.
            refused_reads += read_everything(&arena).refused;
            flips += 1;
        }
    }
    eprintln!("payload flips: {flips} opens, {refused_reads} typed reads refused");
    assert!(flips >= 12 * 19, "{flips}");
    assert!(refused_reads > 0);
    scratch.remove();
    scope.finish();
}

#[test]
fn truncations_at_every_table_boundary() {
    let scope = Scope::new();
    let good = sample(&scope);
    let scratch = Scratch::new(&scope);
    let layout = Layout::parse(&good).unwrap();
    let toc = layout.header.toc_offset as usize;
    let count = layout.entries.len();
    let mut cuts = vec![0, 1, 7, 8, 9, HEADER_LEN - 1, HEADER_LEN, HEADER_LEN + 1];
    for e in &layout.entries {
        let r = e.range();
        cuts.extend([r.start, r.start + 1, r.end.saturating_sub(1), r.end]);
    }
    for i in 0..=count {
        cuts.extend([toc + i * TOC_ENTRY_LEN - 1, toc + i * TOC_ENTRY_LEN]);
        cuts.push(toc + i * TOC_ENTRY_LEN + 1);
    }
    cuts.push(good.len() - 1);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.retain(|&c| c < good.len());
    for len in cuts {
        let e = scratch.open(&good[..len]).unwrap_err();
        let expected = if len < 8 {
            matches!(
                e,
                Error::Format {
                    source: FormatError::BadMagic,
                    ..
                }
            )
        } else {
            matches!(
                e,
                Error::Format {
                    source: FormatError::Truncated { .. },
                    ..
                }
            )
        };
        assert!(expected, "cut to {len} bytes: {e}");
    }
    // Bytes past the recorded length are not part of the arena and do not matter.
    let mut longer = good.clone();
    longer.extend_from_slice(&[0xee; 100]);
    let arena = scratch.open(&longer).unwrap();
    assert_eq!(arena.as_bytes(), &good[..]);
    read_everything(&arena);
    drop(arena);
    scratch.remove();
    scope.finish();
}

#[test]
fn structural_damage_with_valid_checksums() {
    let scope = Scope::new();
    let good = sample(&scope);
    let scratch = Scratch::new(&scope);
    let entries = Layout::parse(&good).unwrap().entries;
    let toc_off = Layout::parse(&good).unwrap().header.toc_offset;
    let lex = index_of(&entries, "lexicon");
    let u32s = index_of(&entries, "u32s");
    let blob = index_of(&entries, "blob");
    let words = index_of(&entries, "words");
    type Mutation = Box<dyn Fn(&mut Vec<Entry>)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "overlapping entries",
            Box::new(move |e| e[u32s].offset = e[lex].offset),
        ),
        (
            "partly overlapping entries",
            Box::new(move |e| e[blob].offset = e[u32s].offset + 64),
        ),
        ("into the header", Box::new(move |e| e[u32s].offset = 64)),
        ("at offset 0", Box::new(move |e| e[blob].offset = 0)),
        (
            "into the table",
            Box::new(move |e| {
                e[blob].offset = toc_off - 64;
                e[blob].len = 128;
                e[blob].count = 128;
            }),
        ),
        (
            "past the end",
            Box::new(move |e| {
                e[blob].offset = 1 << 40;
            }),
        ),
        (
            "offset + length overflows",
            Box::new(move |e| {
                e[blob].offset = u64::MAX - 63;
                e[blob].len = 128;
                e[blob].count = 128;
            }),
        ),
        (
            "huge length",
            Box::new(move |e| {
                e[u32s].len = u64::MAX;
            }),
        ),
        (
            "huge element count",
            Box::new(move |e| e[u32s].count = u64::MAX),
        ),
        (
            "count times size overflows",
            Box::new(move |e| {
                e[u32s].count = 1 << 62;
                e[u32s].elem_size = 8;
            }),
        ),
        (
            "misaligned POD offset",
            Box::new(move |e| e[u32s].offset += 2),
        ),
        (
            "misaligned archived offset",
            Box::new(move |e| e[lex].offset += 8),
        ),
        (
            "misaligned archived root",
            Box::new(move |e| e[lex].root_pos += 1),
        ),
        (
            "archived root past the payload",
            Box::new(move |e| e[lex].root_pos = e[lex].len),
        ),
        (
            "archived root position overflows",
            Box::new(move |e| e[lex].root_pos = u64::MAX - 3),
        ),
        ("archived count", Box::new(move |e| e[lex].count = 2)),
        (
            "alignment not a power of two",
            Box::new(move |e| e[u32s].align = 12),
        ),
        ("alignment zero", Box::new(move |e| e[u32s].align = 0)),
        (
            "alignment too large",
            Box::new(move |e| e[u32s].align = 1 << 20),
        ),
        (
            "element size not a multiple of alignment",
            Box::new(move |e| {
                e[u32s].align = 8;
            }),
        ),
        (
            "primitive size",
            Box::new(move |e| e[u32s].prim = Prim::F64),
        ),
        (
            "bytes entry with wide elements",
            Box::new(move |e| {
                e[blob].elem_size = 5;
                e[blob].count = 5;
                e[blob].len = 25;
            }),
        ),
        (
            "POD with a root position",
            Box::new(move |e| e[u32s].root_pos = 4),
        ),
        (
            "duplicate names",
            Box::new(move |e| e[blob].name = "lexicon".into()),
        ),
        ("empty name", Box::new(move |e| e[words].name.clear())),
        (
            "name too long",
            Box::new(move |e| e[words].name = "n".repeat(256)),
        ),
    ];
    for (what, mutate) in cases {
        let bad = resealed(&good, mutate);
        expect_err(&scratch, what, &bad, corrupted);
    }

    // Raw edits of the encoded table that encode_toc cannot express.
    let n = entries.len();
    let names_len = {
        let h = Header::parse(&good).unwrap();
        h.toc_len as usize - n * TOC_ENTRY_LEN
    };
    type RawEdit = Box<dyn Fn(&mut Vec<u8>)>;
    let at = |i: usize, field: usize| i * TOC_ENTRY_LEN + field;
    let raw: Vec<(&str, RawEdit)> = vec![
        ("unknown kind", Box::new(move |t| t[at(lex, eo::KIND)] = 9)),
        ("kind zero", Box::new(move |t| t[at(u32s, eo::KIND)] = 0)),
        (
            "unknown primitive tag",
            Box::new(move |t| t[at(u32s, eo::PRIM)] = 200),
        ),
        (
            "name past the names area",
            Box::new(move |t| {
                let off = (names_len as u32).to_le_bytes();
                t[at(words, eo::NAME_OFF)..][..4].copy_from_slice(&off);
            }),
        ),
        (
            "name length past the names area",
            Box::new(move |t| {
                t[at(words, eo::NAME_LEN)..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
            }),
        ),
        (
            "type name past the names area",
            Box::new(move |t| {
                t[at(lex, eo::TYPE_NAME_LEN)..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
            }),
        ),
        (
            "name not UTF-8",
            Box::new(move |t| {
                let off = u32::from_le_bytes(t[at(words, eo::NAME_OFF)..][..4].try_into().unwrap());
                t[n * TOC_ENTRY_LEN + off as usize] = 0xff;
            }),
        ),
    ];
    for (what, edit) in raw {
        let bad = raw_toc_edit(&good, edit);
        expect_err(&scratch, what, &bad, corrupted);
    }

    // Headers that lie, with valid checksums.
    let toc = good[toc_off as usize..].to_vec();
    let count = n as u32;
    type HeaderEdit = Box<dyn Fn(&mut Header)>;
    type Expect = fn(&Error) -> bool;
    let headers: Vec<(&str, HeaderEdit, Expect)> = vec![
        (
            "huge entry count",
            Box::new(|h| h.entry_count = u32::MAX),
            corrupted,
        ),
        (
            "one entry too many",
            Box::new(move |h| h.entry_count = count + 1),
            corrupted,
        ),
        (
            "huge table length",
            Box::new(|h| h.toc_len = u64::MAX - 64),
            corrupted,
        ),
        (
            "table offset overflows",
            Box::new(|h| h.toc_offset = u64::MAX - 8),
            corrupted,
        ),
        (
            "table offset not 8-aligned",
            Box::new(|h| {
                h.toc_offset -= 4;
                h.toc_len += 4;
            }),
            corrupted,
        ),
        (
            "table inside the header",
            Box::new(|h| {
                h.toc_len += h.toc_offset - 64;
                h.toc_offset = 64;
            }),
            corrupted,
        ),
        (
            "table not at the end",
            Box::new(|h| h.total_len += 8),
            |e| {
                matches!(
                    e,
                    Error::Format {
                        source: FormatError::Truncated { .. },
                        ..
                    }
                )
            },
        ),
        (
            "huge total length",
            Box::new(|h| h.total_len = u64::MAX),
            |e| {
                matches!(
                    e,
                    Error::Format {
                        source: FormatError::Truncated { .. },
                        ..
                    }
                )
            },
        ),
        (
            "total shorter than the header",
            Box::new(|h| h.total_len = 64),
            corrupted,
        ),
        (
            "still building",
            Box::new(|h| h.state = format::STATE_BUILDING),
            |e| {
                matches!(
                    e,
                    Error::Format {
                        source: FormatError::StillBuilding,
                        ..
                    }
                )
            },
        ),
        ("unknown state", Box::new(|h| h.state = 7), corrupted),
        (
            "other byte order",
            Box::new(|h| h.endian = format::ENDIAN_BIG),
            |e| {
                matches!(
                    e,
                    Error::Format {
                        source: FormatError::Incompatible { .. },
                        ..
                    }
                )
            },
        ),
        ("unknown byte order", Box::new(|h| h.endian = 0), |e| {
            matches!(
                e,
                Error::Format {
                    source: FormatError::Incompatible { .. },
                    ..
                }
            )
        }),
        (
            "other rkyv generation",
            Box::new(|h| h.rkyv_minor = 7),
            |e| {
                matches!(
                    e,
                    Error::Format {
                        source: FormatError::Incompatible { .. },
                        ..
                    }
                )
            },
        ),
        (
            "other pointer width",
            Box::new(|h| h.pointer_width = 16),
            |e| {
                matches!(
                    e,
                    Error::Format {
                        source: FormatError::PointerWidth { .. },
                        ..
                    }
                )
            },
        ),
    ];
    for (what, edit, ok) in headers {
        let bad = image(&good, &toc, count, |h| edit(h));
        expect_err(&scratch, what, &bad, ok);
    }
    // The header length field and the version: edit and re-checksum (a version-1 arena relabelled
    // 2 is a valid version-2 arena, so the next unknown version).
    for (what, field, value) in [
        ("header length", ho::HEADER_LEN, 64u32),
        ("format version", ho::VERSION, format::FORMAT_VERSION + 1),
    ] {
        let mut bad = good.clone();
        bad[field..field + 4].copy_from_slice(&value.to_le_bytes());
        let sum = format::checksum(&bad[..ho::HEADER_CHECKSUM]);
        bad[ho::HEADER_CHECKSUM..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
        expect_err(&scratch, what, &bad, |e| {
            corrupted(e)
                || matches!(
                    e,
                    Error::Format {
                        source: FormatError::UnsupportedVersion { .. },
                        ..
                    }
                )
        });
    }
    assert_eq!(get_u64(&good, ho::TOC_OFFSET), toc_off);
    scratch.remove();
    scope.finish();
}

/// Puts `from`'s type fingerprint on entry `to`, moving its root where the new type fits.
/// Returns false if the payload is too small for the new root.
fn relabel(to: &mut Entry, from: &Entry) -> bool {
    let align = u64::from(from.align).max(1);
    if to.len < from.elem_size {
        return false;
    }
    let root = (to.len - from.elem_size) / align * align;
    to.kind = from.kind;
    to.prim = from.prim;
    to.flags = from.flags;
    to.align = from.align;
    to.elem_size = from.elem_size;
    to.type_hash = from.type_hash;
    to.type_name = from.type_name.clone();
    match from.kind {
        Kind::Archived => {
            to.root_pos = root;
            to.count = 1;
        }
        _ => {
            to.root_pos = 0;
            if from.elem_size == 0 || to.len % from.elem_size != 0 {
                return false;
            }
            to.count = to.len / from.elem_size;
        }
    }
    // Payload checksums stay right: the payload did not change.
    true
}

/// Entries that claim another entry's type: the fingerprint matches the read, so only
/// bytecheck (archived) or the POD rules stand between the reader and the bytes. File arenas
/// are never trusted, so every archived read is validated.
#[test]
fn entries_relabelled_as_other_types_are_validated() {
    let scope = Scope::new();
    let good = sample(&scope);
    let scratch = Scratch::new(&scope);
    let entries = Layout::parse(&good).unwrap().entries;
    let (mut opened, mut refused, mut read) = (0, 0, 0);
    for (i, target) in entries.iter().enumerate() {
        for source in &entries {
            if source.name == target.name || source.type_hash == target.type_hash {
                continue;
            }
            let mut changed = entries.clone();
            if !relabel(&mut changed[i], source) {
                continue;
            }
            let bad = resealed(&good, |e| *e = changed.clone());
            match scratch.open(&bad) {
                Ok(arena) => {
                    opened += 1;
                    arena.verify().unwrap();
                    let reads = read_everything(&arena);
                    refused += reads.refused;
                    read += reads.ok;
                }
                // An alignment the payload offset cannot meet, say.
                Err(e) => assert!(corrupted(&e), "{} as {}: {e}", target.name, source.name),
            }
        }
    }
    eprintln!(
        "relabelled entries: {opened} opened, {read} reads returned values, {refused} refused"
    );
    assert!(opened > 100, "{opened}");
    assert!(refused > 0 && read > 0, "{refused} {read}");
    scratch.remove();
    scope.finish();
}

/// The trust model in one place: a file arena is validated on first access even though its
/// entries carry the builder's "validated" flag; a corrupted archive is a typed error.
#[test]
fn the_validated_flag_is_not_trusted_outside_a_sealed_memfd() {
    let scope = Scope::new();
    let good = sample(&scope);
    let scratch = Scratch::new(&scope);
    let layout = Layout::parse(&good).unwrap();
    let (_, lex) = layout.find("lexicon").unwrap();
    assert!(lex.validated_at_build());
    let root = lex.offset as usize + lex.root_pos as usize;
    let mut bad = good.clone();
    // The root's relative pointer to the table, pointed far outside the payload.
    bad[root..root + 4].copy_from_slice(&0x7fff_0000i32.to_le_bytes());
    let arena = scratch.open(&bad).unwrap();
    assert!(!arena.is_kernel_sealed());
    let e = arena.get::<Lexicon>("lexicon").unwrap_err();
    assert!(
        corrupted(&e) && report(&e).contains("lexicon"),
        "{}",
        report(&e)
    );
    drop(arena);
    scratch.remove();
    scope.finish();
}

/// The wrapped control bytes of an archived swiss table (`cap..control_count`) that differ from
/// the bytes they mirror (`i % cap`). rkyv's validator compares
/// `cap..min(2 * cap, control_count - cap)`, a range that is empty whenever `cap` exceeds half
/// the control bytes, which is the case for almost every capacity.
fn unchecked_mirror_mismatches(arena: &Arena, map: &ArchivedLexicon) -> usize {
    let bytes = arena.as_bytes();
    let root = (map as *const ArchivedLexicon as usize) - bytes.as_ptr() as usize;
    let field = |at: usize| u32::from_le_bytes(bytes[root + at..root + at + 4].try_into().unwrap());
    let rel = field(0) as i32 as isize;
    let cap = field(8) as usize;
    assert_eq!(
        field(4) as usize,
        map.len(),
        "the table layout is ptr, len, cap"
    );
    let ctrl = (root as isize + rel) as usize;
    let control_count = cap.next_multiple_of(16) + 15;
    (cap..control_count)
        .filter(|&i| bytes[ctrl + i] != bytes[ctrl + i % cap])
        .count()
}

type ArchivedLexicon = rkyv::Archived<Lexicon>;

/// A known upstream limitation, found by the fuzz target (docs/RELIABILITY.md): rkyv 0.8.18
/// accepts a crafted swiss-table hash map whose wrapped control bytes disagree with the bytes
/// they mirror (its check of them covers an empty range), and a lookup in that map then probes
/// forever in a release build (a `debug_assert` fires inside rkyv in a debug build). A hang or
/// a panic, not a memory error. The fixture is the fuzzer's input: the fuzz seed `mixed.arena`,
/// mutated, with its checksums fixed. Only arenas whose bytes can change after the builder
/// validated them (named segments and files) can carry such a map; a sealed memfd cannot. The
/// test fails while the limitation stands; run it with `--ignored` after an rkyv upgrade.
#[test]
#[ignore = "fails: rkyv 0.8.18 hash map lookups may not terminate on a crafted table"]
fn validated_hash_map_lookups_terminate() {
    let scope = Scope::new();
    let scratch = Scratch::new(&scope);
    let arena = scratch
        .open(include_bytes!("fixtures/rkyv-probe-hang.arena"))
        .unwrap();
    let lex = arena
        .get::<Lexicon>("lexicon")
        .expect("rkyv accepts the table");
    let mismatched = unchecked_mirror_mismatches(&arena, &lex);
    assert!(mismatched > 0, "the fixture no longer has bad mirror bytes");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (k, _) in lex.iter() {
            black_box(lex.get(k.as_str()));
        }
        black_box(lex.get("absent"));
        let _ = tx.send(());
    });
    let outcome = rx.recv_timeout(std::time::Duration::from_secs(5));
    drop(arena);
    scratch.remove();
    scope.finish();
    assert!(
        outcome.is_ok(),
        "{mismatched} wrapped control bytes differ from what they mirror, rkyv validated the \
         map, and its lookups did not return normally within 5 s ({outcome:?}: Timeout = hang, \
         Disconnected = panic)"
    );
}
