//! `Builder` (an arena being built, as Python sees it) and `shmarena.build`.

use std::path::PathBuf;

use indexmap::IndexMap;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use shmarena::bytemuck::{self, Pod};
use shmarena::format::Prim;

use crate::arena::PyArena;
use crate::dtype;
use crate::errors::{self, lib_err, ShmarenaError};
use crate::from_py::{prepare_array, Converter};
use crate::registry::META_ENTRY;
use crate::value::{Key, Value};

/// Why a builder whose block raised can do nothing more.
const DISCARDED: &str = "this builder was discarded (its block raised an error)";

/// An arena being built. Use it as a context manager: leaving the block without an error seals
/// it, and `.arena` is the sealed arena; an error discards everything.
#[pyclass(unsendable, module = "shmarena", name = "Builder")]
pub(crate) struct PyBuilder {
    inner: Option<shmarena::ArenaWriter>,
    /// (entry, dtype, shape) of arrays stored with `put_array`.
    arrays: Vec<(String, String, Vec<u64>)>,
    /// Whether the arrays' metadata entry is written (a failed seal hands the builder back).
    meta_written: bool,
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
) -> PyResult<()> {
    let count = buf.item_count() / size_of::<T>();
    let mut copied = Ok(());
    b.put_slice_with::<T>(name, count, |dst| {
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
        Self::check_name(name)?;
        let v = Converter::new(py)?.convert(value)?;
        let b = self.builder()?;
        // Archiving touches only Rust data: let other Python threads run meanwhile.
        py.detach(|| b.put(name, &v)).map_err(lib_err)
    }

    /// Stores a numpy array of any numeric dtype as entry `name`: its bytes in a 64-byte aligned
    /// POD entry (typed for Rust readers when the dtype is a Rust primitive), dtype and shape
    /// beside it.
    fn put_array(&mut self, py: Python<'_>, name: &str, array: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::check_name(name)?;
        let p = prepare_array(py, array)?;
        let buf = PyBuffer::<u8>::get(&p.bytes)?;
        let b = self.builder()?;
        match dtype::prim_of(&p.dtype) {
            Some(Prim::U8) => put_typed::<u8>(b, py, name, &buf),
            Some(Prim::I8) => put_typed::<i8>(b, py, name, &buf),
            Some(Prim::U16) => put_typed::<u16>(b, py, name, &buf),
            Some(Prim::I16) => put_typed::<i16>(b, py, name, &buf),
            Some(Prim::U32) => put_typed::<u32>(b, py, name, &buf),
            Some(Prim::I32) => put_typed::<i32>(b, py, name, &buf),
            Some(Prim::U64) => put_typed::<u64>(b, py, name, &buf),
            Some(Prim::I64) => put_typed::<i64>(b, py, name, &buf),
            Some(Prim::F32) => put_typed::<f32>(b, py, name, &buf),
            Some(Prim::F64) => put_typed::<f64>(b, py, name, &buf),
            _ => {
                let bytes = buf.to_vec(py)?;
                b.put_bytes(name, &bytes).map_err(lib_err)
            }
        }?;
        self.arrays.push((name.to_owned(), p.dtype, p.shape));
        Ok(())
    }

    /// Writes the table of contents and seals the arena; returns it (also as `.arena`).
    fn seal(&mut self, py: Python<'_>) -> PyResult<Py<PyArena>> {
        if let Some(a) = &self.arena {
            return Ok(a.clone_ref(py));
        }
        let mut b = self
            .inner
            .take()
            .ok_or_else(|| PyRuntimeError::new_err(DISCARDED))?;
        if !self.arrays.is_empty() && !self.meta_written {
            let mut meta = IndexMap::new();
            for (name, dtype, shape) in &self.arrays {
                let shape = shape.iter().map(|&d| Value::Int(d as i64)).collect();
                meta.insert(
                    Key::Str(name.clone()),
                    Value::Tuple(vec![Value::Str(dtype.clone()), Value::List(shape)]),
                );
            }
            if let Err(e) = b.put(META_ENTRY, &Value::Map(meta)) {
                self.inner = Some(b);
                return Err(lib_err(e));
            }
            self.meta_written = true;
        }
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
                self.inner = e.into_builder();
                return Err(err);
            }
        };
        let a = Py::new(py, PyArena::local(arena, true))?;
        self.arena = Some(a.clone_ref(py));
        Ok(a)
    }

    /// Drops everything built so far (a named segment or temporary file is removed).
    fn discard(&mut self) {
        self.inner = None;
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

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
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
            self.discard();
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
/// (`path=`).
#[pyfunction]
#[pyo3(signature = (*, name = None, path = None, capacity = None, overwrite = false))]
pub(crate) fn build(
    py: Python<'_>,
    name: Option<String>,
    path: Option<PathBuf>,
    capacity: Option<u64>,
    overwrite: bool,
) -> PyResult<PyBuilder> {
    let mut opts = shmarena::ArenaOptions::new();
    match (name, path) {
        (Some(_), Some(_)) => {
            return Err(PyValueError::new_err("give name= or path=, not both"));
        }
        (Some(n), None) => opts = opts.named(n),
        (None, Some(p)) => opts = opts.file(p).overwrite(overwrite),
        (None, None) => {}
    }
    if let Some(c) = capacity {
        opts = opts.capacity(c);
    }
    let b = py.detach(move || opts.create()).map_err(lib_err)?;
    Ok(PyBuilder {
        inner: Some(b),
        arrays: Vec::new(),
        meta_written: false,
        arena: None,
    })
}
