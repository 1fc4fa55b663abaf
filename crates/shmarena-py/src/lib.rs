//! Python bindings for shmarena, built with maturin as `shmarena._native` and wrapped by the
//! pure-Python package in `python/shmarena`. See docs/PYTHON.md.
//!
//! One job per file; each imports only files listed above it, so there is no import circle:
//!
//! - `errors.rs`: the Python exception types (the service's too) and the mapping from
//!   `shmarena::Error`.
//! - `value.rs`: the archived value type (`Value`) that `Builder.put` stores.
//! - `dtype.rs`: numpy dtype strings of the library's POD primitives, both ways.
//! - `registry.rs`: per-process state of each arena (`ArenaState`): the mapping, the entry
//!   roots read so far, the arrays' dtype and shape.
//! - `handle.rs`: the pickled form (`Handle`, with the trust token a pickle carries) and the
//!   per-process attach cache of `ArenaState`s; the program's opt-ins to rows from another
//!   process (`shmarena.trust_pickled_rows()`, `connect(..., trusted=True)`) and their two
//!   `unsafe` calls (`Arena::accept_trust_token`, `ConnectOptions::trust_publisher_rows`).
//! - `package.rs`: the pure-Python package's helpers the native code calls.
//! - `pickle.rs`: the handle naming an arena or view, and `__reduce__`'s tuple.
//! - `publisher.rs`: the `Publisher` type and publishing an arena by name (`Arena.publish`).
//! - `buffer.rs`: the read-only buffer-protocol object numpy arrays read from, with the
//!   buffer-protocol FFI's `unsafe`.
//! - `view.rs`: the `MapView` and `ListView` types (an entry root plus a path).
//! - `to_py.rs`: archived values to Python objects (views, numpy arrays, or full copies).
//! - `map.rs`, `list.rs`: the methods of `MapView` and `ListView`, and their iterators.
//! - `from_py.rs`: Python objects to `Value`, with errors naming the path.
//! - `arena.rs`: `Arena`, `shmarena.open`, and a handle back to what it names; its two `unsafe`
//!   calls are the in-place opens behind `open(..., no_concurrent_writers=True)`.
//! - `lifecycle.rs`: what `build` checks before creating a segment (with hints in its errors),
//!   `shmarena.remove` for named arenas, and the builder's thread check.
//! - `builder.rs`: `Builder` and `shmarena.build`.
//! - `service.rs`: the `Publisher`'s methods, `Subscription`, `shmarena.connect`/`subscribe`/
//!   `load`, and the registration of the service's types.
//! - `inspect.rs`: `inspect_main`, the arena-inspect commands run by arena-inspect's library
//!   (`python -m shmarena`); it uses nothing else of this crate.
//! - `lib.rs`: the module (one interpreter per process) and its cache functions.

mod arena;
mod buffer;
mod builder;
mod dtype;
mod errors;
mod from_py;
mod handle;
mod inspect;
mod lifecycle;
mod list;
mod map;
mod package;
mod pickle;
mod publisher;
mod registry;
mod service;
mod to_py;
mod value;
mod view;

use std::sync::atomic::{AtomicI64, Ordering};

use pyo3::exceptions::PyImportError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::arena::PyArena;
use crate::errors::{
    BadHandleError, CorruptedError, FormatError, IncompatibleError, NotAnArenaError, ShmarenaError,
    StaleHandleError, StillBuildingError, TruncatedError, WrongProcessError, WrongThreadError,
};
use crate::view::{ListView, MapView};

/// Rebuilds a pickled arena or view (what `__reduce__` names).
#[pyfunction]
fn _restore(py: Python<'_>, handle: &Bound<'_, PyBytes>) -> PyResult<Py<PyAny>> {
    let h = handle::parse(handle.as_bytes())?;
    let state = handle::attach(&h)?;
    arena::resolve(&state, py, &h)
}

/// Number of live arenas in this process's attach cache.
#[pyfunction]
fn _attached_count() -> usize {
    handle::cached().len()
}

/// Ids (hex) of the arenas in this process's attach cache.
#[pyfunction]
fn _attached_ids() -> Vec<String> {
    let mut ids: Vec<String> = handle::cached()
        .iter()
        .map(|s| s.arena.id().to_string())
        .collect();
    ids.sort();
    ids
}

/// Unlinks the names of named arenas this process built (registered with `atexit`).
#[pyfunction]
fn _close_owned() -> PyResult<()> {
    for s in handle::cached() {
        if s.is_owner() {
            arena::close(&s)?;
        }
    }
    Ok(())
}

/// The interpreter that imported this module first (`i64::MIN`: none yet).
static FIRST_INTERPRETER: AtomicI64 = AtomicI64::new(i64::MIN);

/// Refuses a second interpreter of this process: the module's state (its types, exception
/// classes and the attach cache) is per process and holds objects of the interpreter that made
/// them. CPython refuses isolated subinterpreters itself (PEP 684: the module does not declare
/// per-interpreter support); this catches the legacy ones that share the main GIL (mod_wsgi,
/// `_interpreters.create("legacy")`), where the import would otherwise succeed.
fn check_interpreter(py: Python<'_>) -> PyResult<()> {
    // `_interpreters.get_current()` is `(id, whence)` on 3.13+; `_xxsubinterpreters`' (3.12 and
    // older) is an InterpreterID that `int()` converts. Without either there are no
    // subinterpreters to tell apart.
    let current = if let Ok(m) = py.import("_interpreters") {
        m.call_method0("get_current")?.get_item(0)?
    } else if let Ok(m) = py.import("_xxsubinterpreters") {
        m.call_method0("get_current")?
    } else {
        return Ok(());
    };
    let id: i64 = py
        .import("builtins")?
        .getattr("int")?
        .call1((current,))?
        .extract()?;
    match FIRST_INTERPRETER.compare_exchange(i64::MIN, id, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => Ok(()),
        Err(first) if first == id => Ok(()),
        Err(first) => Err(PyImportError::new_err(format!(
            "shmarena cannot be imported in interpreter {id}: it was imported in interpreter \
             {first} of this process, and it supports one interpreter per process \
             (subinterpreters are not supported)"
        ))),
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    check_interpreter(py)?;
    m.add_class::<builder::PyBuilder>()?;
    m.add_class::<PyArena>()?;
    m.add_class::<MapView>()?;
    m.add_class::<ListView>()?;
    m.add_class::<map::MapIter>()?;
    m.add_class::<list::ListIter>()?;
    m.add_class::<buffer::ArenaBuffer>()?;
    m.add_function(wrap_pyfunction!(builder::build, m)?)?;
    m.add_function(wrap_pyfunction!(arena::open, m)?)?;
    m.add_function(wrap_pyfunction!(_restore, m)?)?;
    m.add_function(wrap_pyfunction!(handle::trust_pickled_rows, m)?)?;
    m.add_function(wrap_pyfunction!(handle::_pickled_rows_trusted, m)?)?;
    m.add_function(wrap_pyfunction!(_attached_count, m)?)?;
    m.add_function(wrap_pyfunction!(_close_owned, m)?)?;
    m.add_function(wrap_pyfunction!(_attached_ids, m)?)?;
    m.add_function(wrap_pyfunction!(lifecycle::remove, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::inspect_main, m)?)?;
    m.add("ShmarenaError", py.get_type::<ShmarenaError>())?;
    m.add("StaleHandleError", py.get_type::<StaleHandleError>())?;
    m.add("WrongProcessError", py.get_type::<WrongProcessError>())?;
    m.add("BadHandleError", py.get_type::<BadHandleError>())?;
    m.add("WrongThreadError", py.get_type::<WrongThreadError>())?;
    m.add("FormatError", py.get_type::<FormatError>())?;
    m.add("NotAnArenaError", py.get_type::<NotAnArenaError>())?;
    m.add("IncompatibleError", py.get_type::<IncompatibleError>())?;
    m.add("TruncatedError", py.get_type::<TruncatedError>())?;
    m.add("CorruptedError", py.get_type::<CorruptedError>())?;
    m.add("StillBuildingError", py.get_type::<StillBuildingError>())?;
    m.add("MAX_DEPTH", from_py::MAX_DEPTH)?;
    // The crate's version, which maturin also writes into the wheel's metadata.
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    service::register(m)?;
    Ok(())
}
