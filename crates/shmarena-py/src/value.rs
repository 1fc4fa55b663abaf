//! The archived value type behind `Builder.put`: a JSON-like tree with numpy arrays as leaves.
//!
//! Maps are rkyv `IndexMap`s: they keep Python's insertion order, give O(1) access by position
//! (which is how a view names a nested container) and are looked up by hash in place.

use std::hash::{Hash, Hasher};

use indexmap::IndexMap;
use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer, WriterExt};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Place, Serialize};

/// Alignment of array data inside an archived value: enough for every numpy numeric dtype.
pub(crate) const ARRAY_ALIGN: usize = 16;

/// Deepest nesting `put` accepts (the root is at depth 0): archiving and validation recurse
/// once per level.
pub(crate) const MAX_DEPTH: usize = 200;

/// Most subtree claims (docs/VALUES.md, V4) a reader lets nest while validating a value: one
/// for the root, one per container level above the deepest node, and one for that node's own
/// out-of-line bytes. Every value `put` writes stays within it; a forged value nested deeper is
/// refused before its depth can exhaust the validating thread's stack.
pub(crate) const MAX_CLAIM_DEPTH: usize = MAX_DEPTH + 2;

/// One node of a stored Python value.
#[derive(Archive, Serialize)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext)))]
pub(crate) enum Value {
    /// `None`.
    None,
    /// `bool`.
    Bool(bool),
    /// `int` within the signed 64-bit range.
    Int(i64),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes` (and `bytearray`, stored as bytes).
    Bytes(Vec<u8>),
    /// `list`.
    List(#[rkyv(omit_bounds)] Vec<Value>),
    /// `tuple`.
    Tuple(#[rkyv(omit_bounds)] Vec<Value>),
    /// `dict`, in insertion order.
    Map(#[rkyv(omit_bounds)] IndexMap<Key, Value>),
    /// A numpy array.
    Array(Array),
}

/// A dict key.
#[derive(Archive, Serialize, PartialEq, Eq)]
pub(crate) enum Key {
    /// `str`.
    Str(String),
    /// `int` (not `bool`) within the signed 64-bit range.
    Int(i64),
    /// `bytes`.
    Bytes(Vec<u8>),
}

/// A borrowed key, hashed exactly like [`Key`] so that lookups in the archived map find what
/// serialization placed there.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum KeyRef<'a> {
    /// A string key.
    Str(&'a str),
    /// An integer key.
    Int(i64),
    /// A bytes key.
    Bytes(&'a [u8]),
}

impl Key {
    fn as_ref(&self) -> KeyRef<'_> {
        match self {
            Key::Str(s) => KeyRef::Str(s),
            Key::Int(i) => KeyRef::Int(*i),
            Key::Bytes(b) => KeyRef::Bytes(b),
        }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl ArchivedKey {
    /// The key as a borrowed [`KeyRef`].
    pub(crate) fn as_ref(&self) -> KeyRef<'_> {
        match self {
            ArchivedKey::Str(s) => KeyRef::Str(s.as_str()),
            ArchivedKey::Int(i) => KeyRef::Int(i.to_native()),
            ArchivedKey::Bytes(b) => KeyRef::Bytes(b.as_slice()),
        }
    }
}

/// A numpy array: dtype string (`arr.dtype.str`, native byte order), shape and C-order bytes.
#[derive(Archive, Serialize)]
pub(crate) struct Array {
    /// numpy's `dtype.str`, such as `<f4`.
    pub(crate) dtype: String,
    /// The shape.
    pub(crate) shape: Vec<u64>,
    /// The elements in C order, aligned to [`ARRAY_ALIGN`] in the arena.
    pub(crate) data: ArrayData,
}

/// Array bytes, archived as an `ArchivedVec<u8>` whose data starts [`ARRAY_ALIGN`]-aligned.
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
        // The arena starts each archived entry 16-aligned, so a position aligned relative to
        // the entry is aligned in memory too.
        let pos = serializer.align(ARRAY_ALIGN)?;
        serializer.write(&self.0)?;
        Ok(VecResolver::from_pos(pos))
    }
}
