//! The pure-Python package `shmarena` as the native code sees it: the helper functions it calls
//! (`_make_array`, `_copy_array`, `_to_pandas`, the views' reprs), each looked up once per process.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// `shmarena.<name>`, looked up on first use and kept in `cell`.
pub(crate) fn helper<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    let f = cell.get_or_try_init(py, || {
        py.import("shmarena")?.getattr(name).map(Bound::unbind)
    })?;
    Ok(f.bind(py))
}
