//! `MapView`'s methods (a read-only `collections.abc.Mapping` over an archived dict) and its
//! iterator.

use std::sync::Arc;

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyString};
use pyo3::IntoPyObjectExt;
use rkyv::collections::swiss_table::ArchivedIndexMap;
use rkyv::hash::{hash_value, FxHasher64};
use rkyv::primitive::ArchivedUsize;

use crate::errors::corrupted;
use crate::pickle::{self, Reduced};
use crate::registry::Root;
use crate::to_py::{key_to_py, node_to_py, node_to_python};
use crate::value::{ArchivedKey, ArchivedValue, KeyRef};
use crate::view::MapView;

type ArchivedMap = ArchivedIndexMap<ArchivedKey, ArchivedValue>;

/// Runs `f` with `key` as a [`KeyRef`], or returns `None` if no stored key can equal it.
fn with_key<R>(key: &Bound<'_, PyAny>, f: impl FnOnce(KeyRef<'_>) -> R) -> Option<R> {
    // Exact `str` and `int` first: one type-pointer compare each (under the stable ABI the
    // subclass checks below are calls), and they are nearly every key a lookup gets.
    if let Ok(s) = key.cast_exact::<PyString>() {
        return s.to_str().ok().map(|s| f(KeyRef::Str(s)));
    }
    if let Ok(i) = key.cast_exact::<PyInt>() {
        return i.extract::<i64>().ok().map(|i| f(KeyRef::Int(i)));
    }
    if let Ok(s) = key.cast::<PyString>() {
        return s.to_str().ok().map(|s| f(KeyRef::Str(s)));
    }
    if let Ok(b) = key.cast::<PyBytes>() {
        return Some(f(KeyRef::Bytes(b.as_bytes())));
    }
    if let Ok(i) = key.cast::<PyInt>() {
        // bool is an int in Python: d[True] finds the key 1.
        return i.extract::<i64>().ok().map(|i| f(KeyRef::Int(i)));
    }
    if let Ok(x) = key.cast::<PyFloat>() {
        let x = x.value();
        if x.fract() == 0.0 && x >= i64::MIN as f64 && x < i64::MAX as f64 {
            return Some(f(KeyRef::Int(x as i64)));
        }
    }
    None
}

/// Starts loading the bucket where rkyv's lookup of `hash` in `m` begins, so that its cache miss
/// overlaps the miss on the control bytes that rkyv takes first (otherwise they are serial: rkyv
/// reads the control bytes, then the bucket they select, then the entry the bucket names). In a
/// large map each is a cache and TLB miss, so this takes one miss off a lookup's critical path
/// (12–15 % of a lookup in a 1M-entry map).
///
/// A hint only, with no effect on the result: it reads one byte of the arena through its safe
/// byte slice. It relies on the layout of rkyv 0.8's `ArchivedIndexMap` (`repr(C)`, starting
/// with the hash table: a relative pointer to the control bytes, the length, the capacity; the
/// buckets lie just below the control bytes, bucket `i` at `control - (i + 1) * size_of::<usize>`
/// archived) and checks it against the map's own length, so a layout it does not expect only
/// skips the hint.
fn touch_buckets(arena: &[u8], m: &ArchivedMap, hash: u64) {
    const W: usize = size_of::<ArchivedUsize>();
    let word = |at: usize| -> Option<u64> {
        let b = arena.get(at..at.checked_add(W)?)?;
        let mut le = [0u8; 8];
        le[..W].copy_from_slice(b);
        Some(u64::from_le_bytes(le))
    };
    let Some(at) = (m as *const ArchivedMap as usize).checked_sub(arena.as_ptr() as usize) else {
        return;
    };
    let (Some(rel), Some(len), Some(cap)) = (word(at), word(at + W), word(at + 2 * W)) else {
        return;
    };
    if len != m.len() as u64 || cap <= len {
        return;
    }
    // Sign-extend the relative pointer from its archived width.
    let shift = 64 - 8 * W as u32;
    let rel = ((rel << shift) as i64) >> shift;
    let bucket = (at as i64)
        .checked_add(rel)
        .and_then(|control| control.checked_sub(((hash % cap) as i64 + 1) * W as i64));
    if let Some(b) = bucket.and_then(|b| usize::try_from(b).ok()) {
        // The group rkyv probes first covers 16 buckets (64 bytes, one or two cache lines,
        // downwards from `b`): touch both ends.
        std::hint::black_box(arena.get(b).copied());
        std::hint::black_box(arena.get(b.wrapping_sub(15 * W)).copied());
    }
}

/// Where to find `collections.abc` helpers.
fn abc<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("collections.abc")?.getattr(name)
}

impl MapView {
    fn map(&self) -> PyResult<&ArchivedMap> {
        match self.root.walk(&self.path) {
            Some(ArchivedValue::Map(m)) => Ok(m),
            _ => Err(self.root.bad_path(&self.path)),
        }
    }

    fn find(&self, key: &Bound<'_, PyAny>) -> PyResult<Option<(usize, &ArchivedValue)>> {
        let m = self.map()?;
        let arena = self.root.arena().as_bytes();
        let found = with_key(key, |q| {
            touch_buckets(arena, m, hash_value::<KeyRef<'_>, FxHasher64>(&q));
            // bytecheck does not check what the hash table's buckets hold: rkyv's lookup
            // indexes the entries with one and panics if it is past their end.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                m.get_full_with(&q, |q, k| *q == k.as_ref())
                    .map(|(i, _, v)| (i, v))
            }))
        });
        match found {
            None => Ok(None),
            Some(Ok(hit)) => Ok(hit),
            Some(Err(_)) => Err(corrupted(format!(
                "entry {:?} of arena {}: the hash table of the dict at position path {:?} names \
                 an entry past its end",
                self.root.entry,
                self.root.arena().id(),
                self.path
            ))),
        }
    }

    fn iter(&self, what: IterWhat) -> PyResult<MapIter> {
        Ok(MapIter {
            root: self.root.clone(),
            path: self.path.clone(),
            pos: 0,
            len: self.map()?.len(),
            what,
            reverse: false,
        })
    }
}

#[pymethods]
impl MapView {
    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match self.find(key)? {
            Some((i, v)) => node_to_py(py, &self.root, v, &self.path, Some(i)),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    #[pyo3(signature = (key, default = None))]
    fn get(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        match self.find(key)? {
            Some((i, v)) => node_to_py(py, &self.root, v, &self.path, Some(i)),
            None => Ok(default.unwrap_or_else(|| py.None())),
        }
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.find(key)?.is_some())
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.map()?.len())
    }

    fn __iter__(&self) -> PyResult<MapIter> {
        self.iter(IterWhat::Keys)
    }

    /// The keys in reverse insertion order, as `reversed(dict)` gives them.
    fn __reversed__(&self) -> PyResult<MapIter> {
        let mut it = self.iter(IterWhat::Keys)?;
        it.reverse = true;
        Ok(it)
    }

    /// A `KeysView` of the mapping.
    fn keys<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        abc(slf.py(), "KeysView")?.call1((slf,))
    }

    /// A `ValuesView` of the mapping.
    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        abc(slf.py(), "ValuesView")?.call1((slf,))
    }

    /// An `ItemsView` of the mapping.
    fn items<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        abc(slf.py(), "ItemsView")?.call1((slf,))
    }

    /// Iterates over `(key, value)` pairs in insertion order, with no lookups.
    fn iter_items(&self) -> PyResult<MapIter> {
        self.iter(IterWhat::Items)
    }

    /// Iterates over values in insertion order, with no lookups.
    fn iter_values(&self) -> PyResult<MapIter> {
        self.iter(IterWhat::Values)
    }

    /// A full copy as a plain `dict` (nested containers copied too).
    fn to_python(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let node = self
            .root
            .walk(&self.path)
            .ok_or_else(|| self.root.bad_path(&self.path))?;
        node_to_python(py, &self.root, node, &mut self.path.clone())
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let other = if let Ok(o) = other.cast::<MapView>() {
            o.get().to_python(py)?.into_bound(py)
        } else if other.is_instance(&abc(py, "Mapping")?)? {
            PyDict::from_sequence(&other.call_method0("items")?)
                .map(Bound::into_any)
                .unwrap_or_else(|_| other.clone())
        } else {
            return Ok(py.NotImplemented());
        };
        self.to_python(py)?.bind(py).eq(other)?.into_py_any(py)
    }

    fn __repr__(&self) -> PyResult<String> {
        Ok(format!(
            "<shmarena.MapView of entry {:?} at {:?}, {} keys>",
            self.root.entry,
            self.path,
            self.map()?.len()
        ))
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Reduced<'py>> {
        let h = pickle::handle(self.root.arena(), &self.root.entry, &self.path, None);
        pickle::reduce(py, &h)
    }
}

#[derive(Clone, Copy)]
enum IterWhat {
    Keys,
    Values,
    Items,
}

/// Iterator over a `MapView`'s keys, values or items.
#[pyclass(module = "shmarena", name = "MapIterator")]
pub(crate) struct MapIter {
    root: Arc<Root>,
    path: Vec<u32>,
    pos: usize,
    len: usize,
    what: IterWhat,
    /// From the last entry to the first.
    reverse: bool,
}

#[pymethods]
impl MapIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if self.pos >= self.len {
            return Ok(None);
        }
        let Some(ArchivedValue::Map(m)) = self.root.walk(&self.path) else {
            return Err(self.root.bad_path(&self.path));
        };
        let i = if self.reverse {
            self.len - 1 - self.pos
        } else {
            self.pos
        };
        self.pos += 1;
        let Some((k, v)) = m.get_index(i) else {
            return Ok(None);
        };
        let out = match self.what {
            IterWhat::Keys => key_to_py(py, k)?,
            IterWhat::Values => node_to_py(py, &self.root, v, &self.path, Some(i))?,
            IterWhat::Items => (
                key_to_py(py, k)?,
                node_to_py(py, &self.root, v, &self.path, Some(i))?,
            )
                .into_py_any(py)?,
        };
        Ok(Some(out))
    }

    fn __length_hint__(&self) -> usize {
        self.len.saturating_sub(self.pos)
    }
}
