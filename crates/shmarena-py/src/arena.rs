//! `Arena` (a sealed arena as Python sees it), `shmarena.open`, and turning a handle back into
//! the arena or view it names.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList};
use pyo3::IntoPyObjectExt;
use shmarena::format::Kind;

use crate::dtype;
use crate::errors::{corrupted, lib_err, type_mismatch};
use crate::handle::{self, Handle};
use crate::package::helper;
use crate::pickle::{self, Reduced};
use crate::publisher::{self, PyPublisher};
use crate::registry::{ArenaState, META_ENTRY};
use crate::to_py::{make_array, node_to_py};
use crate::value::ArchivedValue;
use crate::view::ListView;

/// A sealed arena: `arena[name]` reads an entry in place.
#[pyclass(frozen, module = "shmarena", name = "Arena")]
pub(crate) struct PyArena {
    pub(crate) state: Arc<ArenaState>,
}

impl PyArena {
    /// An arena this process built (`owner`) or opened by name or path, registered in the
    /// attach cache; an arena already cached under the same id is used instead.
    pub(crate) fn local(arena: shmarena::Arena, owner: bool) -> PyArena {
        let state = handle::remember(Arc::new(ArenaState::new(arena, owner)));
        PyArena { state }
    }
}

/// `arena[name]`: an archived entry's value, or a read-only numpy array over a POD or bytes entry.
fn entry(state: &Arc<ArenaState>, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
    if name == META_ENTRY {
        return Err(PyKeyError::new_err(name.to_owned()));
    }
    let Some((_, entry)) = state.arena.layout().find(name) else {
        return Err(PyKeyError::new_err(name.to_owned()));
    };
    match entry.kind {
        Kind::Archived => {
            let root = state.root(name)?;
            node_to_py(py, &root, &root.view, &[], None)
        }
        Kind::Pod | Kind::Bytes => {
            // Arenas written before format version 2 keep dtype and shape in a side table.
            let (dtype, shape) = match state.arrays()?.get(name) {
                // A side-table row: VALUES.md's array rules A1-A3 against the entry's bytes.
                Some((d, s)) => {
                    let shape = dtype::check_array(d, s, entry.len).map_err(|why| {
                        corrupted(format!(
                            "entry {name:?} of {}: its side-table row: {why}",
                            state.what()
                        ))
                    })?;
                    (d.clone(), shape)
                }
                // The table of contents: E12 and E16 hold (checked on open).
                None => {
                    let dtype = dtype::of_entry(entry)
                        .map_err(|why| {
                            corrupted(format!("entry {name:?} of {}: {why}", state.what()))
                        })?
                        .ok_or_else(|| {
                            type_mismatch(format!(
                                "entry {name:?} of {} holds {} elements of type {} that have no \
                                 numpy dtype on this machine",
                                state.what(),
                                entry.count,
                                entry.type_name
                            ))
                        })?;
                    (dtype, entry.dims().iter().map(|&d| d as usize).collect())
                }
            };
            let range = entry.range();
            let handle = pickle::handle(&state.arena, name, &[], None).encode();
            make_array(
                py,
                &state.arena,
                range.start,
                range.len(),
                &dtype,
                &shape,
                handle,
            )
        }
        _ => Err(type_mismatch(format!(
            "entry {name:?} of {} has kind {} that Python cannot read",
            state.what(),
            entry.kind
        ))),
    }
}

/// What a handle names in the arena `state` holds.
pub(crate) fn resolve(state: &Arc<ArenaState>, py: Python<'_>, h: &Handle) -> PyResult<Py<PyAny>> {
    if h.entry.is_empty() {
        return Py::new(
            py,
            PyArena {
                state: state.clone(),
            },
        )?
        .into_py_any(py);
    }
    if h.path.is_empty() && h.slice.is_none() {
        return entry(state, py, &h.entry);
    }
    let root = state.root(&h.entry)?;
    let node = root.walk(&h.path).ok_or_else(|| root.bad_path(&h.path))?;
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
        (_, Some(_)) => Err(root.bad_path(&h.path)),
        (node, None) => node_to_py(py, &root, node, &h.path, None),
    }
}

/// `collections.abc.<view>(arena)`: a keys, values or items view of the arena as a Mapping.
fn abc_view<'py>(slf: &Bound<'py, PyArena>, view: &str) -> PyResult<Bound<'py, PyAny>> {
    slf.py()
        .import("collections.abc")?
        .getattr(view)?
        .call1((slf,))
}

/// Unlinks the name of a named arena this process built, and forgets the arena.
pub(crate) fn close(state: &ArenaState) -> PyResult<()> {
    handle::forget(state.arena.id());
    if state.is_owner() {
        state.arena.unlink().map_err(lib_err)?;
    }
    Ok(())
}

#[pymethods]
impl PyArena {
    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        entry(&self.state, py, name)
    }

    #[pyo3(signature = (name, default = None))]
    fn get(&self, py: Python<'_>, name: &str, default: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        match entry(&self.state, py, name) {
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

    /// A `KeysView` of the entry names, in the order they were added (the arena is a
    /// `collections.abc.Mapping` of entry name to value).
    fn keys<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        abc_view(slf, "KeysView")
    }

    /// A `ValuesView` of the entries' values (views and arrays, read lazily).
    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        abc_view(slf, "ValuesView")
    }

    /// An `ItemsView` of `(name, value)` pairs.
    fn items<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        abc_view(slf, "ItemsView")
    }

    /// Entry names from the last added to the first.
    fn __reversed__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut names = self.state.names();
        names.reverse();
        PyList::new(py, names)?.try_iter().map(Bound::into_any)
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
        self.state.arena.byte_len()
    }

    /// Whether entry `name` is read without validation in this process: built here (or in a
    /// fork ancestor), received in a pickle from a process of the same build, or validated here
    /// already. Anything else is validated on its first read.
    fn trusts(&self, name: &str) -> bool {
        self.state.arena.trusts::<crate::value::Value>(name)
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

    /// Publishes this arena (a sealed memfd) as `name` for any process of this user: see
    /// `shmarena.connect` and `shmarena.subscribe`. Served by a thread of this process until the
    /// returned `Publisher` is closed or this process exits.
    #[pyo3(signature = (name, *, allow_uids = Vec::new(), allow_gids = Vec::new(), timeout = None))]
    fn publish(
        &self,
        py: Python<'_>,
        name: &str,
        allow_uids: Vec<u32>,
        allow_gids: Vec<u32>,
        timeout: Option<f64>,
    ) -> PyResult<PyPublisher> {
        let arena = self.state.arena.clone();
        publisher::publish(py, arena, name, allow_uids, allow_gids, timeout)
    }

    /// The entry `name` as a pandas object: `arena[name].to_pandas(**kwargs)` for a map or a
    /// list, a `DataFrame` (2-D) or `Series` (1-D) over the shared pages for an array.
    #[pyo3(signature = (name, /, **kwargs))]
    fn to_pandas<'py>(
        slf: &Bound<'py, Self>,
        name: &str,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        static PANDAS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let value = slf.get().__getitem__(slf.py(), name)?;
        helper(slf.py(), &PANDAS, "_to_pandas")?.call((value,), kwargs)
    }

    /// Writes the arena as an image file at `path` (atomically: a temporary file renamed over
    /// it); `shmarena.load(path)` reads it back.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let arena = self.state.arena.clone();
        py.detach(move || arena.save(path)).map_err(lib_err)
    }

    /// Stops sharing: the owner of a named arena removes its name now (unless it was built with
    /// `persist=True`); every process forgets the arena in its attach cache. Views and arrays
    /// already made keep working. To remove a name this process did not build (an orphan, or
    /// a persisted arena), use `shmarena.remove(name)`.
    fn close(&self) -> PyResult<()> {
        close(&self.state)
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
            self.state.arena.byte_len()
        )
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Reduced<'py>> {
        pickle::reduce(py, &pickle::handle(&self.state.arena, "", &[], None))
    }
}

/// Opens an arena by locator: `name=` a named segment or `path=` a file.
///
/// By default the segment or file is copied into a sealed memfd of this process with `pread`
/// and checked once (`Arena::load_named` / `Arena::load_file`): nothing another process writes
/// to it later can change what this arena holds. `no_concurrent_writers=True` maps it in place
/// instead (no copy): the caller promises that no process writes to or truncates it while the
/// arena or any view of it is alive.
#[pyfunction]
#[pyo3(signature = (*, name = None, path = None, no_concurrent_writers = false))]
pub(crate) fn open(
    py: Python<'_>,
    name: Option<String>,
    path: Option<PathBuf>,
    no_concurrent_writers: bool,
) -> PyResult<PyArena> {
    let arena = match (name, path, no_concurrent_writers) {
        (Some(n), None, false) => py.detach(move || shmarena::Arena::load_named(&n)),
        (None, Some(p), false) => py.detach(move || shmarena::Arena::load_file(p)),
        // SAFETY: `open_named` needs nothing to write to or truncate the segment while it is
        // mapped; the Python caller made exactly that promise by passing
        // `no_concurrent_writers=True` (docs/PYTHON.md), Python having no `unsafe`.
        (Some(n), None, true) => py.detach(move || unsafe { shmarena::Arena::open_named(&n) }),
        // SAFETY: as above, for a file.
        (None, Some(p), true) => py.detach(move || unsafe { shmarena::Arena::open_file(p) }),
        _ => return Err(PyValueError::new_err("give exactly one of name= or path=")),
    }
    .map_err(lib_err)?;
    Ok(PyArena::local(arena, false))
}
