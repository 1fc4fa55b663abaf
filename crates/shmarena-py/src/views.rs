//! `Arena`, `MapView` and `ListView`: lazy views over archived values, read in place.
//!
//! A view is its entry's root plus a path of positions (map entries by insertion index, list
//! elements by index). Each access walks the path from the root, O(depth), so a view needs no
//! pointer of its own into the mapping and pickles to the same few bytes it is made of.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::{PyIndexError, PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyList, PySlice, PyString, PyTuple};
use pyo3::IntoPyObjectExt;
use rkyv::collections::swiss_table::ArchivedIndexMap;
use rkyv::vec::ArchivedVec;
use shmarena::format::{Kind, Prim};
use shmarena::View;

use crate::buffer::ArenaBuffer;
use crate::errors::{lib_err, ShmarenaError};
use crate::handle::{self, Handle, Slice};
use crate::value::{ArchivedKey, ArchivedValue, KeyRef, Value};

/// The entry holding dtype and shape of arrays stored with `put_array`.
pub(crate) const META_ENTRY: &str = "shmarena-py/arrays";

type ArchivedMap = ArchivedIndexMap<ArchivedKey, ArchivedValue>;

/// One archived entry's root, shared by every view into it.
pub(crate) struct Root {
    entry: String,
    view: View<Value>,
}

impl Root {
    fn arena(&self) -> &shmarena::Arena {
        self.view.arena()
    }

    fn handle(&self, path: &[u32], slice: Option<Slice>) -> Handle {
        Handle {
            id: self.arena().id(),
            locator: self.arena().locator().clone(),
            entry: self.entry.clone(),
            path: path.to_vec(),
            slice,
        }
    }

    /// The node at `path`, or `None` if the path does not lead anywhere (a forged handle).
    fn walk(&self, path: &[u32]) -> Option<&ArchivedValue> {
        let mut node: &ArchivedValue = &self.view;
        for &i in path {
            node = match node {
                ArchivedValue::Map(m) => m.get_index(i as usize)?.1,
                ArchivedValue::List(v) | ArchivedValue::Tuple(v) => v.get(i as usize)?,
                _ => return None,
            };
        }
        Some(node)
    }
}

/// Per-process state of one arena: the mapping, the roots of entries read so far, and the
/// dtype/shape of arrays stored with `put_array`.
pub(crate) struct ArenaState {
    pub(crate) arena: shmarena::Arena,
    /// The process that built the arena (and so unlinks a named one on close or exit); a fork
    /// child inherits this state but is not the owner.
    owner_pid: Option<u32>,
    roots: Mutex<HashMap<String, Arc<Root>>>,
    arrays: OnceLock<HashMap<String, (String, Vec<usize>)>>,
}

impl ArenaState {
    pub(crate) fn new(arena: shmarena::Arena, owner: bool) -> ArenaState {
        let owner_pid = owner.then(std::process::id);
        ArenaState {
            arena,
            owner_pid,
            roots: Mutex::new(HashMap::new()),
            arrays: OnceLock::new(),
        }
    }

    /// Whether this process built the arena.
    pub(crate) fn is_owner(&self) -> bool {
        self.owner_pid == Some(std::process::id())
    }

    fn what(&self) -> String {
        format!(
            "arena {} ({})",
            self.arena.id(),
            self.arena.locator().describe()
        )
    }

    /// The root of archived entry `name`, read once per process.
    fn root(&self, name: &str) -> PyResult<Arc<Root>> {
        let mut roots = self.roots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = roots.get(name) {
            return Ok(r.clone());
        }
        let view = self.arena.get::<Value>(name).map_err(|e| match e {
            shmarena::Error::TypeMismatch { .. } => PyTypeError::new_err(format!(
                "entry {name:?} of {} was not stored by shmarena's Python bindings: {}",
                self.what(),
                crate::errors::chain(&e)
            )),
            shmarena::Error::NoSuchEntry { .. } => PyKeyError::new_err(name.to_owned()),
            other => lib_err(other),
        })?;
        let root = Arc::new(Root {
            entry: name.to_owned(),
            view,
        });
        roots.insert(name.to_owned(), root.clone());
        Ok(root)
    }

    /// dtype and shape of top-level arrays, parsed once per process.
    fn arrays(&self) -> &HashMap<String, (String, Vec<usize>)> {
        self.arrays.get_or_init(|| {
            let mut out = HashMap::new();
            let Ok(view) = self.arena.get::<Value>(META_ENTRY) else {
                return out;
            };
            if let ArchivedValue::Map(m) = &*view {
                for (k, v) in m.iter() {
                    let (ArchivedKey::Str(name), ArchivedValue::Tuple(t)) = (k, v) else {
                        continue;
                    };
                    let (Some(ArchivedValue::Str(dtype)), Some(ArchivedValue::List(shape))) =
                        (t.first(), t.get(1))
                    else {
                        continue;
                    };
                    let shape = shape
                        .iter()
                        .filter_map(|d| match d {
                            ArchivedValue::Int(i) => usize::try_from(i.to_native()).ok(),
                            _ => None,
                        })
                        .collect();
                    out.insert(name.as_str().to_owned(), (dtype.as_str().to_owned(), shape));
                }
            }
            out
        })
    }

    /// Entry names a Python user sees (the metadata entry is hidden).
    fn names(&self) -> Vec<&str> {
        self.arena
            .layout()
            .entries
            .iter()
            .map(|e| e.name.as_str())
            .filter(|n| *n != META_ENTRY)
            .collect()
    }

    fn handle(&self) -> Handle {
        Handle {
            id: self.arena.id(),
            locator: self.arena.locator().clone(),
            entry: String::new(),
            path: Vec::new(),
            slice: None,
        }
    }

    /// `arena[name]`.
    fn get(self: &Arc<Self>, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        if name == META_ENTRY {
            return Err(PyKeyError::new_err(name.to_owned()));
        }
        let Some((_, entry)) = self.arena.layout().find(name) else {
            return Err(PyKeyError::new_err(name.to_owned()));
        };
        match entry.kind {
            Kind::Archived => {
                let root = self.root(name)?;
                node_to_py(py, &root, &root.view, &[], None)
            }
            Kind::Pod | Kind::Bytes => {
                let (dtype, shape) = match self.arrays().get(name) {
                    Some((d, s)) => (d.clone(), s.clone()),
                    None => {
                        let dtype = prim_dtype(entry.prim).ok_or_else(|| {
                            PyTypeError::new_err(format!(
                                "entry {name:?} of {} holds {} elements of Rust type {} that have no numpy dtype",
                                self.what(),
                                entry.count,
                                entry.type_name
                            ))
                        })?;
                        (dtype.to_owned(), vec![entry.count as usize])
                    }
                };
                let range = entry.range();
                let handle = self.handle_for(name).encode();
                make_array(
                    py,
                    &self.arena,
                    range.start,
                    range.len(),
                    &dtype,
                    &shape,
                    handle,
                )
            }
            _ => Err(PyTypeError::new_err(format!(
                "entry {name:?} of {} has kind {} that Python cannot read",
                self.what(),
                entry.kind
            ))),
        }
    }

    fn handle_for(&self, name: &str) -> Handle {
        Handle {
            entry: name.to_owned(),
            ..self.handle()
        }
    }

    /// What a handle names in this arena.
    pub(crate) fn resolve(self: &Arc<Self>, py: Python<'_>, h: &Handle) -> PyResult<Py<PyAny>> {
        if h.entry.is_empty() {
            return Py::new(
                py,
                PyArena {
                    state: self.clone(),
                },
            )?
            .into_py_any(py);
        }
        if h.path.is_empty() && h.slice.is_none() {
            return self.get(py, &h.entry);
        }
        let root = self.root(&h.entry)?;
        let node = root.walk(&h.path).ok_or_else(|| bad_path(&root, &h.path))?;
        match (node, h.slice) {
            (ArchivedValue::List(_) | ArchivedValue::Tuple(_), Some(s)) => Py::new(
                py,
                ListView {
                    root: root.clone(),
                    path: h.path.clone(),
                    slice: Some(s),
                },
            )?
            .into_py_any(py),
            (_, Some(_)) => Err(bad_path(&root, &h.path)),
            (node, None) => node_to_py(py, &root, node, &h.path, None),
        }
    }
}

fn bad_path(root: &Root, path: &[u32]) -> PyErr {
    ShmarenaError::new_err(format!(
        "entry {:?} of arena {} has no container at position path {path:?}",
        root.entry,
        root.arena().id()
    ))
}

/// numpy dtype strings of the library's POD primitives (entries written from Rust).
fn prim_dtype(p: Prim) -> Option<&'static str> {
    let le = cfg!(target_endian = "little");
    Some(match p {
        Prim::U8 => "|u1",
        Prim::I8 => "|i1",
        Prim::U16 if le => "<u2",
        Prim::I16 if le => "<i2",
        Prim::U32 if le => "<u4",
        Prim::I32 if le => "<i4",
        Prim::U64 if le => "<u8",
        Prim::I64 if le => "<i8",
        Prim::F32 if le => "<f4",
        Prim::F64 if le => "<f8",
        _ => return None,
    })
}

/// A read-only numpy array over `start..start + len` of the arena, pickling as `handle`.
fn make_array(
    py: Python<'_>,
    arena: &shmarena::Arena,
    start: usize,
    len: usize,
    dtype: &str,
    shape: &[usize],
    handle: Vec<u8>,
) -> PyResult<Py<PyAny>> {
    static MAKE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let make = MAKE.get_or_try_init(py, || {
        py.import("shmarena")?
            .getattr("_make_array")
            .map(Bound::unbind)
    })?;
    let buf = ArenaBuffer::new(arena.clone(), start, len).ok_or_else(|| {
        ShmarenaError::new_err(format!(
            "array bytes {start}..{} lie outside arena {}",
            start.saturating_add(len),
            arena.id()
        ))
    })?;
    let shape = PyTuple::new(py, shape)?;
    make.bind(py)
        .call1((Py::new(py, buf)?, dtype, shape, PyBytes::new(py, &handle)))
        .map(Bound::unbind)
}

/// A node as a Python object: scalars and strings become new objects, containers views,
/// arrays read-only numpy arrays.
fn node_to_py(
    py: Python<'_>,
    root: &Arc<Root>,
    node: &ArchivedValue,
    parent: &[u32],
    last: Option<usize>,
) -> PyResult<Py<PyAny>> {
    // The node's path, built only for the nodes that keep one (containers and arrays).
    let path = || {
        let mut p = Vec::with_capacity(parent.len() + 1);
        p.extend_from_slice(parent);
        p.extend(last.map(|i| i as u32));
        p
    };
    match node {
        ArchivedValue::None => Ok(py.None()),
        ArchivedValue::Bool(b) => b.into_py_any(py),
        ArchivedValue::Int(i) => i.to_native().into_py_any(py),
        ArchivedValue::Float(f) => f.to_native().into_py_any(py),
        ArchivedValue::Str(s) => s.as_str().into_py_any(py),
        ArchivedValue::Bytes(b) => PyBytes::new(py, b.as_slice()).into_py_any(py),
        ArchivedValue::Map(_) => Py::new(
            py,
            MapView {
                root: root.clone(),
                path: path(),
            },
        )?
        .into_py_any(py),
        ArchivedValue::List(_) | ArchivedValue::Tuple(_) => Py::new(
            py,
            ListView {
                root: root.clone(),
                path: path(),
                slice: None,
            },
        )?
        .into_py_any(py),
        ArchivedValue::Array(a) => {
            let data = a.data.as_slice();
            let start =
                (data.as_ptr() as usize).wrapping_sub(root.arena().as_bytes().as_ptr() as usize);
            let shape: Vec<usize> = a.shape.iter().map(|d| d.to_native() as usize).collect();
            make_array(
                py,
                root.arena(),
                start,
                data.len(),
                a.dtype.as_str(),
                &shape,
                root.handle(&path(), None).encode(),
            )
        }
    }
}

/// A full copy of a node as plain Python objects (arrays copied into writable numpy arrays).
fn node_to_python(
    py: Python<'_>,
    root: &Arc<Root>,
    node: &ArchivedValue,
    path: &mut Vec<u32>,
) -> PyResult<Py<PyAny>> {
    match node {
        ArchivedValue::Map(m) => {
            let d = PyDict::new(py);
            for (i, (k, v)) in m.iter().enumerate() {
                path.push(i as u32);
                d.set_item(key_to_py(py, k)?, node_to_python(py, root, v, path)?)?;
                path.pop();
            }
            d.into_py_any(py)
        }
        ArchivedValue::List(items) => {
            let l = PyList::empty(py);
            for (i, v) in items.iter().enumerate() {
                path.push(i as u32);
                l.append(node_to_python(py, root, v, path)?)?;
                path.pop();
            }
            l.into_py_any(py)
        }
        ArchivedValue::Tuple(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                path.push(i as u32);
                out.push(node_to_python(py, root, v, path)?);
                path.pop();
            }
            PyTuple::new(py, out)?.into_py_any(py)
        }
        ArchivedValue::Array(_) => {
            static COPY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
            let copy = COPY.get_or_try_init(py, || {
                py.import("shmarena")?
                    .getattr("_copy_array")
                    .map(Bound::unbind)
            })?;
            let view = node_to_py(py, root, node, path, None)?;
            copy.bind(py).call1((view,)).map(Bound::unbind)
        }
        other => node_to_py(py, root, other, path, None),
    }
}

fn key_to_py(py: Python<'_>, k: &ArchivedKey) -> PyResult<Py<PyAny>> {
    match k.as_ref() {
        KeyRef::Str(s) => s.into_py_any(py),
        KeyRef::Int(i) => i.into_py_any(py),
        KeyRef::Bytes(b) => PyBytes::new(py, b).into_py_any(py),
    }
}

/// Runs `f` with `key` as a [`KeyRef`], or returns `None` if no stored key can equal it.
fn with_key<R>(key: &Bound<'_, PyAny>, f: impl FnOnce(KeyRef<'_>) -> R) -> Option<R> {
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

/// Where to find `collections.abc` helpers.
fn abc<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("collections.abc")?.getattr(name)
}

/// A read-only `collections.abc.Mapping` over an archived dict: lookups hash the key and probe
/// the archived table in place.
#[pyclass(frozen, module = "shmarena", name = "MapView")]
pub(crate) struct MapView {
    root: Arc<Root>,
    path: Vec<u32>,
}

impl MapView {
    fn map(&self) -> PyResult<&ArchivedMap> {
        match self.root.walk(&self.path) {
            Some(ArchivedValue::Map(m)) => Ok(m),
            _ => Err(bad_path(&self.root, &self.path)),
        }
    }

    fn find(&self, key: &Bound<'_, PyAny>) -> PyResult<Option<(usize, &ArchivedValue)>> {
        let m = self.map()?;
        Ok(with_key(key, |q| {
            m.get_full_with(&q, |q, k| *q == k.as_ref())
                .map(|(i, _, v)| (i, v))
        })
        .flatten())
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

    fn __iter__(slf: PyRef<'_, Self>) -> PyResult<MapIter> {
        let len = slf.map()?.len();
        Ok(MapIter {
            root: slf.root.clone(),
            path: slf.path.clone(),
            pos: 0,
            len,
            what: IterWhat::Keys,
        })
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
        Ok(MapIter {
            root: self.root.clone(),
            path: self.path.clone(),
            pos: 0,
            len: self.map()?.len(),
            what: IterWhat::Items,
        })
    }

    /// Iterates over values in insertion order, with no lookups.
    fn iter_values(&self) -> PyResult<MapIter> {
        Ok(MapIter {
            root: self.root.clone(),
            path: self.path.clone(),
            pos: 0,
            len: self.map()?.len(),
            what: IterWhat::Values,
        })
    }

    /// A full copy as a plain `dict` (nested containers copied too).
    fn to_python(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let node = self
            .root
            .walk(&self.path)
            .ok_or_else(|| bad_path(&self.root, &self.path))?;
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

    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        reduce(py, &self.root.handle(&self.path, None))
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
            return Err(bad_path(&self.root, &self.path));
        };
        let i = self.pos;
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

/// A read-only `collections.abc.Sequence` over an archived list or tuple, with lazy slicing.
#[pyclass(frozen, sequence, module = "shmarena", name = "ListView")]
pub(crate) struct ListView {
    root: Arc<Root>,
    path: Vec<u32>,
    /// `None`: the whole list.
    slice: Option<Slice>,
}

impl ListView {
    fn items(&self) -> PyResult<(&ArchivedVec<ArchivedValue>, bool)> {
        match self.root.walk(&self.path) {
            Some(ArchivedValue::List(v)) => Ok((v, false)),
            Some(ArchivedValue::Tuple(v)) => Ok((v, true)),
            _ => Err(bad_path(&self.root, &self.path)),
        }
    }

    fn sel(&self) -> PyResult<Slice> {
        let (items, _) = self.items()?;
        Ok(self.slice.unwrap_or(Slice {
            start: 0,
            step: 1,
            len: items.len(),
        }))
    }

    /// Position in the underlying list of element `i` of this view (`0 <= i < len`).
    fn underlying(&self, s: Slice, i: usize) -> Option<usize> {
        let off = (i as isize).checked_mul(s.step)?;
        usize::try_from((s.start as isize).checked_add(off)?).ok()
    }

    fn element(&self, py: Python<'_>, s: Slice, i: usize) -> PyResult<Py<PyAny>> {
        let (items, _) = self.items()?;
        let j = self
            .underlying(s, i)
            .filter(|j| *j < items.len())
            .ok_or_else(|| bad_path(&self.root, &self.path))?;
        node_to_py(py, &self.root, &items[j], &self.path, Some(j))
    }
}

#[pymethods]
impl ListView {
    fn __len__(&self) -> PyResult<usize> {
        Ok(self.sel()?.len)
    }

    fn __getitem__(&self, py: Python<'_>, index: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let (items, _) = self.items()?;
        let s = self.slice.unwrap_or(Slice {
            start: 0,
            step: 1,
            len: items.len(),
        });
        if let Ok(i) = index.extract::<isize>() {
            let n = s.len as isize;
            let i = if i < 0 { i + n } else { i };
            if i < 0 || i >= n {
                return Err(PyIndexError::new_err("ListView index out of range"));
            }
            let j = self
                .underlying(s, i as usize)
                .filter(|j| *j < items.len())
                .ok_or_else(|| bad_path(&self.root, &self.path))?;
            return node_to_py(py, &self.root, &items[j], &self.path, Some(j));
        }
        if let Ok(sl) = index.cast::<PySlice>() {
            let ix = sl.indices(s.len as isize)?;
            let len = ix.slicelength;
            let start = if len == 0 {
                s.start
            } else {
                self.underlying(s, ix.start as usize)
                    .ok_or_else(|| PyValueError::new_err("slice out of range"))?
            };
            let step = s
                .step
                .checked_mul(ix.step)
                .ok_or_else(|| PyValueError::new_err("slice step out of range"))?;
            return Py::new(
                py,
                ListView {
                    root: self.root.clone(),
                    path: self.path.clone(),
                    slice: Some(Slice { start, step, len }),
                },
            )?
            .into_py_any(py);
        }
        if index.cast::<PyInt>().is_ok() {
            return Err(PyIndexError::new_err(
                "cannot fit the index into an index-sized integer",
            ));
        }
        Err(PyTypeError::new_err(format!(
            "ListView indices must be integers or slices, not {}",
            index
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        )))
    }

    fn __iter__(&self) -> PyResult<ListIter> {
        Ok(ListIter {
            view: ListView {
                root: self.root.clone(),
                path: self.path.clone(),
                slice: self.slice,
            },
            sel: self.sel()?,
            pos: 0,
        })
    }

    fn __contains__(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        let s = self.sel()?;
        for i in 0..s.len {
            if self.element(py, s, i)?.bind(py).eq(value)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Position of the first element equal to `value` (`ValueError` if none).
    fn index(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        let s = self.sel()?;
        for i in 0..s.len {
            if self.element(py, s, i)?.bind(py).eq(value)? {
                return Ok(i);
            }
        }
        Err(PyValueError::new_err("value is not in the ListView"))
    }

    /// Number of elements equal to `value`.
    fn count(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        let s = self.sel()?;
        let mut n = 0;
        for i in 0..s.len {
            if self.element(py, s, i)?.bind(py).eq(value)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether the stored value was a tuple (`to_python` gives a tuple then, else a list).
    #[getter]
    fn is_tuple(&self) -> PyResult<bool> {
        Ok(self.items()?.1)
    }

    /// A full copy as a plain `list` (or `tuple` for a stored tuple).
    fn to_python(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (items, is_tuple) = self.items()?;
        let s = self.sel()?;
        let mut out = Vec::with_capacity(s.len);
        let mut path = self.path.clone();
        for i in 0..s.len {
            let j = self
                .underlying(s, i)
                .filter(|j| *j < items.len())
                .ok_or_else(|| bad_path(&self.root, &self.path))?;
            path.push(j as u32);
            out.push(node_to_python(py, &self.root, &items[j], &mut path)?);
            path.pop();
        }
        if is_tuple {
            PyTuple::new(py, out)?.into_py_any(py)
        } else {
            PyList::new(py, out)?.into_py_any(py)
        }
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let other = if let Ok(o) = other.cast::<ListView>() {
            o.get().to_python(py)?.into_bound(py)
        } else if other.is_instance_of::<PyList>() || other.is_instance_of::<PyTuple>() {
            other.clone()
        } else {
            return Ok(py.NotImplemented());
        };
        self.to_python(py)?.bind(py).eq(other)?.into_py_any(py)
    }

    fn __repr__(&self) -> PyResult<String> {
        let (_, is_tuple) = self.items()?;
        Ok(format!(
            "<shmarena.ListView of entry {:?} at {:?}{}, {} {}>",
            self.root.entry,
            self.path,
            match self.slice {
                Some(s) => format!(" [start {} step {}]", s.start, s.step),
                None => String::new(),
            },
            self.sel()?.len,
            if is_tuple { "tuple items" } else { "items" }
        ))
    }

    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        reduce(py, &self.root.handle(&self.path, self.slice))
    }
}

/// Iterator over a `ListView`.
#[pyclass(module = "shmarena", name = "ListIterator")]
pub(crate) struct ListIter {
    view: ListView,
    sel: Slice,
    pos: usize,
}

#[pymethods]
impl ListIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if self.pos >= self.sel.len {
            return Ok(None);
        }
        let i = self.pos;
        self.pos += 1;
        self.view.element(py, self.sel, i).map(Some)
    }

    fn __length_hint__(&self) -> usize {
        self.sel.len.saturating_sub(self.pos)
    }
}

/// `(shmarena._restore, (handle,))`: what every arena and view pickles to.
pub(crate) fn reduce<'py>(
    py: Python<'py>,
    h: &Handle,
) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
    static RESTORE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let restore = RESTORE.get_or_try_init(py, || {
        py.import("shmarena")?
            .getattr("_restore")
            .map(Bound::unbind)
    })?;
    Ok((restore.bind(py).clone(), (PyBytes::new(py, &h.encode()),)))
}

/// A sealed arena: `arena[name]` reads an entry in place.
#[pyclass(frozen, module = "shmarena", name = "Arena")]
pub(crate) struct PyArena {
    pub(crate) state: Arc<ArenaState>,
}

#[pymethods]
impl PyArena {
    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        self.state.get(py, name)
    }

    #[pyo3(signature = (name, default = None))]
    fn get(&self, py: Python<'_>, name: &str, default: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        match self.state.get(py, name) {
            Err(e) if e.is_instance_of::<PyKeyError>(py) => {
                Ok(default.unwrap_or_else(|| py.None()))
            }
            other => other,
        }
    }

    fn __contains__(&self, name: &str) -> bool {
        name != META_ENTRY && self.state.arena.layout().find(name).is_some()
    }

    fn __len__(&self) -> usize {
        self.state.names().len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PyList::new(py, self.state.names())?
            .try_iter()
            .map(Bound::into_any)
    }

    /// Entry names, in the order they were added.
    fn keys(&self) -> Vec<String> {
        self.state.names().into_iter().map(str::to_owned).collect()
    }

    /// The arena's random id (32 hex digits).
    #[getter]
    fn id(&self) -> String {
        self.state.arena.id().to_string()
    }

    /// Where the arena lives, as text.
    #[getter]
    fn locator(&self) -> String {
        self.state.arena.locator().describe()
    }

    /// Size in bytes.
    #[getter]
    fn nbytes(&self) -> u64 {
        self.state.arena.len()
    }

    /// Whether the kernel guarantees the bytes cannot change (a sealed memfd of this user).
    #[getter]
    fn kernel_sealed(&self) -> bool {
        self.state.arena.is_kernel_sealed()
    }

    /// Whether this process built the arena.
    #[getter]
    fn owner(&self) -> bool {
        self.state.is_owner()
    }

    /// Checks every entry against its checksum (reads the whole arena).
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        let arena = self.state.arena.clone();
        py.detach(move || arena.verify()).map_err(lib_err)
    }

    /// Stops sharing: the owner of a named arena removes its name now; every process forgets
    /// the arena in its attach cache. Views and arrays already made keep working.
    fn close(&self) -> PyResult<()> {
        close_state(&self.state)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        _ty: &Bound<'_, PyAny>,
        _value: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyArena>()
            .is_ok_and(|o| o.get().state.arena.id() == self.state.arena.id())
    }

    fn __hash__(&self) -> u64 {
        let id = self.state.arena.id().to_bytes();
        u64::from_le_bytes([id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]])
    }

    fn __repr__(&self) -> String {
        format!(
            "<shmarena.Arena {} at {}, {} entries, {} bytes>",
            self.state.arena.id(),
            self.state.arena.locator().describe(),
            self.state.names().len(),
            self.state.arena.len()
        )
    }

    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        reduce(py, &self.state.handle())
    }
}

/// Unlinks the name of a named arena this process built, and forgets the arena.
pub(crate) fn close_state(state: &ArenaState) -> PyResult<()> {
    handle::forget(state.arena.id());
    if state.is_owner() {
        state.arena.unlink().map_err(lib_err)?;
    }
    Ok(())
}
