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

/// The rkyv writer that appends an entry straight into the segment, growing it as needed.
/// You meet it only in trait bounds, through [`ArenaSerializer`].
pub struct SegmentWriter<'w> {
    seg: &'w mut Segment,
    start: usize,
    pos: usize,
    failure: Option<Error>,
}

impl<'w> SegmentWriter<'w> {
    /// A writer appending at byte `start` of `seg`.
    pub(crate) fn new(seg: &'w mut Segment, start: usize) -> SegmentWriter<'w> {
        SegmentWriter {
            seg,
            start,
            pos: 0,
            failure: None,
        }
    }

    /// Bytes written so far, and the error that stopped the segment from growing, if any.
    pub(crate) fn finish(self) -> (usize, Option<Error>) {
        (self.pos, self.failure)
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

impl SegmentWriter<'_> {
    /// The rare path of [`write`](Writer::write): grows the segment to hold bytes up to `end`,
    /// keeping the error for [`finish`](Self::finish). Out of line, so that the common path,
    /// a bounds check and a copy, inlines into rkyv's serializers (where a small copy of a
    /// known size becomes a few moves instead of a call to `memcpy`).
    #[cold]
    #[inline(never)]
    fn grow<E: rancor::Source>(&mut self, end: usize) -> Result<(), E> {
        self.seg.ensure(end).map_err(|e| {
            self.failure = Some(e);
            E::new(GrowFailed)
        })
    }
}

impl<E: rancor::Source> Writer<E> for SegmentWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        let at = self.start + self.pos;
        let end = at + bytes.len();
        if end > self.seg.cap() {
            self.grow(end)?;
        }
        // Raise the zeroing mark before writing: if serialization panics after this write, the
        // next `put` still sees these bytes as dirty and zeroes them (issue 11, case 7).
        self.seg.note_written(end);
        self.seg.bytes_mut()[at..end].copy_from_slice(bytes);
        self.pos += bytes.len();
        Ok(())
    }
}
