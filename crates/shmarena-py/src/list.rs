//! `ListView`'s methods (a read-only `collections.abc.Sequence` over an archived list or tuple,
//! with lazy slicing) and its iterator.

use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyList, PySlice, PyTuple};
use pyo3::IntoPyObjectExt;
use rkyv::vec::ArchivedVec;

use crate::handle::Slice;
use crate::package::helper;
use crate::pickle::{self, Reduced};
use crate::to_py::{node_to_py, node_to_python};
use crate::value::ArchivedValue;
use crate::view::ListView;

impl ListView {
    /// The underlying list's elements, and whether it was stored as a tuple.
    fn items(&self) -> PyResult<(&ArchivedVec<ArchivedValue>, bool)> {
        match self.root.walk(&self.path) {
            Some(ArchivedValue::List(v)) => Ok((v, false)),
            Some(ArchivedValue::Tuple(v)) => Ok((v, true)),
            _ => Err(self.root.bad_path(&self.path)),
        }
    }

    /// This view's selection of an underlying list of `n` elements.
    fn sel_of(&self, n: usize) -> Slice {
        self.slice.unwrap_or(Slice {
            start: 0,
            step: 1,
            len: n,
        })
    }

    fn sel(&self) -> PyResult<Slice> {
        Ok(self.sel_of(self.items()?.0.len()))
    }

    /// Position in the underlying list of element `i` of this view (`0 <= i < len`).
    fn underlying(&self, s: Slice, i: usize) -> Option<usize> {
        let off = (i as isize).checked_mul(s.step)?;
        usize::try_from((s.start as isize).checked_add(off)?).ok()
    }

    /// [`underlying`](Self::underlying), checked against the `n` elements of the list.
    fn position(&self, s: Slice, i: usize, n: usize) -> PyResult<usize> {
        self.underlying(s, i)
            .filter(|j| *j < n)
            .ok_or_else(|| self.root.bad_path(&self.path))
    }

    fn element(&self, py: Python<'_>, s: Slice, i: usize) -> PyResult<Py<PyAny>> {
        let (items, _) = self.items()?;
        let j = self.position(s, i, items.len())?;
        node_to_py(py, &self.root, &items[j], &self.path, Some(j))
    }

    /// Positions of the elements equal to `value`, in order, among positions `range` (clamped
    /// to the view); only the first when `first`.
    fn positions_of(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        first: bool,
        range: std::ops::Range<usize>,
    ) -> PyResult<Vec<usize>> {
        let s = self.sel()?;
        let mut out = Vec::new();
        for i in range.start..range.end.min(s.len) {
            if self.element(py, s, i)?.bind(py).eq(value)? {
                out.push(i);
                if first {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[pymethods]
impl ListView {
    fn __len__(&self) -> PyResult<usize> {
        Ok(self.sel()?.len)
    }

    fn __getitem__(&self, py: Python<'_>, index: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let s = self.sel()?;
        if let Ok(i) = index.extract::<isize>() {
            let n = s.len as isize;
            let i = if i < 0 { i + n } else { i };
            if i < 0 || i >= n {
                return Err(PyIndexError::new_err("ListView index out of range"));
            }
            return self.element(py, s, i as usize);
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
        Ok(!self
            .positions_of(py, value, true, 0..usize::MAX)?
            .is_empty())
    }

    /// Position of the first element equal to `value` at or after `start` and before `stop`
    /// (negative ones count from the end, as for `list.index`); `ValueError` if none.
    #[pyo3(signature = (value, start = 0, stop = None))]
    fn index(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        start: isize,
        stop: Option<isize>,
    ) -> PyResult<usize> {
        let n = self.sel()?.len as isize;
        let clamp = |i: isize| (if i < 0 { i + n } else { i }).clamp(0, n) as usize;
        let range = clamp(start)..clamp(stop.unwrap_or(n));
        self.positions_of(py, value, true, range)?
            .first()
            .copied()
            .ok_or_else(|| PyValueError::new_err("value is not in the ListView"))
    }

    /// Number of elements equal to `value`.
    fn count(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(self.positions_of(py, value, false, 0..usize::MAX)?.len())
    }

    /// Whether the stored value was a tuple (`to_python` gives a tuple then, else a list).
    #[getter]
    fn is_tuple(&self) -> PyResult<bool> {
        Ok(self.items()?.1)
    }

    /// A full copy as a plain `list` (or `tuple` for a stored tuple).
    fn to_python(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (items, is_tuple) = self.items()?;
        let s = self.sel_of(items.len());
        let mut out = Vec::with_capacity(s.len);
        let mut path = self.path.clone();
        for i in 0..s.len {
            let j = self.position(s, i, items.len())?;
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

    /// A stored tuple hashes as the tuple it holds (so it can be a dict key or a set member, and
    /// `hash(view) == hash(view.to_python())`); a stored list is unhashable, like a `list`.
    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        if !self.items()?.1 {
            return Err(PyTypeError::new_err(
                "unhashable type: 'ListView' (it holds a list; views of stored tuples are \
                 hashable, or use tuple(view))",
            ));
        }
        self.to_python(py)?.bind(py).hash()
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
        let h = pickle::handle(self.root.arena(), &self.root.entry, &self.path, self.slice);
        pickle::reduce(py, &h)
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
