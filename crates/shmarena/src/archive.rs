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
