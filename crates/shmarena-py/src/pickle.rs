//! What arenas and views pickle to: the [`Handle`] naming them and `__reduce__`'s tuple.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use crate::handle::{Handle, Slice};
use crate::package::helper;

/// `__reduce__`'s result: `(shmarena._restore, (handle bytes,))`.
pub(crate) type Reduced<'py> = (Bound<'py, PyAny>, (Bound<'py, PyBytes>,));

/// The handle of a node of `arena`: the arena itself when `entry` is empty, else the entry, the
/// positions of nested containers inside its value, and a list slice.
pub(crate) fn handle(
    arena: &shmarena::Arena,
    entry: &str,
    path: &[u32],
    slice: Option<Slice>,
) -> Handle {
    Handle {
        id: arena.id(),
        locator: arena.locator().clone(),
        entry: entry.to_owned(),
        path: path.to_vec(),
        slice,
        trust: arena.trust_token((!entry.is_empty()).then_some(entry)),
    }
}

/// `(shmarena._restore, (handle,))`: what every arena and view pickles to.
pub(crate) fn reduce<'py>(py: Python<'py>, h: &Handle) -> PyResult<Reduced<'py>> {
    static RESTORE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let restore = helper(py, &RESTORE, "_restore")?;
    Ok((restore.clone(), (PyBytes::new(py, &h.encode()),)))
}
