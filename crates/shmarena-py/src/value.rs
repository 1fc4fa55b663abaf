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

/// Refuses, before rkyv's validation runs, a value whose subtree claims (docs/VALUES.md, V3)
/// would nest deeper than [`MAX_CLAIM_DEPTH`], or which points to more nodes than its payload
/// can hold apart (shared or cyclic pointers, which validation refuses anyway).
///
/// rkyv's validation recurses once per claim with no bound, so a forged value nested a few
/// hundred thousand levels deep in a few megabytes would overflow the validating thread's
/// stack. This scan is iterative and reads only tags, pointers and lengths, through checked
/// slice accesses: it follows every pointer that validation could follow (it skips only a
/// branch whose pointer validation refuses on reaching it: outside the payload, or an unknown
/// tag), so validation never nests deeper than the scan saw. Whatever else is wrong is left to
/// validation. O(nodes), each node read once.
pub(crate) fn check_claim_depth(payload: &[u8], root: usize) -> Result<(), String> {
    const W: usize = std::mem::size_of::<rkyv::primitive::ArchivedUsize>();
    const VALUE: usize = std::mem::size_of::<ArchivedValue>();
    const KEY: usize = std::mem::size_of::<ArchivedKey>();
    const ENTRY: usize = KEY + VALUE;
    let word =
        |at: usize| -> Option<[u8; W]> { payload.get(at..at.checked_add(W)?)?.try_into().ok() };
    let len = |at: usize| word(at).map(|b| u64::from_le_bytes(pad(b)) as usize);
    // The `n` elements of `size` bytes the relative pointer at `at` points to, if they lie in
    // the payload (validation refuses them on reaching them otherwise).
    let claim = |at: usize, n: usize, size: usize| -> Option<usize> {
        let off = i64::from_le_bytes(sign_pad(word(at)?));
        let start = usize::try_from((at as i64).checked_add(off)?).ok()?;
        let end = start.checked_add(n.checked_mul(size)?)?;
        (end <= payload.len()).then_some(start)
    };
    let too_deep = || format!("its claims nest deeper than {MAX_CLAIM_DEPTH}");
    // Whether the node at `at` (a key if `is_key`) makes a claim of its own for out-of-line
    // bytes (a string out of line, bytes, a vector, a dict's table or entries, an array's).
    let leaf_claims = |at: usize, is_key: bool| -> bool {
        let tag = payload.get(at).copied().unwrap_or(u8::MAX);
        let string_out_of_line = |f: usize| payload.get(f).is_some_and(|b| b & 0xC0 == 0x80);
        match (is_key, tag) {
            (true, 0) | (false, 4) => string_out_of_line(at + W),
            (true, 2) | (false, 5..=9) => true,
            _ => false,
        }
    };
    let most_nodes = payload.len() / KEY + 1;
    let mut nodes = 1usize;
    // Containers (lists, tuples, dicts) still to visit: (position, depth of the claim holding
    // it). A node at claim depth `d` makes its claims at `d + 1`.
    let mut stack = vec![(root, 1usize)];
    if leaf_claims(root, false) && 2 > MAX_CLAIM_DEPTH {
        return Err(too_deep());
    }
    while let Some((at, d)) = stack.pop() {
        let f = at + W; // the first field of a pointer-aligned variant
        let (children, n, stride, is_map) = match payload.get(at) {
            Some(6 | 7) => {
                let Some(n) = len(f + W) else { continue };
                let Some(start) = claim(f, n, VALUE) else {
                    continue;
                };
                (start, n, VALUE, false)
            }
            Some(8) => {
                let Some(n) = len(f + W) else { continue };
                let Some(start) = claim(f + 3 * W, n, ENTRY) else {
                    continue;
                };
                (start, n, ENTRY, true)
            }
            _ => continue,
        };
        // The elements sit in a claim at `d + 1`; their own claims are at `d + 2`.
        if d + 1 > MAX_CLAIM_DEPTH {
            return Err(too_deep());
        }
        nodes = nodes.saturating_add(if is_map { 2 * n } else { n });
        if nodes > most_nodes {
            return Err("it points to more nodes than its payload holds apart".into());
        }
        let near = d + 2 > MAX_CLAIM_DEPTH;
        for k in 0..n {
            let v = children + k * stride + if is_map { KEY } else { 0 };
            if near && (leaf_claims(v, false) || (is_map && leaf_claims(v - KEY, true))) {
                return Err(too_deep());
            }
            if matches!(payload.get(v), Some(6..=8)) {
                stack.push((v, d + 1));
            }
        }
    }
    Ok(())
}

/// A little-endian `W`-byte unsigned integer widened to 8 bytes.
fn pad<const W: usize>(b: [u8; W]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..W].copy_from_slice(&b);
    out
}

/// A little-endian `W`-byte signed integer sign-extended to 8 bytes.
fn sign_pad<const W: usize>(b: [u8; W]) -> [u8; 8] {
    let fill = if b[W - 1] & 0x80 != 0 { 0xFF } else { 0 };
    let mut out = [fill; 8];
    out[..W].copy_from_slice(&b);
    out
}
