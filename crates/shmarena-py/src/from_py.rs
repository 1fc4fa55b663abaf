//! Python objects to [`Value`] trees, with errors that name the path (`value["a"][3]`).

use indexmap::IndexMap;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType,
};

use crate::value::{Array, ArrayData, Key, Value};
use crate::view::{ListView, MapView};

pub(crate) use crate::value::MAX_DEPTH;

/// One step of the path to the value being converted.
enum Seg<'py> {
    Index(usize),
    Key(Bound<'py, PyAny>),
}

/// A numpy array made ready to store: native byte order, C order, as bytes.
pub(crate) struct Prepared<'py> {
    pub(crate) dtype: String,
    pub(crate) shape: Vec<u64>,
    pub(crate) bytes: Bound<'py, PyAny>,
}

/// Calls `shmarena._prepare_array`, which checks the dtype and returns `(dtype.str, shape,
/// memoryview of the bytes)`.
pub(crate) fn prepare_array<'py>(
    py: Python<'py>,
    array: &Bound<'py, PyAny>,
) -> PyResult<Prepared<'py>> {
    let np = py.import("numpy")?;
    if !array.is_instance(&np.getattr("ndarray")?)? {
        return Err(PyTypeError::new_err(format!(
            "put_array takes a numpy array, not {}: pass numpy.asarray(value) (with the dtype \
             you want), or store it with put() as a list",
            Converter::type_name(array)
        )));
    }
    let prep = py.import("shmarena")?.getattr("_prepare_array")?;
    let (dtype, shape, bytes): (String, Vec<u64>, Bound<'py, PyAny>) =
        prep.call1((array,))?.extract()?;
    Ok(Prepared {
        dtype,
        shape,
        bytes,
    })
}

/// Converts Python values, remembering where it is for error messages.
pub(crate) struct Converter<'py> {
    py: Python<'py>,
    path: Vec<Seg<'py>>,
    /// The containers (lists, tuples, dicts) on the current path, by address: one met again
    /// contains itself.
    open: Vec<usize>,
    /// `numpy.ndarray` and `numpy.generic`, or `None` when numpy is not loaded (then no value
    /// can be a numpy object, and storing plain values does not import it).
    numpy: Option<(Bound<'py, PyType>, Bound<'py, PyType>)>,
}

impl<'py> Converter<'py> {
    pub(crate) fn new(py: Python<'py>) -> PyResult<Converter<'py>> {
        let numpy = match py.import("sys")?.getattr("modules")?.get_item("numpy") {
            Ok(np) if !np.is_none() => Some((
                np.getattr("ndarray")?.cast_into::<PyType>()?,
                np.getattr("generic")?.cast_into::<PyType>()?,
            )),
            _ => None,
        };
        Ok(Converter {
            py,
            path: Vec::new(),
            open: Vec::new(),
            numpy,
        })
    }

    fn where_(&self) -> String {
        let mut s = String::from("value");
        for seg in &self.path {
            match seg {
                Seg::Index(i) => s.push_str(&format!("[{i}]")),
                Seg::Key(k) => {
                    if let Ok(k) = k.cast::<PyString>() {
                        s.push_str(&format!("[{:?}]", k.to_string_lossy()));
                    } else {
                        let r = k.repr().map(|r| r.to_string()).unwrap_or_default();
                        s.push_str(&format!("[{r}]"));
                    }
                }
            }
        }
        s
    }

    /// [`where_`](Self::where_), cut to its first 100 bytes when longer than 120.
    fn where_short(&self) -> String {
        let at = self.where_();
        if at.len() <= 120 {
            return at;
        }
        let mut cut = 100;
        while !at.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}... ({} levels)", &at[..cut], self.path.len())
    }

    pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
        obj.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into())
    }

    /// Converts `obj` (the whole value, or the item at the current path).
    pub(crate) fn convert(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<Value> {
        if self.path.len() > MAX_DEPTH {
            return Err(PyValueError::new_err(format!(
                "{}: nested deeper than {MAX_DEPTH} levels",
                self.where_short()
            )));
        }
        if obj.is_none() {
            return Ok(Value::None);
        }
        if let Ok(b) = obj.cast::<PyBool>() {
            return Ok(Value::Bool(b.is_true()));
        }
        if let Ok(i) = obj.cast::<PyInt>() {
            return i.extract::<i64>().map(Value::Int).map_err(|_| {
                PyValueError::new_err(format!(
                    "{}: int {} is outside the signed 64-bit range shmarena stores",
                    self.where_(),
                    obj.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            });
        }
        if let Ok(f) = obj.cast::<PyFloat>() {
            return Ok(Value::Float(f.value()));
        }
        if let Ok(s) = obj.cast::<PyString>() {
            return s.to_str().map(|s| Value::Str(s.to_owned())).map_err(|e| {
                PyValueError::new_err(format!(
                    "{}: the string is not valid UTF-8 ({e})",
                    self.where_()
                ))
            });
        }
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Value::Bytes(b.as_bytes().to_vec()));
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            return Ok(Value::Bytes(b.to_vec()));
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            self.enter(obj)?;
            let mut map = IndexMap::with_capacity(d.len());
            for (k, v) in d.iter() {
                let key = self.key(&k)?;
                self.path.push(Seg::Key(k));
                let v = self.convert(&v)?;
                self.path.pop();
                map.insert(key, v);
            }
            self.open.pop();
            return Ok(Value::Map(map));
        }
        if let Ok(l) = obj.cast::<PyList>() {
            self.enter(obj)?;
            let items = self.items(l.iter()).map(Value::List);
            self.open.pop();
            return items;
        }
        if let Ok(t) = obj.cast::<PyTuple>() {
            self.enter(obj)?;
            let items = self.items(t.iter()).map(Value::Tuple);
            self.open.pop();
            return items;
        }
        let Some((ndarray, generic)) = &self.numpy else {
            return self.other(obj);
        };
        if obj.is_instance(ndarray)? {
            let p = prepare_array(self.py, obj).map_err(|e| {
                PyTypeError::new_err(format!("{}: {}", self.where_(), e.value(self.py)))
            })?;
            let buf = PyBuffer::<u8>::get(&p.bytes)?;
            return Ok(Value::Array(Array {
                dtype: p.dtype,
                shape: p.shape,
                data: ArrayData(buf.to_vec(self.py)?),
            }));
        }
        if obj.is_instance(generic)? {
            // A numpy scalar (np.int64(3), np.float32(0.5)): store its Python value.
            return self.convert(&obj.call_method0("item")?);
        }
        self.other(obj)
    }

    /// Views (stored as full copies) and the error for anything else.
    fn other(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<Value> {
        if obj.cast::<MapView>().is_ok() || obj.cast::<ListView>().is_ok() {
            return self.convert(&obj.call_method0("to_python")?);
        }
        Err(PyTypeError::new_err(format!(
            "{}: cannot store an object of type {} (shmarena stores dict, list, tuple, str, bytes, \
             int, float, bool, None and numpy arrays)",
            self.where_(),
            Self::type_name(obj)
        )))
    }

    /// Notes that the container `obj` is being converted; a container that is already (it
    /// contains itself) is an error naming where it recurs, not a depth overflow.
    fn enter(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let addr = obj.as_ptr() as usize;
        if let Some(depth) = self.open.iter().position(|&a| a == addr) {
            let outer = if depth == 0 {
                "the value".to_owned()
            } else {
                format!("the {} at depth {depth}", Self::type_name(obj))
            };
            let at = self.where_short();
            return Err(PyValueError::new_err(format!(
                "{at}: cycle: {outer} contains itself (shmarena stores trees; copy the repeated \
                 part or break the cycle)"
            )));
        }
        self.open.push(addr);
        Ok(())
    }

    fn items(
        &mut self,
        iter: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Value>> {
        let mut out = Vec::with_capacity(iter.len());
        for (i, item) in iter.enumerate() {
            self.path.push(Seg::Index(i));
            out.push(self.convert(&item)?);
            self.path.pop();
        }
        Ok(out)
    }

    fn key(&mut self, k: &Bound<'py, PyAny>) -> PyResult<Key> {
        let bad = |this: &Self, why: String| {
            let mut p = this.where_();
            p.push_str(&format!(
                "[{}]",
                k.repr().map(|r| r.to_string()).unwrap_or_default()
            ));
            (p, why)
        };
        if let Ok(s) = k.cast::<PyString>() {
            return s.to_str().map(|s| Key::Str(s.to_owned())).map_err(|e| {
                let (p, _) = bad(self, String::new());
                PyValueError::new_err(format!("{p}: the key is not valid UTF-8 ({e})"))
            });
        }
        if k.cast::<PyBool>().is_err() {
            if let Ok(i) = k.cast::<PyInt>() {
                return i.extract::<i64>().map(Key::Int).map_err(|_| {
                    let (p, _) = bad(self, String::new());
                    PyValueError::new_err(format!(
                        "{p}: int key is outside the signed 64-bit range shmarena stores"
                    ))
                });
            }
        }
        if let Ok(b) = k.cast::<PyBytes>() {
            return Ok(Key::Bytes(b.as_bytes().to_vec()));
        }
        let (p, _) = bad(self, String::new());
        Err(PyTypeError::new_err(format!(
            "{p}: dict keys may be str, int or bytes, not {}",
            Self::type_name(k)
        )))
    }
}
