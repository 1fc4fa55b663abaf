//! `Builder` (an arena being built, as Python sees it) and `shmarena.build`.

use std::path::PathBuf;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use shmarena::bytemuck::{self, Pod};
use shmarena::format::Prim;

use crate::arena::PyArena;
use crate::dtype;
use crate::errors::{self, lib_err, ShmarenaError};
use crate::from_py::{prepare_array, Converter};
use crate::lifecycle::{self, check_thread};
use crate::registry::META_ENTRY;

/// Why a builder whose block raised can do nothing more.
const DISCARDED: &str = "this builder was discarded (its block raised an error)";

/// An arena being built. Use it as a context manager: leaving the block without an error seals
/// it, and `.arena` is the sealed arena; an error discards everything. It belongs to the thread
/// that made it: another thread gets `WrongThreadError`.
#[pyclass(module = "shmarena", name = "Builder")]
pub(crate) struct PyBuilder {
    /// The thread that made it.
    thread: std::thread::ThreadId,
    /// Keep a named segment after this process exits (`build(persist=True)`).
    persist: bool,
    inner: Option<shmarena::ArenaWriter>,
    arena: Option<Py<PyArena>>,
}

impl PyBuilder {
    fn builder(&mut self) -> PyResult<&mut shmarena::ArenaWriter> {
        match (&mut self.inner, &self.arena) {
            (Some(b), _) => Ok(b),
            (None, Some(_)) => Err(PyRuntimeError::new_err(
                "this builder is sealed: read through .arena",
            )),
            (None, None) => Err(PyRuntimeError::new_err(DISCARDED)),
        }
    }

    fn check_name(name: &str) -> PyResult<()> {
        if name == META_ENTRY {
            return Err(PyValueError::new_err(format!(
                "entry name {META_ENTRY:?} is reserved by shmarena"
            )));
        }
        Ok(())
    }
}

/// Copies a byte buffer of `T`s into a new POD entry.
fn put_typed<T: Pod>(
    b: &mut shmarena::ArenaWriter,
    py: Python<'_>,
    name: &str,
    buf: &PyBuffer<u8>,
    shape: &[u64],
) -> PyResult<()> {
    let mut copied = Ok(());
    b.put_array_with::<T>(name, shape, |dst| {
        copied = buf.copy_to_slice(py, bytemuck::cast_slice_mut(dst));
    })
    .map_err(lib_err)?;
    copied
}

#[pymethods]
impl PyBuilder {
    /// Archives a JSON-like value (dict with str/int/bytes keys, list, tuple, str, bytes, int,
    /// float, bool, None, numpy arrays) as entry `name`.
    fn put(&mut self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        check_thread(self.thread)?;
        Self::check_name(name)?;
        let v = Converter::new(py)?.convert(value)?;
        let b = self.builder()?;
        // Archiving touches only Rust data: let other Python threads run meanwhile.
        py.detach(|| b.put(name, &v)).map_err(lib_err)
    }

    /// Stores a numpy array as entry `name`: its bytes in a 64-byte aligned POD entry whose
    /// element type and shape the format records (docs/FORMAT.md, format version 2). Dtypes
    /// that are Rust primitives are typed for Rust readers (`Arena::slice::<f32>`); dtypes with
    /// no primitive of the format are stored opaque with the type name `numpy:<dtype.str>`.
    fn put_array(&mut self, py: Python<'_>, name: &str, array: &Bound<'_, PyAny>) -> PyResult<()> {
        check_thread(self.thread)?;
        Self::check_name(name)?;
        let p = prepare_array(py, array)?;
        let buf = PyBuffer::<u8>::get(&p.bytes)?;
        let shape = p.shape.as_slice();
        let b = self.builder()?;
        let raw = |b: &mut shmarena::ArenaWriter, prim, arg, size, type_name: Option<&str>| {
            let bytes = buf.to_vec(py)?;
            b.put_raw_array(name, prim, arg, size, &bytes, shape, type_name)
                .map_err(lib_err)
        };
        match dtype::prim_of(&p.dtype) {
            Some((Prim::U8, ..)) => put_typed::<u8>(b, py, name, &buf, shape),
            Some((Prim::I8, ..)) => put_typed::<i8>(b, py, name, &buf, shape),
            Some((Prim::U16, ..)) => put_typed::<u16>(b, py, name, &buf, shape),
            Some((Prim::I16, ..)) => put_typed::<i16>(b, py, name, &buf, shape),
            Some((Prim::U32, ..)) => put_typed::<u32>(b, py, name, &buf, shape),
            Some((Prim::I32, ..)) => put_typed::<i32>(b, py, name, &buf, shape),
            Some((Prim::U64, ..)) => put_typed::<u64>(b, py, name, &buf, shape),
            Some((Prim::I64, ..)) => put_typed::<i64>(b, py, name, &buf, shape),
            Some((Prim::F32, ..)) => put_typed::<f32>(b, py, name, &buf, shape),
            Some((Prim::F64, ..)) => put_typed::<f64>(b, py, name, &buf, shape),
            Some((prim, arg, size)) => raw(b, prim, arg, size, None),
            None => {
                let size = dtype::itemsize(&p.dtype).ok_or_else(|| {
                    PyValueError::new_err(format!("cannot tell the item size of dtype {}", p.dtype))
                })?;
                let type_name = format!("{}{}", dtype::NUMPY_PREFIX, p.dtype);
                raw(b, Prim::Opaque, 0, size, Some(&type_name))
            }
        }
    }

    /// Writes the table of contents and seals the arena; returns it (also as `.arena`).
    fn seal(&mut self, py: Python<'_>) -> PyResult<Py<PyArena>> {
        check_thread(self.thread)?;
        if let Some(a) = &self.arena {
            return Ok(a.clone_ref(py));
        }
        let b = self
            .inner
            .take()
            .ok_or_else(|| PyRuntimeError::new_err(DISCARDED))?;
        let arena = match py.detach(move || b.seal()) {
            Ok(a) => a,
            Err(e) => {
                let err = match e.error() {
                    shmarena::Error::WrongProcess { .. } => {
                        errors::WrongProcessError::new_err(errors::chain(e.error()))
                    }
                    other => ShmarenaError::new_err(errors::chain(other)),
                };
                // When sealing failed for lack of room, the builder comes back unchanged.
                self.inner = e.into_writer();
                return Err(err);
            }
        };
        if self.persist {
            arena.persist();
        }
        // The value trees are freed: give their pages back rather than leave them to fork
        // children.
        py.detach(shmarena::release_free_memory);
        let a = Py::new(py, PyArena::local(arena, true))?;
        self.arena = Some(a.clone_ref(py));
        Ok(a)
    }

    /// Drops everything built so far (a named segment or temporary file is removed).
    fn discard(&mut self) -> PyResult<()> {
        check_thread(self.thread)?;
        self.inner = None;
        Ok(())
    }

    /// The sealed arena.
    #[getter]
    fn arena(&self, py: Python<'_>) -> PyResult<Py<PyArena>> {
        match (&self.arena, &self.inner) {
            (Some(a), _) => Ok(a.clone_ref(py)),
            (None, Some(_)) => Err(PyRuntimeError::new_err(
                "the arena is not sealed yet: leave the `with` block or call seal()",
            )),
            (None, None) => Err(PyRuntimeError::new_err(DISCARDED)),
        }
    }

    /// Entries added so far.
    fn __len__(&self) -> usize {
        self.inner.as_ref().map_or(0, |b| b.entry_count())
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyResult<PyRef<'_, Self>> {
        check_thread(slf.thread)?;
        Ok(slf)
    }

    fn __exit__(
        &mut self,
        py: Python<'_>,
        ty: &Bound<'_, PyAny>,
        _value: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        if ty.is_none() {
            self.seal(py)?;
        } else {
            self.discard()?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match &self.inner {
            Some(b) => format!("<shmarena.Builder {b:?}>"),
            None if self.arena.is_some() => "<shmarena.Builder (sealed)>".into(),
            None => "<shmarena.Builder (discarded)>".into(),
        }
    }
}

/// Starts building an arena: a sealed memfd by default, or a named segment (`name=`) or a file
/// (`path=`). `overwrite=True` replaces an existing file, or a named segment left behind by a
/// builder that exited; `persist=True` keeps a named segment after this process exits.
#[pyfunction]
#[pyo3(signature = (*, name = None, path = None, capacity = None, overwrite = false, persist = false))]
pub(crate) fn build(
    py: Python<'_>,
    name: Option<String>,
    path: Option<PathBuf>,
    capacity: Option<u64>,
    overwrite: bool,
    persist: bool,
) -> PyResult<PyBuilder> {
    let mut opts = shmarena::ArenaOptions::new();
    if persist && name.is_none() {
        return Err(PyValueError::new_err(
            "persist=True is for named arenas (name=...): a memfd arena lives as long as a \
             process uses it, and a file arena stays on disk anyway",
        ));
    }
    match (&name, path) {
        (Some(_), Some(_)) => {
            return Err(PyValueError::new_err("give name= or path=, not both"));
        }
        (Some(n), None) => {
            if overwrite {
                lifecycle::clear_for_overwrite(n)?;
            }
            opts = opts.named(n.clone());
        }
        (None, Some(p)) => {
            lifecycle::check_file_target(&p)?;
            opts = opts.file(p).overwrite(overwrite);
        }
        (None, None) => {}
    }
    if let Some(c) = capacity {
        opts = opts.capacity(c);
    }
    let b = py
        .detach(move || opts.create())
        .map_err(|e| lifecycle::create_error(e, name.as_deref()))?;
    Ok(PyBuilder {
        thread: std::thread::current().id(),
        persist,
        inner: Some(b),
        arena: None,
    })
}
