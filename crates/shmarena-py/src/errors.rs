//! Python exception types and the mapping from `shmarena::Error`.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::PyErr;

create_exception!(
    shmarena,
    ShmarenaError,
    PyException,
    "An arena could not be created, opened or read; the message names the arena and the cause."
);
create_exception!(
    shmarena,
    StaleHandleError,
    ShmarenaError,
    "A pickled arena or view names an arena that no longer exists (its owner exited or closed it)."
);
create_exception!(
    shmarena,
    WrongProcessError,
    ShmarenaError,
    "A builder was used in another process than the one that created it (a child after \
     `os.fork()`): nothing was written, sealed or removed."
);
create_exception!(
    shmarena,
    BadHandleError,
    PyValueError,
    "Bytes given to `shmarena._restore` are not a shmarena handle."
);

/// An error and its sources, joined with `: ` ([`shmarena::error_chain`], the printer the
/// command-line tools use too).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    shmarena::error_chain(e)
}

/// A library error as a Python `ShmarenaError`.
pub(crate) fn lib_err(e: shmarena::Error) -> PyErr {
    match e {
        shmarena::Error::StaleHandle { .. } => StaleHandleError::new_err(chain(&e)),
        shmarena::Error::BadHandle { .. } => BadHandleError::new_err(chain(&e)),
        shmarena::Error::WrongProcess { .. } => WrongProcessError::new_err(chain(&e)),
        _ => ShmarenaError::new_err(chain(&e)),
    }
}

create_exception!(
    shmarena,
    WrongThreadError,
    ShmarenaError,
    "A `Builder` was used from a thread other than the one that made it (build on one thread; \
     hand the sealed arena or its views to others)."
);
