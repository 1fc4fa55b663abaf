//! The arena byte format: encoding and checking of the header and the table of contents.
//!
//! This module does no I/O. It parses and checks `&[u8]`, so it can be unit-tested, fuzzed and
//! run under Miri without a mapping. docs/FORMAT.md describes the same layout byte by byte; the
//! two must change together.
//!
//! Every integer is stored little-endian and read with `from_le_bytes`, so parsing never depends
//! on the alignment of the input.

use core::fmt;

/// The eight bytes every arena starts with.
pub const MAGIC: [u8; 8] = *b"SHMARENA";
/// The newest format version this crate writes and reads. It reads every version from
/// [`MIN_FORMAT_VERSION`] up to this one, and writes the lowest version that can express an
/// arena's entries (version 1 unless an entry has a shape or a version-2 primitive).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this crate reads.
pub const MIN_FORMAT_VERSION: u32 = 1;
/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 128;
/// Length of one table-of-contents entry in bytes.
pub const TOC_ENTRY_LEN: usize = 96;
/// Alignment of POD and byte entries.
pub const POD_ALIGN: usize = 64;
/// Minimum alignment of archived (rkyv) entries.
pub const ARCHIVED_ALIGN: usize = 16;
/// Largest alignment an entry may declare.
pub const MAX_ALIGN: usize = 4096;
/// Longest entry name, in bytes.
pub const MAX_ENTRY_NAME: usize = 255;
/// Longest type name recorded in a fingerprint, in bytes (longer names are truncated when
/// written; the hash still covers the whole name).
pub const MAX_TYPE_NAME: usize = 1024;

/// `state` value of an arena whose writer has not sealed it (or died).
pub const STATE_BUILDING: u32 = 1;
/// `state` value of a finished, read-only arena.
pub const STATE_SEALED: u32 = 2;

/// `endian` value for little-endian.
pub const ENDIAN_LITTLE: u8 = 1;
/// `endian` value for big-endian.
pub const ENDIAN_BIG: u8 = 2;

/// The rkyv format generation this crate archives with (0.8).
pub const RKYV_MAJOR: u8 = 0;
/// See [`RKYV_MAJOR`].
pub const RKYV_MINOR: u8 = 8;

/// Entry flag: the writer validated this archived entry with bytecheck before sealing, or
/// vouched for it (`ArenaWriter::put_trusted`). Information only: readers never trust it.
pub const FLAG_VALIDATED: u8 = 1;
/// Entry flag (format version 2): the entry records a shape (`ndim` and the dimensions).
pub const FLAG_SHAPED: u8 = 2;
/// Most dimensions a shaped entry may record.
pub const MAX_NDIM: usize = 64;

/// Largest array a shape may describe, in bytes: numpy's limit (`npy_intp`), `2^63 - 1`.
pub const MAX_ARRAY_BYTES: u64 = i64::MAX as u64;

/// The number of elements of `shape` (0 if any dimension is 0), if the product of its non-zero
/// dimensions times `elem_size` (at least 1) is at most [`MAX_ARRAY_BYTES`]: FORMAT.md's E16.
/// The result does not depend on the order of the dimensions (`[2^40, 2^40, 0]` and
/// `[0, 2^40, 2^40]` are the same), and every shape it accepts is one numpy can build.
pub fn shape_elements(shape: &[u64], elem_size: u64) -> Option<u64> {
    let mut bytes = elem_size.max(1);
    let mut empty = false;
    for &d in shape {
        if d == 0 {
            empty = true;
        } else {
            bytes = bytes.checked_mul(d).filter(|b| *b <= MAX_ARRAY_BYTES)?;
        }
    }
    Some(if empty { 0 } else { bytes / elem_size.max(1) })
}

/// Endianness of the running process, as recorded in the header.
pub const NATIVE_ENDIAN: u8 = if cfg!(target_endian = "little") {
    ENDIAN_LITTLE
} else {
    ENDIAN_BIG
};

/// Width in bytes of rkyv relative pointers in this build (4, or 8 with `pointer_width_64`).
pub const NATIVE_POINTER_WIDTH: u8 = core::mem::size_of::<rkyv::primitive::FixedUsize>() as u8;

/// The kind of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// An rkyv archive of one value; read with [`Arena::get`](crate::Arena::get).
    Archived,
    /// A slice of plain-old-data elements; read with [`Arena::slice`](crate::Arena::slice).
    Pod,
    /// Opaque bytes; read with [`Arena::bytes`](crate::Arena::bytes).
    Bytes,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Archived => 1,
            Kind::Pod => 2,
            Kind::Bytes => 3,
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::Archived),
            2 => Some(Kind::Pod),
            3 => Some(Kind::Bytes),
            _ => None,
        }
    }

    /// A lowercase name for messages and tools.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Archived => "archived",
            Kind::Pod => "pod",
            Kind::Bytes => "bytes",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The element type of a POD entry, so tools can print it without knowing the Rust type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Prim {
    /// Not a primitive (a `#[repr(C)]` struct, say), or not a POD entry.
    Opaque,
    /// `u8`
    U8,
    /// `u16`
    U16,
    /// `u32`
    U32,
    /// `u64`
    U64,
    /// `i8`
    I8,
    /// `i16`
    I16,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// Format version 2: a boolean, one byte, `0` false and `1` true (numpy `bool`).
    Bool,
    /// Format version 2: an IEEE 754 binary16 float (numpy `float16`).
    F16,
    /// Format version 2: a complex number, two `f32` (real, imaginary; numpy `complex64`).
    C64,
    /// Format version 2: a complex number, two `f64` (real, imaginary; numpy `complex128`).
    C128,
    /// Format version 2: numpy `datetime64`, an `i64` count of the unit in the entry's
    /// `prim_arg` since 1970-01-01T00:00 (`i64::MIN` is NaT).
    DateTime64,
    /// Format version 2: numpy `timedelta64`, an `i64` count of the unit in `prim_arg`
    /// (`i64::MIN` is NaT).
    TimeDelta64,
    /// Format version 2: a fixed-width byte string of `elem_size` bytes, padded with NUL
    /// bytes (numpy `S<elem_size>`).
    FixedBytes,
    /// Format version 2: a fixed-width Unicode string of `elem_size / 4` code points, each a
    /// `u32` in the header's byte order, padded with zeros (numpy `U<elem_size / 4>`).
    FixedUnicode,
}

/// Units of [`Prim::DateTime64`] and [`Prim::TimeDelta64`] by their `prim_arg` code
/// (numpy's unit names; code 0 is numpy's generic unit).
pub const TIME_UNITS: [&str; 14] = [
    "generic", "Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as",
];

impl Prim {
    const ALL: [Prim; 19] = [
        Prim::Opaque,
        Prim::U8,
        Prim::U16,
        Prim::U32,
        Prim::U64,
        Prim::I8,
        Prim::I16,
        Prim::I32,
        Prim::I64,
        Prim::F32,
        Prim::F64,
        Prim::Bool,
        Prim::F16,
        Prim::C64,
        Prim::C128,
        Prim::DateTime64,
        Prim::TimeDelta64,
        Prim::FixedBytes,
        Prim::FixedUnicode,
    ];

    /// Number of primitive codes format version 1 knows (`0..=10`).
    const V1_CODES: usize = 11;

    /// The byte stored in the table of contents.
    fn code(self) -> u8 {
        Prim::ALL.iter().position(|p| *p == self).unwrap_or(0) as u8
    }

    /// Parses a stored byte of an arena of format `version`.
    fn from_code(code: u8, version: u32) -> Option<Prim> {
        let known = if version < 2 {
            Prim::V1_CODES
        } else {
            Prim::ALL.len()
        };
        Prim::ALL[..known].get(usize::from(code)).copied()
    }

    /// The code stored in the table of contents.
    pub fn to_code(self) -> u8 {
        self.code()
    }

    /// Whether an entry of this primitive needs format version 2.
    pub fn needs_v2(self) -> bool {
        usize::from(self.code()) >= Prim::V1_CODES
    }

    /// Whether `elem_size` is a valid element size for this primitive (any size for `Opaque`;
    /// at least 1 for `FixedBytes`; a positive multiple of 4 for `FixedUnicode`).
    pub fn fits(self, elem_size: u64) -> bool {
        match self {
            Prim::Opaque => true,
            Prim::FixedBytes => elem_size >= 1,
            Prim::FixedUnicode => elem_size >= 4 && elem_size % 4 == 0,
            p => p.size().map(|s| s as u64) == Some(elem_size),
        }
    }

    /// The natural alignment of one element, or `None` for `Opaque`.
    pub fn align(self) -> Option<usize> {
        match self {
            Prim::Opaque => None,
            Prim::C64 | Prim::FixedUnicode => Some(4),
            Prim::C128 => Some(8),
            Prim::FixedBytes => Some(1),
            p => p.size(),
        }
    }

    /// The primitive named by a Rust type name such as `"f32"`, else `Opaque`.
    pub(crate) fn from_type_name(name: &str) -> Prim {
        match name {
            "u8" => Prim::U8,
            "u16" => Prim::U16,
            "u32" => Prim::U32,
            "u64" => Prim::U64,
            "i8" => Prim::I8,
            "i16" => Prim::I16,
            "i32" => Prim::I32,
            "i64" => Prim::I64,
            "f32" => Prim::F32,
            "f64" => Prim::F64,
            _ => Prim::Opaque,
        }
    }

    /// Size in bytes of one element, or `None` for `Opaque` and the fixed-width strings (whose
    /// size is the entry's `elem_size`).
    pub fn size(self) -> Option<usize> {
        match self {
            Prim::Opaque => None,
            Prim::U8 | Prim::I8 => Some(1),
            Prim::U16 | Prim::I16 => Some(2),
            Prim::U32 | Prim::I32 | Prim::F32 => Some(4),
            Prim::U64 | Prim::I64 | Prim::F64 => Some(8),
            Prim::Bool => Some(1),
            Prim::F16 => Some(2),
            Prim::C64 | Prim::DateTime64 | Prim::TimeDelta64 => Some(8),
            Prim::C128 => Some(16),
            Prim::FixedBytes | Prim::FixedUnicode => None,
        }
    }

    /// The name of the primitive: Rust's for the Rust primitives, else the names of
    /// docs/FORMAT.md (`"opaque"` for `Opaque`).
    pub fn as_str(self) -> &'static str {
        match self {
            Prim::Opaque => "opaque",
            Prim::U8 => "u8",
            Prim::U16 => "u16",
            Prim::U32 => "u32",
            Prim::U64 => "u64",
            Prim::I8 => "i8",
            Prim::I16 => "i16",
            Prim::I32 => "i32",
            Prim::I64 => "i64",
            Prim::F32 => "f32",
            Prim::F64 => "f64",
            Prim::Bool => "bool",
            Prim::F16 => "f16",
            Prim::C64 => "c64",
            Prim::C128 => "c128",
            Prim::DateTime64 => "datetime64",
            Prim::TimeDelta64 => "timedelta64",
            Prim::FixedBytes => "bytes-string",
            Prim::FixedUnicode => "unicode-string",
        }
    }
}

/// Why a byte buffer is not a valid arena. The arena layer adds which segment it was.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The buffer does not start with [`MAGIC`].
    BadMagic,
    /// The format version is not one this build reads ([`MIN_FORMAT_VERSION`] to
    /// [`FORMAT_VERSION`]).
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// Archived entries use relative pointers of another width than this build.
    PointerWidth {
        /// Width recorded in the arena, in bytes.
        found: u8,
        /// Width of this build, in bytes.
        expected: u8,
    },
    /// The arena was written on a machine of the other byte order, or by another rkyv generation.
    Incompatible {
        /// What differs.
        detail: String,
    },
    /// The buffer is shorter than the arena says it is.
    Truncated {
        /// Bytes the arena needs.
        needed: u64,
        /// Bytes available.
        len: u64,
    },
    /// The header says the arena is still being built (or its writer died).
    StillBuilding,
    /// A field is out of range or a checksum does not match.
    Corrupted {
        /// What is wrong, naming the field or entry.
        detail: String,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::BadMagic => write!(f, "bad magic: not a shmarena arena"),
            FormatError::UnsupportedVersion { found } => write!(
                f,
                "unsupported format version {found} (this build reads versions \
                 {MIN_FORMAT_VERSION} to {FORMAT_VERSION})"
            ),
            FormatError::PointerWidth { found, expected } => write!(
                f,
                "archived with {}-bit relative pointers, but this build uses {}-bit \
                 (toggle the `pointer_width_64` feature to match)",
                u32::from(*found) * 8,
                u32::from(*expected) * 8
            ),
            FormatError::Incompatible { detail } => write!(f, "incompatible arena: {detail}"),
            FormatError::Truncated { needed, len } => {
                write!(
                    f,
                    "truncated: needs {needed} bytes but only {len} are there"
                )
            }
            FormatError::StillBuilding => {
                write!(
                    f,
                    "still being built (not sealed; its writer may have died)"
                )
            }
            FormatError::Corrupted { detail } => write!(f, "corrupted: {detail}"),
        }
    }
}

impl std::error::Error for FormatError {}

fn corrupted(detail: impl Into<String>) -> FormatError {
    FormatError::Corrupted {
        detail: detail.into(),
    }
}

/// Byte offsets of the header fields (docs/FORMAT.md has the same table). Hidden: for the
/// crate's tests and fuzzers, which build damaged headers; readers use [`Header::parse`].
#[doc(hidden)]
pub mod header_offsets {
    /// `[u8; 8]` magic.
    pub const MAGIC: usize = 0;
    /// `u32` format version.
    pub const VERSION: usize = 8;
    /// `u8` endianness.
    pub const ENDIAN: usize = 12;
    /// `u8` rkyv relative pointer width in bytes.
    pub const POINTER_WIDTH: usize = 13;
    /// `u8` rkyv major version.
    pub const RKYV_MAJOR: usize = 14;
    /// `u8` rkyv minor version.
    pub const RKYV_MINOR: usize = 15;
    /// `u32` header length.
    pub const HEADER_LEN: usize = 16;
    /// `u32` state.
    pub const STATE: usize = 20;
    /// `u64` total length.
    pub const TOTAL_LEN: usize = 24;
    /// `[u8; 16]` arena id.
    pub const ARENA_ID: usize = 32;
    /// `u32` creator pid.
    pub const CREATOR_PID: usize = 48;
    /// `u32` reserved.
    pub const RESERVED0: usize = 52;
    /// `u64` creator start time (clock ticks after boot).
    pub const CREATOR_START: usize = 56;
    /// `u64` creation time (ns since the Unix epoch).
    pub const CREATED_NS: usize = 64;
    /// `u64` table of contents offset.
    pub const TOC_OFFSET: usize = 72;
    /// `u64` table of contents length.
    pub const TOC_LEN: usize = 80;
    /// `u32` number of entries.
    pub const ENTRY_COUNT: usize = 88;
    /// `u32` reserved.
    pub const RESERVED1: usize = 92;
    /// `u64` xxh3-64 of the table of contents.
    pub const TOC_CHECKSUM: usize = 96;
    /// `[u8; 16]` reserved, zero.
    pub const RESERVED2: usize = 104;
    /// `u64` xxh3-64 of header bytes `0..120`.
    pub const HEADER_CHECKSUM: usize = 120;
}

use header_offsets as ho;

/// The fixed header at offset 0 of every arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version ([`MIN_FORMAT_VERSION`] to [`FORMAT_VERSION`]).
    pub version: u32,
    /// Byte order of the writer (see [`NATIVE_ENDIAN`]).
    pub endian: u8,
    /// Width of rkyv relative pointers in bytes.
    pub pointer_width: u8,
    /// rkyv format generation, major.
    pub rkyv_major: u8,
    /// rkyv format generation, minor.
    pub rkyv_minor: u8,
    /// [`STATE_BUILDING`] or [`STATE_SEALED`].
    pub state: u32,
    /// Length of the whole arena in bytes (header, payloads, table of contents).
    pub total_len: u64,
    /// Random id, fixed at creation.
    pub arena_id: [u8; 16],
    /// Process id of the process that wrote the arena.
    pub creator_pid: u32,
    /// Start time of the writer process, in clock ticks after boot (`/proc/PID/stat` field 22).
    pub creator_start: u64,
    /// Creation time, in nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// Offset of the table of contents.
    pub toc_offset: u64,
    /// Length of the table of contents (entries, then names).
    pub toc_len: u64,
    /// Number of entries.
    pub entry_count: u32,
    /// xxh3-64 of the table of contents bytes.
    pub toc_checksum: u64,
}

impl Header {
    /// A header for an arena being built by this process.
    pub(crate) fn new_building(
        arena_id: [u8; 16],
        creator_pid: u32,
        creator_start: u64,
        created_ns: u64,
    ) -> Header {
        Header {
            version: MIN_FORMAT_VERSION,
            endian: NATIVE_ENDIAN,
            pointer_width: NATIVE_POINTER_WIDTH,
            rkyv_major: RKYV_MAJOR,
            rkyv_minor: RKYV_MINOR,
            state: STATE_BUILDING,
            total_len: 0,
            arena_id,
            creator_pid,
            creator_start,
            created_ns,
            toc_offset: 0,
            toc_len: 0,
            entry_count: 0,
            toc_checksum: 0,
        }
    }

    /// Encodes the header, computing its checksum. Hidden: the writer's, and the tests' for
    /// re-encoding damaged headers.
    #[doc(hidden)]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[ho::MAGIC..ho::MAGIC + 8].copy_from_slice(&MAGIC);
        put_u32(&mut b, ho::VERSION, self.version);
        b[ho::ENDIAN] = self.endian;
        b[ho::POINTER_WIDTH] = self.pointer_width;
        b[ho::RKYV_MAJOR] = self.rkyv_major;
        b[ho::RKYV_MINOR] = self.rkyv_minor;
        put_u32(&mut b, ho::HEADER_LEN, HEADER_LEN as u32);
        put_u32(&mut b, ho::STATE, self.state);
        put_u64(&mut b, ho::TOTAL_LEN, self.total_len);
        b[ho::ARENA_ID..ho::ARENA_ID + 16].copy_from_slice(&self.arena_id);
        put_u32(&mut b, ho::CREATOR_PID, self.creator_pid);
        put_u64(&mut b, ho::CREATOR_START, self.creator_start);
        put_u64(&mut b, ho::CREATED_NS, self.created_ns);
        put_u64(&mut b, ho::TOC_OFFSET, self.toc_offset);
        put_u64(&mut b, ho::TOC_LEN, self.toc_len);
        put_u32(&mut b, ho::ENTRY_COUNT, self.entry_count);
        put_u64(&mut b, ho::TOC_CHECKSUM, self.toc_checksum);
        let sum = checksum(&b[..ho::HEADER_CHECKSUM]);
        put_u64(&mut b, ho::HEADER_CHECKSUM, sum);
        b
    }

    /// Parses and checks the header at the start of `bytes`.
    ///
    /// Makes checks H1 to H9 of docs/FORMAT.md in their order (magic, length, version, header
    /// checksum, header length, byte order, rkyv generation, pointer width, a known state), so
    /// the first error is the most telling one. It does not refuse a building state (H10):
    /// tools may want to look at a header that is still building. See [`Header::require_sealed`].
    pub fn parse(bytes: &[u8]) -> Result<Header, FormatError> {
        if bytes.len() < 8 || bytes[..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::Truncated {
                needed: HEADER_LEN as u64,
                len: bytes.len() as u64,
            });
        }
        let b = &bytes[..HEADER_LEN];
        let version = get_u32(b, ho::VERSION);
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion { found: version });
        }
        let stored = get_u64(b, ho::HEADER_CHECKSUM);
        let computed = checksum(&b[..ho::HEADER_CHECKSUM]);
        if stored != computed {
            return Err(corrupted(format!(
                "header checksum mismatch (stored {stored:#018x}, computed {computed:#018x})"
            )));
        }
        let header_len = get_u32(b, ho::HEADER_LEN);
        if header_len as usize != HEADER_LEN {
            return Err(corrupted(format!(
                "header length is {header_len}, expected {HEADER_LEN}"
            )));
        }
        let h = Header {
            version,
            endian: b[ho::ENDIAN],
            pointer_width: b[ho::POINTER_WIDTH],
            rkyv_major: b[ho::RKYV_MAJOR],
            rkyv_minor: b[ho::RKYV_MINOR],
            state: get_u32(b, ho::STATE),
            total_len: get_u64(b, ho::TOTAL_LEN),
            arena_id: b[ho::ARENA_ID..ho::ARENA_ID + 16]
                .try_into()
                .expect("16 bytes"),
            creator_pid: get_u32(b, ho::CREATOR_PID),
            creator_start: get_u64(b, ho::CREATOR_START),
            created_ns: get_u64(b, ho::CREATED_NS),
            toc_offset: get_u64(b, ho::TOC_OFFSET),
            toc_len: get_u64(b, ho::TOC_LEN),
            entry_count: get_u32(b, ho::ENTRY_COUNT),
            toc_checksum: get_u64(b, ho::TOC_CHECKSUM),
        };
        if h.endian != NATIVE_ENDIAN {
            return Err(FormatError::Incompatible {
                detail: format!(
                    "written {}-endian, this machine is {}-endian",
                    endian_name(h.endian),
                    endian_name(NATIVE_ENDIAN)
                ),
            });
        }
        if (h.rkyv_major, h.rkyv_minor) != (RKYV_MAJOR, RKYV_MINOR) {
            return Err(FormatError::Incompatible {
                detail: format!(
                    "archived with rkyv {}.{}, this build uses rkyv {RKYV_MAJOR}.{RKYV_MINOR}",
                    h.rkyv_major, h.rkyv_minor
                ),
            });
        }
        if h.pointer_width != NATIVE_POINTER_WIDTH {
            return Err(FormatError::PointerWidth {
                found: h.pointer_width,
                expected: NATIVE_POINTER_WIDTH,
            });
        }
        if h.state != STATE_BUILDING && h.state != STATE_SEALED {
            return Err(corrupted(format!("unknown state {}", h.state)));
        }
        Ok(h)
    }

    /// `Err(StillBuilding)` unless the header says sealed.
    pub fn require_sealed(&self) -> Result<(), FormatError> {
        if self.state == STATE_SEALED {
            Ok(())
        } else {
            Err(FormatError::StillBuilding)
        }
    }

    /// The state as a word for tools: `"building"` or `"sealed"`.
    pub fn state_name(&self) -> &'static str {
        if self.state == STATE_SEALED {
            "sealed"
        } else {
            "building"
        }
    }
}

fn endian_name(e: u8) -> &'static str {
    match e {
        ENDIAN_LITTLE => "little",
        ENDIAN_BIG => "big",
        _ => "unknown",
    }
}

/// One entry of the table of contents, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Entry name (UTF-8, 1 to [`MAX_ENTRY_NAME`] bytes).
    pub name: String,
    /// What the payload is.
    pub kind: Kind,
    /// Element type of a POD entry.
    pub prim: Prim,
    /// [`FLAG_VALIDATED`] and future flags.
    pub flags: u8,
    /// Alignment of the archived root type or the element type (a power of two). Payloads
    /// start at a multiple of it, and archived payloads at a multiple of 16 at least.
    pub align: u32,
    /// Offset of the payload from the start of the arena.
    pub offset: u64,
    /// Length of the payload in bytes.
    pub len: u64,
    /// Position of the rkyv root inside the payload (archived entries), else 0.
    pub root_pos: u64,
    /// Element count (POD), byte count (bytes) or 1 (archived).
    pub count: u64,
    /// Size of the archived root type or of one element.
    pub elem_size: u64,
    /// xxh3-64 of the full type name.
    pub type_hash: u64,
    /// The type name (possibly truncated to [`MAX_TYPE_NAME`] bytes).
    pub type_name: String,
    /// xxh3-64 of the payload bytes.
    pub checksum: u64,
    /// Format version 2: the parameter of the primitive (the unit code of
    /// [`Prim::DateTime64`] and [`Prim::TimeDelta64`], see [`TIME_UNITS`]); 0 otherwise.
    pub prim_arg: u8,
    /// Format version 2: the shape of a POD entry (row-major, the product of the dimensions is
    /// `count`); `None` for a plain one-dimensional entry. Stored with [`FLAG_SHAPED`].
    pub shape: Option<Vec<u64>>,
}

impl Entry {
    /// The payload range inside the arena.
    pub fn range(&self) -> core::ops::Range<usize> {
        // Parsing checked offset + len <= toc_offset <= total_len <= buffer length (a usize).
        self.offset as usize..(self.offset + self.len) as usize
    }

    /// Whether the writer validated this archived entry before sealing, or vouched for it
    /// (`put_trusted`). Information only, like every byte of the arena.
    pub fn validated_at_build(&self) -> bool {
        self.flags & FLAG_VALIDATED != 0
    }

    /// The dimensions of the entry: its recorded shape, else `[count]`.
    pub fn dims(&self) -> Vec<u64> {
        self.shape.clone().unwrap_or_else(|| vec![self.count])
    }

    /// Whether this entry needs format version 2 (a shape, a version-2 primitive or a
    /// primitive parameter).
    pub fn needs_v2(&self) -> bool {
        self.shape.is_some() || self.prim.needs_v2() || self.prim_arg != 0
    }

    /// The element type as one word for tools: the primitive's name, with the unit of a
    /// datetime or the width of a string (`datetime64[ns]`, `bytes-string[16]`).
    pub fn dtype_name(&self) -> String {
        match self.prim {
            Prim::DateTime64 | Prim::TimeDelta64 => format!(
                "{}[{}]",
                self.prim.as_str(),
                TIME_UNITS
                    .get(usize::from(self.prim_arg))
                    .copied()
                    .unwrap_or("?")
            ),
            Prim::FixedBytes => format!("{}[{}]", self.prim.as_str(), self.elem_size),
            Prim::FixedUnicode => format!("{}[{}]", self.prim.as_str(), self.elem_size / 4),
            p => p.as_str().to_owned(),
        }
    }

    /// The type fingerprint `(kind, type_hash, elem_size, align)` as one word for tools:
    /// `kind:type_hash:elem_size:align`, the hash in 16 hex digits.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}:{:016x}:{}:{}",
            self.kind, self.type_hash, self.elem_size, self.align
        )
    }
}

/// Offsets inside a table-of-contents entry. Hidden: for the crate's tests and fuzzers;
/// readers use [`Layout::parse`].
#[doc(hidden)]
pub mod entry_offsets {
    /// `u32` offset of the name in the names area.
    pub const NAME_OFF: usize = 0;
    /// `u32` length of the name.
    pub const NAME_LEN: usize = 4;
    /// `u8` kind.
    pub const KIND: usize = 8;
    /// `u8` primitive tag.
    pub const PRIM: usize = 9;
    /// `u8` flags.
    pub const FLAGS: usize = 10;
    /// `u8` primitive parameter (version 2; reserved in version 1).
    pub const PRIM_ARG: usize = 11;
    /// `u32` alignment.
    pub const ALIGN: usize = 12;
    /// `u64` payload offset.
    pub const OFFSET: usize = 16;
    /// `u64` payload length.
    pub const LEN: usize = 24;
    /// `u64` root position.
    pub const ROOT_POS: usize = 32;
    /// `u64` element count.
    pub const COUNT: usize = 40;
    /// `u64` element or root size.
    pub const ELEM_SIZE: usize = 48;
    /// `u64` type name hash.
    pub const TYPE_HASH: usize = 56;
    /// `u32` offset of the type name in the names area.
    pub const TYPE_NAME_OFF: usize = 64;
    /// `u32` length of the type name.
    pub const TYPE_NAME_LEN: usize = 68;
    /// `u64` payload checksum.
    pub const CHECKSUM: usize = 72;
    /// `u32` offset of the shape in the names area (version 2 with `FLAG_SHAPED`).
    pub const SHAPE_OFF: usize = 80;
    /// `u32` number of dimensions (version 2 with `FLAG_SHAPED`).
    pub const NDIM: usize = 84;
}

use entry_offsets as eo;

/// Encodes a table of contents: `entries.len()` fixed entries, then the names area. Hidden:
/// the writer's, and the corruption tests' for re-encoding damaged tables.
#[doc(hidden)]
pub fn encode_toc(entries: &[Entry]) -> Vec<u8> {
    let mut names = Vec::new();
    let mut fixed = vec![0u8; entries.len() * TOC_ENTRY_LEN];
    for (i, e) in entries.iter().enumerate() {
        let b = &mut fixed[i * TOC_ENTRY_LEN..(i + 1) * TOC_ENTRY_LEN];
        let type_name = truncate_utf8(&e.type_name, MAX_TYPE_NAME);
        put_u32(b, eo::NAME_OFF, names.len() as u32);
        put_u32(b, eo::NAME_LEN, e.name.len() as u32);
        names.extend_from_slice(e.name.as_bytes());
        b[eo::KIND] = e.kind.code();
        b[eo::PRIM] = e.prim.code();
        b[eo::FLAGS] = e.flags;
        put_u32(b, eo::ALIGN, e.align);
        put_u64(b, eo::OFFSET, e.offset);
        put_u64(b, eo::LEN, e.len);
        put_u64(b, eo::ROOT_POS, e.root_pos);
        put_u64(b, eo::COUNT, e.count);
        put_u64(b, eo::ELEM_SIZE, e.elem_size);
        put_u64(b, eo::TYPE_HASH, e.type_hash);
        put_u32(b, eo::TYPE_NAME_OFF, names.len() as u32);
        put_u32(b, eo::TYPE_NAME_LEN, type_name.len() as u32);
        names.extend_from_slice(type_name.as_bytes());
        put_u64(b, eo::CHECKSUM, e.checksum);
        b[eo::PRIM_ARG] = e.prim_arg;
        if let Some(shape) = &e.shape {
            // Dimensions start 8-aligned from the names area (readers must not rely on it).
            names.resize(names.len().next_multiple_of(8), 0);
            b[eo::FLAGS] |= FLAG_SHAPED;
            put_u32(b, eo::SHAPE_OFF, names.len() as u32);
            put_u32(b, eo::NDIM, shape.len() as u32);
            for d in shape {
                names.extend_from_slice(&d.to_le_bytes());
            }
        }
    }
    fixed.extend_from_slice(&names);
    fixed
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A parsed and fully bounds-checked arena: its header and table of contents.
///
/// Every entry's payload range lies inside the buffer it was parsed from, entries do not overlap
/// each other, the header or the table, offsets are aligned as declared, and names are unique.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The header.
    pub header: Header,
    /// The entries, in the order they were added.
    pub entries: Vec<Entry>,
    /// (xxh3-64 of the name, entry index), sorted: [`Layout::find`] by binary search.
    by_name: NameIndex,
}

/// (xxh3-64 of the name, entry index) pairs sorted (built by [`Layout::parse_with`], which also
/// checks that the names are unique). Sorting fixed-size keys costs far less than sorting the
/// names themselves. Compared and printed by length only: it follows from the entries.
#[derive(Clone, Default)]
struct NameIndex(Vec<(u64, u32)>);

/// The key of a name in [`NameIndex`].
fn name_key(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

impl PartialEq for NameIndex {
    fn eq(&self, other: &NameIndex) -> bool {
        self.0.len() == other.0.len()
    }
}

impl Eq for NameIndex {}

impl std::fmt::Debug for NameIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NameIndex({} names)", self.0.len())
    }
}

impl Layout {
    /// Parses and checks a sealed arena. O(entries): payloads are not read.
    pub fn parse(bytes: &[u8]) -> Result<Layout, FormatError> {
        let header = Header::parse(bytes)?;
        header.require_sealed()?;
        Layout::parse_with(bytes, header)
    }

    /// Checks the table of contents against an already parsed, sealed header: checks T1 to T9
    /// of docs/FORMAT.md (with E1 to E16 for each entry), in their order.
    pub fn parse_with(bytes: &[u8], header: Header) -> Result<Layout, FormatError> {
        let total = header.total_len;
        if total < HEADER_LEN as u64 {
            return Err(corrupted(format!(
                "total length {total} is smaller than the header"
            )));
        }
        if total > bytes.len() as u64 {
            return Err(FormatError::Truncated {
                needed: total,
                len: bytes.len() as u64,
            });
        }
        let toc_off = header.toc_offset;
        let toc_len = header.toc_len;
        let toc_end = toc_off
            .checked_add(toc_len)
            .ok_or_else(|| corrupted("table of contents offset + length overflows"))?;
        if toc_off < HEADER_LEN as u64 || toc_off % 8 != 0 || toc_end != total {
            return Err(corrupted(format!(
                "table of contents at {toc_off}..{toc_end} does not end the arena of {total} bytes \
                 on an 8-byte boundary"
            )));
        }
        let count = u64::from(header.entry_count);
        let fixed_len = count * TOC_ENTRY_LEN as u64;
        if fixed_len > toc_len {
            return Err(corrupted(format!(
                "{count} entries need {fixed_len} bytes but the table of contents has {toc_len}"
            )));
        }
        let toc = &bytes[toc_off as usize..toc_end as usize];
        let computed = checksum(toc);
        if computed != header.toc_checksum {
            return Err(corrupted(format!(
                "table of contents checksum mismatch (stored {:#018x}, computed {computed:#018x})",
                header.toc_checksum
            )));
        }
        let (fixed, names) = toc.split_at(fixed_len as usize);
        let mut entries = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let b = &fixed[i * TOC_ENTRY_LEN..(i + 1) * TOC_ENTRY_LEN];
            entries.push(parse_entry(i, b, names, toc_off, header.version)?);
        }
        check_disjoint(&entries)?;
        // `count` fits a u32 (it is the header's), so every index does.
        let mut by_name: Vec<(u64, u32)> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (name_key(&e.name), i as u32))
            .collect();
        by_name.sort_unstable();
        // Equal names have equal keys: compare the names within each run of equal keys (a
        // run is one pair long unless two names collide or repeat).
        for run in by_name.chunk_by(|a, b| a.0 == b.0).filter(|r| r.len() > 1) {
            for (k, a) in run.iter().enumerate() {
                let a = &entries[a.1 as usize].name;
                if run[k + 1..]
                    .iter()
                    .any(|b| entries[b.1 as usize].name == *a)
                {
                    return Err(corrupted(format!("entry name {a:?} appears twice")));
                }
            }
        }
        Ok(Layout {
            header,
            entries,
            by_name: NameIndex(by_name),
        })
    }

    /// The entries' names, in table order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// The entry with this name: a binary search of an index of the names' hashes built by
    /// [`Layout::parse`], O(log entries).
    ///
    /// The index describes `entries` as parsed. A program that changes that public field
    /// afterwards gets a scan when the number of entries changed, and otherwise answers that
    /// may miss renamed entries (never an entry of another name): parse the bytes again instead.
    pub fn find(&self, name: &str) -> Option<(usize, &Entry)> {
        let index = &self.by_name.0;
        if index.len() != self.entries.len() {
            return self
                .entries
                .iter()
                .enumerate()
                .find(|(_, e)| e.name == name);
        }
        let key = name_key(name);
        let start = index.partition_point(|&(k, _)| k < key);
        index[start..]
            .iter()
            .take_while(|&&(k, _)| k == key)
            .find_map(|&(_, i)| {
                let i = i as usize;
                self.entries
                    .get(i)
                    .filter(|e| e.name == name)
                    .map(|e| (i, e))
            })
    }
}

fn parse_entry(
    i: usize,
    b: &[u8],
    names: &[u8],
    toc_off: u64,
    version: u32,
) -> Result<Entry, FormatError> {
    let name = read_str(names, get_u32(b, eo::NAME_OFF), get_u32(b, eo::NAME_LEN))
        .map_err(|why| corrupted(format!("entry #{i}: name {why}")))?;
    let at = |what: &str| format!("entry #{i} {name:?}: {what}");
    if name.is_empty() || name.len() > MAX_ENTRY_NAME {
        return Err(corrupted(at("name length out of range")));
    }
    let kind = Kind::from_code(b[eo::KIND])
        .ok_or_else(|| corrupted(at(&format!("unknown kind {}", b[eo::KIND]))))?;
    let prim = Prim::from_code(b[eo::PRIM], version).ok_or_else(|| {
        corrupted(at(&format!(
            "unknown primitive tag {} for format version {version}",
            b[eo::PRIM]
        )))
    })?;
    let type_name = read_str(
        names,
        get_u32(b, eo::TYPE_NAME_OFF),
        get_u32(b, eo::TYPE_NAME_LEN),
    )
    .map_err(|why| corrupted(at(&format!("type name {why}"))))?;
    // Version 1 reserves byte 11 and bytes 80..96 and knows only flag bit 0: ignore the rest.
    let v2 = version >= 2;
    let flags = b[eo::FLAGS];
    let e = Entry {
        name: name.clone(),
        kind,
        prim,
        flags: if v2 { flags } else { flags & FLAG_VALIDATED },
        align: get_u32(b, eo::ALIGN),
        offset: get_u64(b, eo::OFFSET),
        len: get_u64(b, eo::LEN),
        root_pos: get_u64(b, eo::ROOT_POS),
        count: get_u64(b, eo::COUNT),
        elem_size: get_u64(b, eo::ELEM_SIZE),
        type_hash: get_u64(b, eo::TYPE_HASH),
        type_name,
        checksum: get_u64(b, eo::CHECKSUM),
        prim_arg: if v2 { b[eo::PRIM_ARG] } else { 0 },
        shape: None,
    };
    let align = u64::from(e.align);
    if !e.align.is_power_of_two() || align > MAX_ALIGN as u64 {
        return Err(corrupted(at(&format!(
            "alignment {} is not a power of two up to {MAX_ALIGN}",
            e.align
        ))));
    }
    let end = e
        .offset
        .checked_add(e.len)
        .ok_or_else(|| corrupted(at("offset + length overflows")))?;
    if e.offset < HEADER_LEN as u64 || end > toc_off {
        return Err(corrupted(at(&format!(
            "payload {}..{end} lies outside the payload area {HEADER_LEN}..{toc_off}",
            e.offset
        ))));
    }
    let min_align = if kind == Kind::Archived {
        ARCHIVED_ALIGN as u64
    } else {
        1
    };
    if e.offset % align.max(min_align) != 0 {
        return Err(corrupted(at(&format!(
            "offset {} is not aligned to {}",
            e.offset,
            align.max(min_align)
        ))));
    }
    match kind {
        Kind::Archived => {
            if e.count != 1 {
                return Err(corrupted(at(&format!(
                    "archived entry has count {}, not 1",
                    e.count
                ))));
            }
            let root_end = e
                .root_pos
                .checked_add(e.elem_size)
                .ok_or_else(|| corrupted(at("root position + size overflows")))?;
            if root_end > e.len || (e.offset + e.root_pos) % align != 0 {
                return Err(corrupted(at(&format!(
                    "root of {} bytes at {} does not fit an aligned place in {} bytes",
                    e.elem_size, e.root_pos, e.len
                ))));
            }
        }
        Kind::Pod | Kind::Bytes => {
            if e.root_pos != 0 {
                return Err(corrupted(at(&format!(
                    "{kind} entry has root position {}, not 0",
                    e.root_pos
                ))));
            }
            if e.count.checked_mul(e.elem_size) != Some(e.len) {
                return Err(corrupted(at(&format!(
                    "{} elements of {} bytes do not make {} bytes",
                    e.count, e.elem_size, e.len
                ))));
            }
            if e.elem_size != 0 && e.elem_size % align != 0 {
                return Err(corrupted(at(
                    "element size is not a multiple of its alignment",
                )));
            }
            if kind == Kind::Bytes && (e.elem_size != 1 || prim != Prim::U8) {
                return Err(corrupted(at("bytes entry must have 1-byte u8 elements")));
            }
            if !prim.fits(e.elem_size) {
                return Err(corrupted(at(&format!(
                    "primitive {} cannot have {}-byte elements",
                    prim.as_str(),
                    e.elem_size
                ))));
            }
        }
    }
    let mut e = e;
    if v2 {
        let timed = matches!(prim, Prim::DateTime64 | Prim::TimeDelta64);
        let arg_ok = if timed {
            usize::from(e.prim_arg) < TIME_UNITS.len()
        } else {
            e.prim_arg == 0
        };
        if !arg_ok {
            return Err(corrupted(at(&format!(
                "primitive parameter {} is not valid for {}",
                e.prim_arg,
                prim.as_str()
            ))));
        }
        if flags & FLAG_SHAPED != 0 {
            e.shape = Some(parse_shape(b, names, &e).map_err(|why| corrupted(at(&why)))?);
        }
    }
    Ok(e)
}

/// Reads and checks the shape of a version-2 entry flagged [`FLAG_SHAPED`].
fn parse_shape(b: &[u8], names: &[u8], e: &Entry) -> Result<Vec<u64>, String> {
    if e.kind != Kind::Pod {
        return Err(format!("a {} entry cannot have a shape", e.kind));
    }
    let ndim = get_u32(b, eo::NDIM) as usize;
    if ndim > MAX_NDIM {
        return Err(format!("{ndim} dimensions, more than {MAX_NDIM}"));
    }
    let off = get_u32(b, eo::SHAPE_OFF) as usize;
    let bytes = names
        .get(off..off + 8 * ndim)
        .ok_or_else(|| format!("shape at {off}+{} lies outside the names area", 8 * ndim))?;
    let shape: Vec<u64> = bytes.chunks_exact(8).map(|c| get_u64(c, 0)).collect();
    match shape_elements(&shape, e.elem_size) {
        None => Err(format!(
            "shape {shape:?} of {}-byte elements is larger than {MAX_ARRAY_BYTES} bytes",
            e.elem_size
        )),
        Some(n) if n != e.count => Err(format!(
            "shape {shape:?} does not hold {} elements",
            e.count
        )),
        Some(_) => Ok(shape),
    }
}

fn check_disjoint(entries: &[Entry]) -> Result<(), FormatError> {
    let mut spans: Vec<(u64, u64, &str)> = entries
        .iter()
        .filter(|e| e.len > 0)
        .map(|e| (e.offset, e.offset + e.len, e.name.as_str()))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(corrupted(format!(
                "entries {:?} ({}..{}) and {:?} ({}..{}) overlap",
                w[0].2, w[0].0, w[0].1, w[1].2, w[1].0, w[1].1
            )));
        }
    }
    Ok(())
}

fn read_str(names: &[u8], off: u32, len: u32) -> Result<String, String> {
    let start = off as usize;
    let end = start
        .checked_add(len as usize)
        .filter(|end| *end <= names.len())
        .ok_or_else(|| {
            format!(
                "at {off}+{len} lies outside the names area of {} bytes",
                names.len()
            )
        })?;
    core::str::from_utf8(&names[start..end])
        .map(str::to_owned)
        .map_err(|e| format!("is not UTF-8 ({e})"))
}

/// Checks an entry's payload against its stored checksum. O(payload).
pub fn verify_payload(bytes: &[u8], entry: &Entry) -> Result<(), FormatError> {
    let payload = bytes.get(entry.range()).ok_or(FormatError::Truncated {
        needed: entry.offset + entry.len,
        len: bytes.len() as u64,
    })?;
    let computed = checksum(payload);
    if computed != entry.checksum {
        return Err(corrupted(format!(
            "entry {:?}: payload checksum mismatch (stored {:#018x}, computed {computed:#018x})",
            entry.name, entry.checksum
        )));
    }
    Ok(())
}

/// The checksum used throughout the format: xxh3-64 with seed 0.
pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Rounds `n` up to a multiple of `align` (a power of two); `None` on overflow.
pub(crate) fn align_up(n: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    n.checked_add(align - 1).map(|v| v & !(align - 1))
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a small sealed arena image by hand: one POD entry and one bytes entry.
    fn sample() -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_LEN];
        buf.resize(192, 0);
        let pod: Vec<u8> = (0u32..16).flat_map(|v| v.to_le_bytes()).collect();
        buf.extend_from_slice(&pod); // 192..256
        buf.extend_from_slice(b"hello"); // 256..261
        buf.resize(264, 0);
        let entries = vec![
            Entry {
                name: "nums".into(),
                kind: Kind::Pod,
                prim: Prim::U32,
                flags: 0,
                align: 4,
                offset: 192,
                len: 64,
                root_pos: 0,
                count: 16,
                elem_size: 4,
                type_hash: checksum(b"u32"),
                type_name: "u32".into(),
                checksum: checksum(&pod),
                prim_arg: 0,
                shape: None,
            },
            Entry {
                name: "greeting".into(),
                kind: Kind::Bytes,
                prim: Prim::U8,
                flags: 0,
                align: 1,
                offset: 256,
                len: 5,
                root_pos: 0,
                count: 5,
                elem_size: 1,
                type_hash: checksum(b"u8"),
                type_name: "u8".into(),
                checksum: checksum(b"hello"),
                prim_arg: 0,
                shape: None,
            },
        ];
        let toc = encode_toc(&entries);
        let mut h = Header::new_building([7; 16], 42, 1, 2);
        h.state = STATE_SEALED;
        h.toc_offset = buf.len() as u64;
        h.toc_len = toc.len() as u64;
        h.total_len = h.toc_offset + h.toc_len;
        h.entry_count = entries.len() as u32;
        h.toc_checksum = checksum(&toc);
        buf.extend_from_slice(&toc);
        buf[..HEADER_LEN].copy_from_slice(&h.encode());
        buf
    }

    #[test]
    fn round_trip() {
        let buf = sample();
        let layout = Layout::parse(&buf).unwrap();
        assert_eq!(layout.entries.len(), 2);
        assert_eq!(layout.find("greeting").unwrap().1.range(), 256..261);
        for e in &layout.entries {
            verify_payload(&buf, e).unwrap();
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let buf = sample();
        for len in 0..buf.len() {
            assert!(
                Layout::parse(&buf[..len]).is_err(),
                "accepted a prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn every_byte_flip_in_header_and_toc_is_an_error() {
        let buf = sample();
        let layout = Layout::parse(&buf).unwrap();
        let toc = layout.header.toc_offset as usize;
        let positions = (0..HEADER_LEN).chain(toc..buf.len());
        for at in positions {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[at] ^= 1 << bit;
                assert!(
                    Layout::parse(&bad).is_err(),
                    "accepted a flip of bit {bit} at byte {at}"
                );
            }
        }
    }

    #[test]
    fn building_is_refused() {
        let h = Header::new_building([1; 16], 1, 1, 1);
        let mut buf = h.encode().to_vec();
        buf.resize(4096, 0);
        assert_eq!(Layout::parse(&buf), Err(FormatError::StillBuilding));
        assert_eq!(Header::parse(&buf).unwrap().state_name(), "building");
    }

    #[test]
    fn foreign_bytes_are_not_an_arena() {
        assert_eq!(Layout::parse(b"GIF89a......"), Err(FormatError::BadMagic));
        assert_eq!(Layout::parse(&[]), Err(FormatError::BadMagic));
    }

    /// Rewrites the table with a mutated entry and fixes up every checksum, so the structural
    /// checks, not the checksums, must catch the problem.
    fn resealed(mutate: impl Fn(&mut Vec<Entry>)) -> Result<Layout, FormatError> {
        let buf = sample();
        let mut layout = Layout::parse(&buf).unwrap();
        mutate(&mut layout.entries);
        let toc = encode_toc(&layout.entries);
        let mut out = buf[..layout.header.toc_offset as usize].to_vec();
        let mut h = layout.header.clone();
        h.toc_len = toc.len() as u64;
        h.total_len = h.toc_offset + h.toc_len;
        h.entry_count = layout.entries.len() as u32;
        h.toc_checksum = checksum(&toc);
        out.extend_from_slice(&toc);
        out[..HEADER_LEN].copy_from_slice(&h.encode());
        Layout::parse(&out)
    }

    #[test]
    fn structural_errors_with_valid_checksums() {
        type Mutation = Box<dyn Fn(&mut Vec<Entry>)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("overlap", Box::new(|e| e[1].offset = 200)),
            ("past end", Box::new(|e| e[1].len = 1 << 40)),
            ("huge count", Box::new(|e| e[0].count = u64::MAX)),
            ("overflow", Box::new(|e| e[0].offset = u64::MAX - 3)),
            ("misaligned", Box::new(|e| e[0].offset = 194)),
            ("bad align", Box::new(|e| e[0].align = 3)),
            ("into header", Box::new(|e| e[0].offset = 64)),
            ("duplicate", Box::new(|e| e[1].name = "nums".into())),
            ("empty name", Box::new(|e| e[1].name = String::new())),
            ("prim size", Box::new(|e| e[0].prim = Prim::F64)),
            (
                "root outside",
                Box::new(|e| {
                    e[0].kind = Kind::Archived;
                    e[0].count = 1;
                    e[0].root_pos = 64;
                }),
            ),
        ];
        for (what, mutate) in cases {
            let got = resealed(mutate);
            assert!(
                matches!(got, Err(FormatError::Corrupted { .. })),
                "{what}: expected Corrupted, got {got:?}"
            );
        }
    }

    /// Seals `entries` over `sample()`'s payloads as an arena of format `version`.
    fn with_version(version: u32, mutate: impl Fn(&mut Vec<Entry>)) -> Vec<u8> {
        let buf = sample();
        let mut layout = Layout::parse(&buf).unwrap();
        mutate(&mut layout.entries);
        let toc = encode_toc(&layout.entries);
        let mut out = buf[..layout.header.toc_offset as usize].to_vec();
        let mut h = layout.header.clone();
        h.version = version;
        h.toc_len = toc.len() as u64;
        h.total_len = h.toc_offset + h.toc_len;
        h.toc_checksum = checksum(&toc);
        out.extend_from_slice(&toc);
        out[..HEADER_LEN].copy_from_slice(&h.encode());
        out
    }

    /// A version-1 image, byte for byte as version 1 wrote it, still reads; its reserved bytes
    /// and unknown flag bits are ignored.
    #[test]
    fn version_1_fixture_reads() {
        let buf = sample();
        assert_eq!(&buf[8..12], &1u32.to_le_bytes());
        let layout = Layout::parse(&buf).unwrap();
        assert_eq!(layout.header.version, 1);
        assert_eq!(layout.entries[0].shape, None);
        assert_eq!(layout.entries[0].dims(), [16]);
        // Version 1 reserved bytes 11 and 80..96 of an entry: set them, and flag bit 1.
        let mut bad = buf.clone();
        let toc = layout.header.toc_offset as usize;
        bad[toc + entry_offsets::PRIM_ARG] = 9;
        bad[toc + entry_offsets::FLAGS] |= FLAG_SHAPED | 0x80;
        for b in &mut bad[toc + 80..toc + 96] {
            *b = 0xff;
        }
        let mut h = layout.header.clone();
        h.toc_checksum = checksum(&bad[toc..]);
        bad[..HEADER_LEN].copy_from_slice(&h.encode());
        let got = Layout::parse(&bad).unwrap();
        assert_eq!(got.entries[0].shape, None);
        assert_eq!(got.entries[0].prim_arg, 0);
        assert_eq!(got.entries[0].flags, 0);
        // A version-2 primitive code is unknown to version 1.
        let v1 = with_version(1, |e| {
            e[0].prim = Prim::Bool;
            e[0].elem_size = 1;
            e[0].count = 64;
            e[0].align = 1;
        });
        assert!(matches!(
            Layout::parse(&v1),
            Err(FormatError::Corrupted { .. })
        ));
    }

    #[test]
    fn versions_outside_the_range_are_unsupported() {
        for v in [0, 3, u32::MAX] {
            let buf = with_version(v, |_| {});
            assert_eq!(
                Layout::parse(&buf),
                Err(FormatError::UnsupportedVersion { found: v })
            );
        }
    }

    #[test]
    fn version_2_shapes_and_primitives() {
        let buf = with_version(2, |e| {
            e[0].shape = Some(vec![2, 2, 4]);
        });
        let layout = Layout::parse(&buf).unwrap();
        assert_eq!(layout.entries[0].dims(), [2, 2, 4]);
        assert_eq!(layout.entries[1].shape, None);
        // A 0-d shape holds one element.
        let buf = with_version(2, |e| {
            e[0].prim = Prim::DateTime64;
            e[0].prim_arg = 10;
            e[0].elem_size = 8;
            e[0].count = 8;
            e[0].align = 8;
            e[0].shape = Some(vec![8]);
        });
        let layout = Layout::parse(&buf).unwrap();
        assert_eq!(layout.entries[0].dtype_name(), "datetime64[ns]");
        let buf = with_version(2, |e| {
            e[0].prim = Prim::FixedUnicode;
            e[0].elem_size = 16;
            e[0].count = 4;
            e[0].shape = Some(vec![]);
        });
        assert!(matches!(
            Layout::parse(&buf),
            Err(FormatError::Corrupted { .. })
        ));
        type Mutation = Box<dyn Fn(&mut Vec<Entry>)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("shape product", Box::new(|e| e[0].shape = Some(vec![3, 5]))),
            (
                "shape overflow",
                Box::new(|e| e[0].shape = Some(vec![1 << 32, 1 << 32, 16])),
            ),
            (
                "empty shape too large for numpy, zero last",
                Box::new(|e| {
                    (e[0].count, e[0].len) = (0, 0);
                    e[0].shape = Some(vec![1 << 32, 1 << 32, 0]);
                }),
            ),
            (
                "empty shape too large for numpy, zero first",
                Box::new(|e| {
                    (e[0].count, e[0].len) = (0, 0);
                    e[0].shape = Some(vec![0, 1 << 32, 1 << 32]);
                }),
            ),
            ("shape on bytes", Box::new(|e| e[1].shape = Some(vec![5]))),
            (
                "too many dims",
                Box::new(|e| e[0].shape = Some(vec![1; MAX_NDIM + 1])),
            ),
            ("arg on u32", Box::new(|e| e[0].prim_arg = 1)),
            (
                "bad unit",
                Box::new(|e| {
                    e[0].prim = Prim::TimeDelta64;
                    e[0].elem_size = 8;
                    e[0].count = 8;
                    e[0].prim_arg = 14;
                }),
            ),
            (
                "unicode width",
                Box::new(|e| {
                    e[0].prim = Prim::FixedUnicode;
                    e[0].elem_size = 2;
                    e[0].count = 32;
                    e[0].align = 2;
                }),
            ),
        ];
        for (what, mutate) in cases {
            let got = Layout::parse(&with_version(2, mutate));
            assert!(
                matches!(got, Err(FormatError::Corrupted { .. })),
                "{what}: expected Corrupted, got {got:?}"
            );
        }
        // An empty shape within numpy's limit reads, whichever dimension is the zero.
        for shape in [vec![0, 1 << 30, 1 << 30], vec![1 << 30, 1 << 30, 0]] {
            let buf = with_version(2, |e| {
                (e[0].count, e[0].len) = (0, 0);
                e[0].shape = Some(shape.clone());
            });
            let layout = Layout::parse(&buf).unwrap();
            assert_eq!(layout.entries[0].dims(), shape);
        }
    }

    #[test]
    fn pod_root_position_is_named() {
        let got = resealed(|e| e[0].root_pos = 8);
        let Err(FormatError::Corrupted { detail }) = got else {
            panic!("expected Corrupted, got {got:?}")
        };
        assert!(detail.contains("root position 8"), "{detail}");
    }
}
