//! Bytes on the pool's pipes: the [`Message`] codec (rkyv) and the frame layout. No I/O here,
//! so every parser in this file runs on plain slices and is unit-tested below.
//!
//! A frame is a 16-byte header (`magic: u32`, `kind: u32`, `len: u64`, little-endian) and a
//! payload of `len` bytes, `len` a multiple of 16. Inside a payload every variable-length part
//! (a name, an item) is padded to 16 bytes, so an item that starts 16-aligned in the frame buffer
//! is an aligned rkyv archive and can be read in place.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

/// A value that can travel to or from a pool worker: any type rkyv can serialize, check and
/// deserialize with its high-level API (`#[derive(rkyv::Archive, rkyv::Serialize,
/// rkyv::Deserialize)]`, the primitives, `String`, `Vec<T>`, tuples, `Option`, ...).
///
/// It is implemented for every such type; there is nothing to implement by hand. Bytes from
/// another process are validated (bytecheck) before they are deserialized, so a corrupted task
/// or result is an error, never undefined behavior.
pub trait Message: Sized {
    /// Archives the value into fresh, aligned bytes.
    fn encode(&self) -> Result<AlignedVec, String>;
    /// Archives the value into `buf`, which is cleared first (its capacity is reused), and
    /// returns it. The pool encodes each task of a batch into one scratch buffer this way.
    fn encode_into(&self, buf: AlignedVec) -> Result<AlignedVec, String> {
        drop(buf);
        self.encode()
    }
    /// Validates and deserializes bytes made by [`Message::encode`]. `bytes` must start at a
    /// 16-byte aligned address (the pool's frames guarantee it); misaligned bytes are an error.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

impl<T> Message for T
where
    T: rkyv::Archive
        + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    fn encode(&self) -> Result<AlignedVec, String> {
        // Not `rkyv::to_bytes`: it starts from an empty vector, and growing that one byte range
        // at a time took 150–300 ns for a `u64` here, against 35 ns from a vector that already
        // holds the archived root (a hot path: one call per task and per result).
        let capacity = size_of::<T::Archived>().next_power_of_two().max(64);
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, AlignedVec::with_capacity(capacity))
            .map_err(|e| e.to_string())
    }

    fn encode_into(&self, mut buf: AlignedVec) -> Result<AlignedVec, String> {
        buf.clear();
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, buf).map_err(|e| e.to_string())
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        rkyv::from_bytes::<T, rancor::Error>(bytes).map_err(|e| e.to_string())
    }
}

/// "SAPL" (shmarena pool), first bytes of every frame.
pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"SAPL");
/// Bumped when the frame layout changes; parent and worker are the same binary in spawn mode,
/// so this only guards against a stale binary replaced on disk while the pool runs.
pub(crate) const PROTOCOL_VERSION: u32 = 1;
/// Size of a frame header.
pub(crate) const HEADER: usize = 16;
/// Largest payload accepted (guards the allocation a corrupted length would cause).
pub(crate) const MAX_PAYLOAD: u64 = 1 << 40;

/// Worker to parent, once at start: protocol version, pid and the registered jobs.
pub(crate) const KIND_HELLO: u32 = 1;
/// Parent to worker: a batch of tasks for one job.
pub(crate) const KIND_BATCH: u32 = 2;
/// Worker to parent: the results of a batch, in order (possibly only a prefix, then PANIC).
pub(crate) const KIND_RESULTS: u32 = 3;
/// Worker to parent: the job panicked on the item after the last result sent; the worker exits.
pub(crate) const KIND_PANIC: u32 = 4;

/// Result item tag: the job's output, archived.
pub(crate) const TAG_OK: u32 = 0;
/// Result item tag: the task could not be decoded or the output encoded (UTF-8 message).
pub(crate) const TAG_CODEC: u32 = 1;
/// Result item tag: the worker has no job of that name and fingerprint (UTF-8 message).
pub(crate) const TAG_UNKNOWN_JOB: u32 = 2;

fn pad16(n: usize) -> usize {
    n.div_ceil(16) * 16
}

/// Builds one frame at the end of a byte vector, so that frames can be appended to a buffer
/// that is reused from one batch to the next (no allocation per frame once it has grown).
pub(crate) struct FrameWriter {
    buf: Vec<u8>,
    /// Where this frame starts in `buf`: a multiple of 16, since every frame before it is.
    start: usize,
}

impl FrameWriter {
    /// Starts a frame of `kind` in a new vector.
    pub(crate) fn new(kind: u32) -> FrameWriter {
        FrameWriter::append(kind, Vec::with_capacity(256))
    }

    /// Starts a frame of `kind` after the whole frames already in `buf`.
    pub(crate) fn append(kind: u32, mut buf: Vec<u8>) -> FrameWriter {
        debug_assert_eq!(buf.len() % 16, 0, "frames are appended after whole frames");
        let start = buf.len();
        buf.extend_from_slice(&MAGIC.to_le_bytes());
        buf.extend_from_slice(&kind.to_le_bytes());
        buf.extend_from_slice(&0u64.to_le_bytes());
        FrameWriter { buf, start }
    }

    /// Bytes in the buffer so far (the frames before this one and this one's bytes).
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Reserves room for `bytes` more bytes.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes);
    }

    /// Appends a little-endian u64.
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian u32.
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends bytes and zero padding up to the next multiple of 16.
    pub(crate) fn padded(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        let pad = pad16(self.buf.len()) - self.buf.len();
        self.buf.resize(self.buf.len() + pad, 0);
        self
    }

    /// Appends one item: a 16-byte item header (`len: u64`, `tag: u32`, zero) and the bytes,
    /// padded.
    pub(crate) fn item(&mut self, tag: u32, bytes: &[u8]) -> &mut Self {
        self.u64(bytes.len() as u64).u32(tag).u32(0).padded(bytes)
    }

    /// Overwrites a u32 at `at` bytes into the payload (for counts known only at the end).
    pub(crate) fn patch_u32(&mut self, at: usize, v: u32) {
        let at = self.start + HEADER + at;
        self.buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Pads the payload to a multiple of 16, writes its length into the header, and returns the
    /// buffer (the frames before this one, then this one).
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.padded(&[]);
        let len = (self.buf.len() - self.start - HEADER) as u64;
        self.buf[self.start + 8..self.start + 16].copy_from_slice(&len.to_le_bytes());
        self.buf
    }
}

/// Checks the header at the start of `buf`. Returns `Ok(None)` while fewer than 16 bytes are
/// there, else the kind and the total frame length (header + payload).
pub(crate) fn parse_header(buf: &[u8]) -> Result<Option<(u32, usize)>, String> {
    let Some(h) = buf.get(..HEADER) else {
        return Ok(None);
    };
    let magic = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
    let kind = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
    if magic != MAGIC {
        return Err(format!("bad frame magic {magic:#010x}"));
    }
    if len % 16 != 0 || len > MAX_PAYLOAD {
        return Err(format!("bad frame length {len}"));
    }
    let total = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(HEADER))
        .ok_or_else(|| format!("frame length {len} does not fit in memory"))?;
    Ok(Some((kind, total)))
}

/// Reads a payload front to back; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `payload` (the frame without its header).
    pub(crate) fn new(payload: &'a [u8]) -> Reader<'a> {
        Reader {
            bytes: payload,
            pos: 0,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("truncated frame: {n} bytes wanted at offset {}", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Reads a little-endian u64.
    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// Reads a little-endian u32.
    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    /// Reads `len` bytes and skips the padding after them.
    pub(crate) fn padded(&mut self, len: u64) -> Result<&'a [u8], String> {
        let len = usize::try_from(len).map_err(|_| format!("length {len} too large"))?;
        let s = self.take(len)?;
        let pad = pad16(self.pos) - self.pos;
        self.take(pad)?;
        Ok(s)
    }

    /// Reads `len` bytes of UTF-8 text (lossy) and the padding after them.
    pub(crate) fn text(&mut self, len: u64) -> Result<String, String> {
        Ok(String::from_utf8_lossy(self.padded(len)?).into_owned())
    }

    /// Reads one item written by [`FrameWriter::item`]: its tag and bytes. The bytes start at
    /// a multiple of 16 from the payload start.
    pub(crate) fn item(&mut self) -> Result<(u32, &'a [u8]), String> {
        let len = self.u64()?;
        let tag = self.u32()?;
        self.u32()?;
        Ok((tag, self.padded(len)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let mut w = FrameWriter::new(KIND_BATCH);
        w.u64(7).u32(0).u32(3).padded(b"job");
        let out = (5u32, String::from("héllo")).encode().unwrap();
        w.item(TAG_OK, &out).item(TAG_CODEC, b"bad");
        w.patch_u32(8, 2);
        let frame = w.finish();
        assert_eq!(frame.len() % 16, 0);

        let mut aligned = AlignedVec::<16>::new();
        aligned.extend_from_slice(&frame);
        let (kind, total) = parse_header(&aligned).unwrap().unwrap();
        assert_eq!((kind, total), (KIND_BATCH, frame.len()));
        let mut r = Reader::new(&aligned[HEADER..total]);
        assert_eq!(r.u64().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 2);
        let n = r.u32().unwrap();
        assert_eq!(r.text(u64::from(n)).unwrap(), "job");
        let (tag, bytes) = r.item().unwrap();
        assert_eq!(tag, TAG_OK);
        assert_eq!(<(u32, String)>::decode(bytes).unwrap(), (5, "héllo".into()));
        assert_eq!(r.item().unwrap(), (TAG_CODEC, &b"bad"[..]));
        assert!(r.item().is_err(), "reading past the end is an error");
    }

    #[test]
    fn appended_frames_follow_each_other() {
        let mut w = FrameWriter::new(KIND_RESULTS);
        w.u64(1).u32(5).u32(0);
        let first = w.finish();
        let mut w = FrameWriter::append(KIND_PANIC, first.clone());
        w.u64(2).u32(0).u32(0);
        w.patch_u32(8, 9);
        let both = w.finish();
        assert_eq!(&both[..first.len()], &first[..]);
        let (kind, total) = parse_header(&both[first.len()..]).unwrap().unwrap();
        assert_eq!((kind, total), (KIND_PANIC, both.len() - first.len()));
        let mut r = Reader::new(&both[first.len() + HEADER..]);
        assert_eq!((r.u64().unwrap(), r.u32().unwrap()), (2, 9));
    }

    #[test]
    fn header_checks() {
        assert_eq!(parse_header(&[0; 8]), Ok(None));
        assert!(parse_header(&[0; 16]).is_err(), "bad magic");
        let mut h = FrameWriter::new(KIND_HELLO).finish();
        h[8] = 3;
        assert!(parse_header(&h).is_err(), "length not a multiple of 16");
    }

    #[test]
    fn decode_garbage_is_an_error() {
        let mut aligned = AlignedVec::<16>::new();
        aligned.extend_from_slice(&[0xff; 32]);
        assert!(<Vec<String>>::decode(&aligned).is_err());
        assert!(String::decode(&[]).is_err());
    }
}
