//! The glue between rkyv and the segment: the rkyv `Writer` that serializes straight into a
//! growing [`Segment`], and the serializer and validator types shmarena archives and checks with.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::{Positional, Writer};

use crate::error::Error;
use crate::segment::Segment;

/// The rkyv serializer shmarena archives with. It appears only in trait bounds:
/// `T: for<'a, 'w> rkyv::Serialize<ArenaSerializer<'a, 'w>>` holds for every type that derives
/// `rkyv::Serialize` and for rkyv's std impls.
pub type ArenaSerializer<'a, 'w> =
    HighSerializer<SegmentWriter<'w>, ArenaHandle<'a>, rancor::Error>;

/// The validator shmarena checks archived entries with (rkyv's high-level validator).
pub type ArenaValidator<'a> = HighValidator<'a, rancor::Error>;

/// How deep an archived value may nest: pointers (boxes, vectors, strings, maps) inside the
/// objects other pointers point to, counted from the root. bytecheck checks a value by recursion,
/// one level of its stack a nesting level, so bytes forged to nest a million levels deep would
/// overflow any thread's stack before they failed a check. Past this depth a value is refused
/// as corrupted, at build (`put`) and on every read, whatever the type; the same data nested
/// less deeply, or flattened into a vector of indexes, is unaffected.
pub const MAX_NESTING: usize = 1024;

/// A monomorphized [`validate_at`] that says only whether the bytes pass: what a writer keeps
/// beside each trust row it records at `put`, to check the entry again once `seal` has frozen
/// the bytes.
pub(crate) type Recheck = fn(&[u8], usize) -> bool;

/// [`validate_at`] as a [`Recheck`].
pub(crate) fn passes<T>(payload: &[u8], root_pos: usize) -> bool
where
    T: rkyv::Portable + for<'a> rkyv::bytecheck::CheckBytes<ArenaValidator<'a>>,
{
    validate_at::<T>(payload, root_pos).is_ok()
}

/// Validates the archived `T` rooted at `root_pos` of `payload` with [`ArenaValidator`], refusing
/// values that nest deeper than [`MAX_NESTING`].
pub(crate) fn validate_at<T>(payload: &[u8], root_pos: usize) -> Result<&T, rancor::Error>
where
    T: rkyv::Portable + for<'a> rkyv::bytecheck::CheckBytes<ArenaValidator<'a>>,
{
    let mut context = rkyv::validation::Validator::new(
        rkyv::validation::archive::ArchiveValidator::with_max_depth(
            payload,
            std::num::NonZeroUsize::new(MAX_NESTING + 1),
        ),
        rkyv::validation::shared::SharedValidator::new(),
    );
    rkyv::api::access_pos_with_context::<T, _, rancor::Error>(payload, root_pos, &mut context)
}

/// Bytes staged in the writer before they are copied into the segment: small enough to stay in
/// a core's L2 cache, large enough that the copies into the segment are few and long.
const STAGE: usize = 64 << 10;

/// The rkyv writer that appends an entry straight into the segment, growing it as needed.
/// You meet it only in trait bounds, through [`ArenaSerializer`].
///
/// rkyv writes an archive as many small appends (a string's bytes, then each 16-byte table
/// entry, ...). They are gathered in a small staging buffer that stays in the CPU's cache and
/// copied into the segment in large pieces, which is cheaper than many small stores into
/// freshly mapped shared pages.
pub struct SegmentWriter<'w> {
    seg: &'w mut Segment,
    start: usize,
    pos: usize,
    flushed: usize,
    stage: Vec<u8>,
    failure: Option<Error>,
}

impl<'w> SegmentWriter<'w> {
    /// A writer appending at byte `start` of `seg`.
    pub(crate) fn new(seg: &'w mut Segment, start: usize) -> SegmentWriter<'w> {
        SegmentWriter {
            seg,
            start,
            pos: 0,
            flushed: 0,
            stage: Vec::with_capacity(STAGE),
            failure: None,
        }
    }

    /// Copies what is staged into the segment; the bytes written, and the error that stopped
    /// the segment from growing, if any (then only the bytes that reached the segment count).
    pub(crate) fn finish(mut self) -> (usize, Option<Error>) {
        if self.failure.is_none() {
            let _ = self.flush::<rancor::Error>();
        }
        match self.failure {
            None => (self.pos, None),
            failure => (self.flushed, failure),
        }
    }

    /// Copies `bytes` into the segment at the flushed position.
    fn put_direct<E: rancor::Source>(&mut self, bytes: &[u8]) -> Result<(), E> {
        let at = self.start + self.flushed;
        let end = at + bytes.len();
        if end > self.seg.cap() {
            if let Err(e) = self.seg.ensure(end) {
                self.failure = Some(e);
                return Err(E::new(GrowFailed));
            }
        }
        // Raise the zeroing mark before writing: if serialization panics after this write, the
        // next `put` still sees these bytes as dirty and zeroes them (issue 11, case 7).
        self.seg.note_written(end);
        self.seg.bytes_mut()[at..end].copy_from_slice(bytes);
        self.flushed += bytes.len();
        Ok(())
    }

    /// Copies the staged bytes into the segment and empties the stage.
    #[cold]
    #[inline(never)]
    fn flush<E: rancor::Source>(&mut self) -> Result<(), E> {
        let stage = std::mem::take(&mut self.stage);
        let r = self.put_direct(&stage);
        self.stage = stage;
        self.stage.clear();
        r
    }

    /// [`write`](Writer::write) when `bytes` do not fit in the stage: flushes it, then stages
    /// `bytes` or, if they are as large as the stage, copies them straight in. Out of line, so
    /// that the common path (append to the stage) inlines into rkyv's serializers, where a
    /// small copy of a known size becomes a few moves instead of a call to `memcpy`.
    #[cold]
    #[inline(never)]
    fn write_slow<E: rancor::Source>(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.flush()?;
        if bytes.len() >= STAGE {
            self.put_direct(bytes)?;
        } else {
            self.stage.extend_from_slice(bytes);
        }
        self.pos += bytes.len();
        Ok(())
    }
}

#[derive(Debug)]
struct GrowFailed;

impl std::fmt::Display for GrowFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the segment could not grow")
    }
}

impl std::error::Error for GrowFailed {}

impl Positional for SegmentWriter<'_> {
    fn pos(&self) -> usize {
        self.pos
    }
}

impl<E: rancor::Source> Writer<E> for SegmentWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        if self.stage.len() + bytes.len() > STAGE {
            return self.write_slow(bytes);
        }
        self.stage.extend_from_slice(bytes);
        self.pos += bytes.len();
        Ok(())
    }
}
