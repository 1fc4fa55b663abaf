//! `MapView`'s methods (a read-only `collections.abc.Mapping` over an archived dict) and its
//! iterator.

use std::sync::Arc;

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};
use pyo3::IntoPyObjectExt;
use rkyv::collections::swiss_table::ArchivedIndexMap;
use rkyv::hash::{hash_value, FxHasher64};
use rkyv::primitive::ArchivedUsize;

use crate::errors::corrupted;
use crate::package::helper;
use crate::pickle::{self, Reduced};
use crate::registry::Root;
use crate::to_py::{key_to_py, node_to_py, node_to_python};
use crate::value::{ArchivedKey, ArchivedValue, KeyRef};
use crate::view::MapView;

type ArchivedMap = ArchivedIndexMap<ArchivedKey, ArchivedValue>;

/// How many keys `get_many` touches ahead of looking them up.
const BATCH: usize = 16;

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
    let control = (at as i64).checked_add(rel);
    // The control bytes rkyv reads first (batch lookups touch them ahead of time too).
    if let Some(c) = control.and_then(|c| c.checked_add((hash % cap) as i64)) {
        if let Ok(c) = usize::try_from(c) {
            std::hint::black_box(arena.get(c).copied());
        }
    }
    let bucket =
        control.and_then(|control| control.checked_sub(((hash % cap) as i64 + 1) * W as i64));
    if let Some(b) = bucket.and_then(|b| usize::try_from(b).ok()) {
        // The group rkyv probes first covers 16 buckets (64 bytes, one or two cache lines,
        // downwards from `b`): touch both ends.
        std::hint::black_box(arena.get(b).copied());
        std::hint::black_box(arena.get(b.wrapping_sub(15 * W)).copied());
    }
}

/// What a stored value is, as an error message names it.
fn kind_of(v: &ArchivedValue) -> &'static str {
    match v {
        ArchivedValue::None => "None",
        ArchivedValue::Bool(_) => "bool",
        ArchivedValue::Int(_) => "int",
        ArchivedValue::Float(_) => "float",
        ArchivedValue::Str(_) => "str",
        ArchivedValue::Bytes(_) => "bytes",
        ArchivedValue::List(_) => "list",
        ArchivedValue::Tuple(_) => "tuple",
        ArchivedValue::Map(_) => "dict",
        ArchivedValue::Array(_) => "numpy array",
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

    /// Starts loading the control bytes and buckets of every key of a batch before any of them
    /// is looked up, so that their cache misses overlap instead of following one another.
    fn touch_ahead(&self, keys: &[Bound<'_, PyAny>]) -> PyResult<()> {
        let m = self.map()?;
        let arena = self.root.arena().as_bytes();
        for key in keys {
            with_key(key, |q| {
                touch_buckets(arena, m, hash_value::<KeyRef<'_>, FxHasher64>(&q))
            });
        }
        Ok(())
    }

    /// `get_many(keys, as_array=True)`: numbers gathered without making Python objects.
    fn get_many_array(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        enum Num {
            Int(i64),
            Float(f64),
        }
        let number = |v: &Bound<'_, PyAny>| -> Option<Num> {
            if v.is_instance_of::<PyInt>() {
                v.extract::<i64>().ok().map(Num::Int)
            } else if v.is_instance_of::<PyFloat>() {
                v.extract::<f64>().ok().map(Num::Float)
            } else {
                None
            }
        };
        let fallback =
            match &default {
                None => None,
                Some(d) => {
                    Some(number(d.bind(py)).ok_or_else(|| {
                        PyTypeError::new_err(format!(
                    "get_many(as_array=True): default must be an int, float or bool, not {}",
                    d.bind(py).get_type().name().map(|n| n.to_string()).unwrap_or_default()
                ))
                    })?)
                }
            };
        let mut ints: Vec<i64> = Vec::with_capacity(keys.len().unwrap_or(0));
        let mut floats: Option<Vec<f64>> = None;
        let push = |n: Num, ints: &mut Vec<i64>, floats: &mut Option<Vec<f64>>| match (n, floats) {
            (Num::Int(i), Some(f)) => f.push(i as f64),
            (Num::Float(x), Some(f)) => f.push(x),
            (Num::Int(i), None) => ints.push(i),
            (Num::Float(x), fl @ None) => {
                let mut f: Vec<f64> = ints.iter().map(|&i| i as f64).collect();
                f.push(x);
                *fl = Some(f);
            }
        };
        let mut chunk: Vec<Bound<'_, PyAny>> = Vec::with_capacity(BATCH);
        let mut it = keys.try_iter()?;
        loop {
            chunk.clear();
            for key in it.by_ref().take(BATCH) {
                chunk.push(key?);
            }
            if chunk.is_empty() {
                break;
            }
            self.touch_ahead(&chunk)?;
            for key in chunk.drain(..) {
                let n = match self.find(&key)? {
                    Some((_, ArchivedValue::Int(i))) => Num::Int(i.to_native()),
                    Some((_, ArchivedValue::Bool(b))) => Num::Int(i64::from(*b)),
                    Some((_, ArchivedValue::Float(x))) => Num::Float(x.to_native()),
                    Some((_, other)) => {
                        return Err(PyTypeError::new_err(format!(
                            "get_many(as_array=True): the value of key {} is a {}, not a number",
                            key.repr()?,
                            kind_of(other)
                        )))
                    }
                    None => match &fallback {
                        Some(Num::Int(i)) => Num::Int(*i),
                        Some(Num::Float(x)) => Num::Float(*x),
                        None => return Err(PyKeyError::new_err(key.unbind())),
                    },
                };
                push(n, &mut ints, &mut floats);
            }
        }
        let (bytes, dtype): (Vec<u8>, &str) = match floats {
            Some(f) => (f.iter().flat_map(|x| x.to_ne_bytes()).collect(), "float64"),
            None => (ints.iter().flat_map(|x| x.to_ne_bytes()).collect(), "int64"),
        };
        // A bytearray is writable, so numpy's array over it is too (no second copy).
        let buf = PyByteArray::new(py, &bytes);
        let np = py.import("numpy")?;
        np.getattr("frombuffer")?
            .call1((buf, dtype))?
            .into_py_any(py)
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

    /// Looks up every key of the iterable `keys` in one call. Returns a list of the values
    /// (`default` for a missing key), or, with `as_array=True`, a writable numpy array: int64
    /// when every value is an int or bool, float64 when any is a float (a missing key takes
    /// `default`, which must then be a number; with no default it raises `KeyError`). A value
    /// that is not a number raises `TypeError` naming its key in that mode.
    #[pyo3(signature = (keys, default = None, *, as_array = false))]
    fn get_many(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
        as_array: bool,
    ) -> PyResult<Py<PyAny>> {
        if as_array {
            return self.get_many_array(py, keys, default);
        }
        let default = default.unwrap_or_else(|| py.None());
        let mut out = Vec::with_capacity(keys.len().unwrap_or(0));
        let mut chunk: Vec<Bound<'_, PyAny>> = Vec::with_capacity(BATCH);
        let mut it = keys.try_iter()?;
        loop {
            chunk.clear();
            for key in it.by_ref().take(BATCH) {
                chunk.push(key?);
            }
            if chunk.is_empty() {
                break;
            }
            self.touch_ahead(&chunk)?;
            for key in &chunk {
                out.push(match self.find(key)? {
                    Some((i, v)) => node_to_py(py, &self.root, v, &self.path, Some(i))?,
                    None => default.clone_ref(py),
                });
            }
        }
        PyList::new(py, out)?.into_py_any(py)
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

    /// A short preview of the contents, as `dict`/`list` show theirs (`shmarena._view_repr`).
    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        static REPR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        helper(slf.py(), &REPR, "_view_repr")?
            .call1((slf,))?
            .extract()
    }

    /// The preview as an HTML table, for notebooks.
    fn _repr_html_(slf: &Bound<'_, Self>) -> PyResult<String> {
        static HTML: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        helper(slf.py(), &HTML, "_view_repr_html")?
            .call1((slf,))?
            .extract()
    }

    /// IPython's pretty printer: the preview.
    fn _repr_pretty_(slf: &Bound<'_, Self>, p: &Bound<'_, PyAny>, cycle: bool) -> PyResult<()> {
        static PRETTY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        helper(slf.py(), &PRETTY, "_view_repr_pretty")?.call1((slf, p, cycle))?;
        Ok(())
    }

    /// A `pandas.DataFrame` (a map) or `pandas.Series` (a list) of the contents; see
    /// docs/PYTHON.md, "pandas" (`shmarena._to_pandas`).
    #[pyo3(signature = (**kwargs))]
    fn to_pandas<'py>(
        slf: &Bound<'py, Self>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        static PANDAS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        helper(slf.py(), &PANDAS, "_to_pandas")?.call((slf,), kwargs)
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
