//! The arena service from Python: the `Publisher`'s methods (the type and `Arena.publish` are
//! in `publisher.rs`), `shmarena.connect` an `Arena`,
//! `shmarena.subscribe` a `Subscription`; and `shmarena.load` for arena image files (`Arena.save`
//! is in `arena.rs`). A thin layer over `shmarena::service` and `shmarena::Arena::load_file`.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;

use crate::arena::PyArena;
use crate::errors::{
    lib_err, service_err, AlreadyPublishedError, NotPublishedError, RefusedError, ServiceError,
};
use crate::publisher::{timeout_of, PyPublisher};

fn connect_options(
    timeout: Option<f64>,
    server_uid: Option<u32>,
    trusted: bool,
) -> PyResult<shmarena::ConnectOptions> {
    let mut opts = shmarena::ConnectOptions::new();
    if trusted {
        opts = crate::handle::trusting(opts);
    }
    if let Some(t) = timeout_of(timeout)? {
        opts = opts.timeout(t);
    }
    if let Some(uid) = server_uid {
        opts = opts.server_uid(uid);
    }
    Ok(opts)
}

#[pymethods]
impl PyPublisher {
    /// Serves `arena` (a sealed memfd arena) from now on; returns the new generation. Clients
    /// that connect from now on get it; subscriptions see it on their next `current()`.
    fn publish(&self, py: Python<'_>, arena: &Bound<'_, PyArena>) -> PyResult<u64> {
        let a = arena.get().state.arena.clone();
        self.with(|p| py.detach(|| p.publish(a)).map_err(service_err))
    }

    /// The generation being served (1 for the first arena).
    #[getter]
    fn generation(&self) -> PyResult<u64> {
        self.with(|p| Ok(p.generation()))
    }

    /// The arena being served.
    #[getter]
    fn arena(&self) -> PyResult<PyArena> {
        self.with(|p| Ok(PyArena::local(p.arena(), false)))
    }

    /// The published name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Whether the name is still served by this object.
    #[getter]
    fn closed(&self) -> bool {
        std::process::id() != self.pid
            || self
                .inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
    }

    /// Stops serving: the name disappears; readers keep what they connected to. Closing twice
    /// does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if std::process::id() != self.pid {
            return Ok(());
        }
        let p = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        py.detach(move || drop(p));
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _ty: &Bound<'_, PyAny>,
        _value: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(p) if std::process::id() == self.pid => format!(
                "<shmarena.Publisher {:?}, generation {}, arena {}>",
                self.name,
                p.generation(),
                p.arena().id()
            ),
            _ => format!("<shmarena.Publisher {:?}, closed>", self.name),
        }
    }
}

/// Connects to the arena published as `name` by a process of this user.
#[pyfunction]
#[pyo3(signature = (name, *, timeout = None, server_uid = None, trusted = false))]
pub(crate) fn connect(
    py: Python<'_>,
    name: &str,
    timeout: Option<f64>,
    server_uid: Option<u32>,
    trusted: bool,
) -> PyResult<PyArena> {
    let opts = connect_options(timeout, server_uid, trusted)?;
    let arena = py.detach(|| opts.connect(name)).map_err(service_err)?;
    Ok(PyArena::local(arena, false))
}

struct SubState {
    sub: shmarena::Subscription,
    /// The Python object for the arena `sub` last fetched.
    arena: Py<PyArena>,
}

/// Follows the generations of a published name: `current()` is the latest arena.
#[pyclass(frozen, module = "shmarena", name = "Subscription")]
pub(crate) struct PySubscription {
    state: Mutex<SubState>,
    name: String,
}

/// Subscribes to the generations of `name`.
#[pyfunction]
#[pyo3(signature = (name, *, timeout = None, server_uid = None, trusted = false))]
pub(crate) fn subscribe(
    py: Python<'_>,
    name: &str,
    timeout: Option<f64>,
    server_uid: Option<u32>,
    trusted: bool,
) -> PyResult<PySubscription> {
    let opts = connect_options(timeout, server_uid, trusted)?;
    let sub = py.detach(|| opts.subscribe(name)).map_err(service_err)?;
    let arena = Py::new(py, PyArena::local(sub.last().clone(), false))?;
    Ok(PySubscription {
        name: sub.name().to_owned(),
        state: Mutex::new(SubState { sub, arena }),
    })
}

impl PySubscription {
    fn lock(&self) -> std::sync::MutexGuard<'_, SubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the Python arena object if `sub` now holds another arena.
    fn sync(py: Python<'_>, st: &mut SubState) -> PyResult<()> {
        let id = st.sub.last().id();
        if st.arena.get().state.arena.id() != id {
            st.arena = Py::new(py, PyArena::local(st.sub.last().clone(), false))?;
        }
        Ok(())
    }
}

#[pymethods]
impl PySubscription {
    /// The arena of the latest generation: the one held if the publisher's counter and
    /// liveness word have not moved (two atomic loads), a freshly fetched one otherwise. Views
    /// and arrays taken from an earlier generation keep working and keep their values until
    /// dropped. A publisher that closed or died is noticed: the next call connects again and
    /// follows a new publisher of the name, or raises `ServiceError` ("the publisher of ...
    /// closed/died") while nobody serves it; the subscription keeps what it had (`last()`).
    fn current(&self, py: Python<'_>) -> PyResult<Py<PyArena>> {
        let mut st = self.lock();
        // A new publisher counts its generations from 1 again: its identity tells.
        let before = (st.sub.generation(), st.sub.publisher());
        st.sub.current().map_err(service_err)?;
        if (st.sub.generation(), st.sub.publisher()) != before {
            Self::sync(py, &mut st)?;
        }
        Ok(st.arena.clone_ref(py))
    }

    /// Fetches what is served now even if the counter did not move (a publisher restarted
    /// under the same name); returns whether the generation or arena changed.
    fn refresh(&self, py: Python<'_>) -> PyResult<bool> {
        let mut st = self.lock();
        let changed = st.sub.refresh().map_err(service_err)?;
        Self::sync(py, &mut st)?;
        Ok(changed)
    }

    /// The arena last fetched, without checking for a newer one.
    fn last(&self, py: Python<'_>) -> Py<PyArena> {
        self.lock().arena.clone_ref(py)
    }

    /// The generation of `last()`.
    #[getter]
    fn generation(&self) -> u64 {
        self.lock().sub.generation()
    }

    /// The published name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    fn __repr__(&self) -> String {
        let st = self.lock();
        format!(
            "<shmarena.Subscription {:?}, generation {}, arena {}>",
            self.name,
            st.sub.generation(),
            st.sub.last().id()
        )
    }
}

/// Loads the arena image file at `path` into a fresh sealed memfd, checked once (header,
/// table of contents, every checksum); the result can be published or shared like a built one.
#[pyfunction]
pub(crate) fn load(py: Python<'_>, path: PathBuf) -> PyResult<PyArena> {
    let arena = py
        .detach(move || shmarena::Arena::load_file(path))
        .map_err(lib_err)?;
    Ok(PyArena::local(arena, false))
}

/// Registers this file's classes, functions and exceptions in the native module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyPublisher>()?;
    m.add_class::<PySubscription>()?;
    m.add_function(wrap_pyfunction!(connect, m)?)?;
    m.add_function(wrap_pyfunction!(subscribe, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add("ServiceError", py.get_type::<ServiceError>())?;
    m.add("NotPublishedError", py.get_type::<NotPublishedError>())?;
    m.add(
        "AlreadyPublishedError",
        py.get_type::<AlreadyPublishedError>(),
    )?;
    m.add("RefusedError", py.get_type::<RefusedError>())?;
    Ok(())
}
