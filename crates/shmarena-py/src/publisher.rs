//! `Arena.publish` and the `Publisher` it returns: publishing an arena by name through
//! `shmarena::PublishOptions`. The `Publisher`'s Python methods, which take and give `Arena`s,
//! are in `service.rs`, so this file imports nothing of the crate but `errors`, and `arena.rs`
//! calls it directly.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::{service_err, ServiceError};

/// `seconds` as a `Duration`, or a `ValueError` that names it.
pub(crate) fn timeout_of(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    seconds
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                PyValueError::new_err(format!(
                    "timeout must be a non-negative number of seconds, not {s}"
                ))
            })
        })
        .transpose()
}

/// Serves an arena under a name until closed; `publish(arena)` serves a new generation.
///
/// Only the process that created it serves: a fork child that inherits the object cannot
/// publish or close it (the serving thread is not in the child), and dropping it there does
/// nothing.
#[pyclass(frozen, module = "shmarena", name = "Publisher")]
pub(crate) struct PyPublisher {
    /// The serving publisher; `None` once closed.
    pub(crate) inner: Mutex<Option<shmarena::Publisher>>,
    /// The published name.
    pub(crate) name: String,
    /// The process that serves it.
    pub(crate) pid: u32,
}

impl PyPublisher {
    /// Runs `f` on the publisher if this process serves it and it is not closed.
    pub(crate) fn with<R>(
        &self,
        f: impl FnOnce(&shmarena::Publisher) -> PyResult<R>,
    ) -> PyResult<R> {
        if std::process::id() != self.pid {
            return Err(ServiceError::new_err(format!(
                "the publisher of {:?} belongs to process {}, not this one (a fork child \
                 inherits the object but not the thread that serves the name)",
                self.name, self.pid
            )));
        }
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(p) => f(p),
            None => Err(ServiceError::new_err(format!(
                "the publisher of {:?} is closed",
                self.name
            ))),
        }
    }
}

impl Drop for PyPublisher {
    fn drop(&mut self) {
        let p = self
            .inner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if std::process::id() != self.pid {
            // Dropping it here would stop the parent's serving thread (the stop pipe is shared)
            // and join a thread this process does not have.
            std::mem::forget(p);
        }
    }
}

/// Publishes `arena` as `name`: what `Arena.publish` does.
pub(crate) fn publish(
    py: Python<'_>,
    arena: shmarena::Arena,
    name: &str,
    allow_uids: Vec<u32>,
    allow_gids: Vec<u32>,
    timeout: Option<f64>,
) -> PyResult<PyPublisher> {
    let mut opts = shmarena::PublishOptions::new();
    for uid in allow_uids {
        opts = opts.allow_uid(uid);
    }
    for gid in allow_gids {
        opts = opts.allow_gid(gid);
    }
    if let Some(t) = timeout_of(timeout)? {
        opts = opts.timeout(t);
    }
    let owned = name.to_owned();
    let p = py
        .detach(move || opts.publish(&owned, arena))
        .map_err(service_err)?;
    Ok(PyPublisher {
        name: p.name().to_owned(),
        inner: Mutex::new(Some(p)),
        pid: std::process::id(),
    })
}
