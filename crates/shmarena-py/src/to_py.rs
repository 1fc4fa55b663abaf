//! Archived values to Python objects: scalars and strings become new objects, containers
//! views, arrays read-only numpy arrays over the mapping; or, for `to_python`, a full copy.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use pyo3::IntoPyObjectExt;

use crate::buffer::ArenaBuffer;
use crate::dtype;
use crate::errors::{corrupted, ShmarenaError};
use crate::package::helper;
use crate::pickle;
use crate::registry::Root;
use crate::value::{ArchivedKey, ArchivedValue, KeyRef, ARRAY_ALIGN};
use crate::view::{ListView, MapView};

/// A read-only numpy array over `start..start + len` of the arena, pickling as `handle`.
pub(crate) fn make_array(
    py: Python<'_>,
    arena: &shmarena::Arena,
    start: usize,
    len: usize,
    dtype: &str,
    shape: &[usize],
    handle: Vec<u8>,
) -> PyResult<Py<PyAny>> {
    static MAKE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let make = helper(py, &MAKE, "_make_array")?;
    let buf = ArenaBuffer::new(arena.clone(), start, len).ok_or_else(|| {
        ShmarenaError::new_err(format!(
            "array bytes {start}..{} lie outside arena {}",
            start.saturating_add(len),
            arena.id()
        ))
    })?;
    let shape = PyTuple::new(py, shape)?;
    make.call1((Py::new(py, buf)?, dtype, shape, PyBytes::new(py, &handle)))
        .map(Bound::unbind)
}

/// A node as a Python object: scalars and strings become new objects, containers views,
/// arrays read-only numpy arrays. The node sits at `parent` plus `last` (if given) in `root`.
pub(crate) fn node_to_py(
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
            let shape: Vec<u64> = a.shape.iter().map(|d| d.to_native()).collect();
            // docs/VALUES.md "Arrays": A1-A3 (dtype, shape, length), then A4 (alignment).
            let checked =
                dtype::check_array(a.dtype.as_str(), &shape, data.len() as u64).and_then(|shape| {
                    if start % ARRAY_ALIGN == 0 {
                        Ok(shape)
                    } else {
                        Err(format!(
                            "its data at arena offset {start} is not {ARRAY_ALIGN}-aligned"
                        ))
                    }
                });
            let shape = checked.map_err(|why| {
                corrupted(format!(
                    "entry {:?} of arena {}: the array at position path {:?}: {why}",
                    root.entry,
                    root.arena().id(),
                    path()
                ))
            })?;
            let handle = pickle::handle(root.arena(), &root.entry, &path(), None);
            make_array(
                py,
                root.arena(),
                start,
                data.len(),
                a.dtype.as_str(),
                &shape,
                handle.encode(),
            )
        }
    }
}

/// A full copy of a node as plain Python objects (arrays copied into writable numpy arrays).
/// `path` is the node's path; it is restored before returning.
pub(crate) fn node_to_python(
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
            PyList::new(py, items_to_python(py, root, items, path)?)?.into_py_any(py)
        }
        ArchivedValue::Tuple(items) => {
            PyTuple::new(py, items_to_python(py, root, items, path)?)?.into_py_any(py)
        }
        ArchivedValue::Array(_) => {
            static COPY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
            let copy = helper(py, &COPY, "_copy_array")?;
            let view = node_to_py(py, root, node, path, None)?;
            copy.call1((view,)).map(Bound::unbind)
        }
        other => node_to_py(py, root, other, path, None),
    }
}

/// Full copies of the elements of the list or tuple at `path`.
fn items_to_python(
    py: Python<'_>,
    root: &Arc<Root>,
    items: &[ArchivedValue],
    path: &mut Vec<u32>,
) -> PyResult<Vec<Py<PyAny>>> {
    let mut out = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        path.push(i as u32);
        out.push(node_to_python(py, root, v, path)?);
        path.pop();
    }
    Ok(out)
}

/// A stored dict key as a Python `str`, `int` or `bytes`.
pub(crate) fn key_to_py(py: Python<'_>, k: &ArchivedKey) -> PyResult<Py<PyAny>> {
    match k.as_ref() {
        KeyRef::Str(s) => s.into_py_any(py),
        KeyRef::Int(i) => i.into_py_any(py),
        KeyRef::Bytes(b) => PyBytes::new(py, b).into_py_any(py),
    }
}
