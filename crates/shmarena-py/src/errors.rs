//! Python exception types and the mapping from `shmarena::Error` (the service's errors to their
//! own types with [`service_err`]).

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use pyo3::PyErr;
use shmarena::service::ServiceError as LibServiceError;

create_exception!(
    shmarena,
    ShmarenaError,
    PyException,
    "An arena could not be created, opened or read; the message names the arena and the cause."
);
create_exception!(
    shmarena,
    FormatError,
    ShmarenaError,
    "The bytes are not an arena (or an entry) this build can read. One subclass per class of \
     docs/FORMAT.md: `NotAnArenaError`, `IncompatibleError`, `TruncatedError`, \
     `CorruptedError`, `StillBuildingError`."
);
create_exception!(
    shmarena,
    NotAnArenaError,
    FormatError,
    "The bytes do not start with the arena magic (an empty file included)."
);
create_exception!(
    shmarena,
    IncompatibleError,
    FormatError,
    "A format version, byte order, rkyv generation or pointer width this build does not read; \
     the arena may be sound."
);
create_exception!(
    shmarena,
    TruncatedError,
    FormatError,
    "Fewer bytes than the header or than the arena's recorded length."
);
create_exception!(
    shmarena,
    CorruptedError,
    FormatError,
    "Damaged bytes: a checksum, a field out of range, an archived value that does not validate, \
     or an array whose dtype, shape or data do not agree (docs/FORMAT.md, docs/VALUES.md)."
);
create_exception!(
    shmarena,
    StillBuildingError,
    FormatError,
    "The arena is not sealed: still being built, or its builder died."
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

/// A library error as a Python `ShmarenaError`: a format error as the subclass of its class.
pub(crate) fn lib_err(e: shmarena::Error) -> PyErr {
    use shmarena::format::FormatError as F;
    if let Some(f) = e.format_error() {
        let msg = chain(&e);
        return match f {
            F::BadMagic => NotAnArenaError::new_err(msg),
            F::UnsupportedVersion { .. } | F::PointerWidth { .. } | F::Incompatible { .. } => {
                IncompatibleError::new_err(msg)
            }
            F::Truncated { .. } => TruncatedError::new_err(msg),
            F::StillBuilding => StillBuildingError::new_err(msg),
            _ => CorruptedError::new_err(msg),
        };
    }
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

/// A `shmarena.TypeMismatchError` (a `ShmarenaError` and a `TypeError`, defined by the Python
/// package): the entry exists but holds another type than the read asks for.
pub(crate) fn type_mismatch(msg: String) -> PyErr {
    static CLS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    Python::attach(|py| {
        let cls = CLS.get_or_try_init(py, || {
            py.import("shmarena")?
                .getattr("TypeMismatchError")?
                .cast_into::<PyType>()
                .map(Bound::unbind)
                .map_err(PyErr::from)
        });
        match cls {
            Ok(cls) => PyErr::from_type(cls.bind(py).clone(), msg),
            Err(_) => PyTypeError::new_err(msg),
        }
    })
}

/// A `CorruptedError` with `msg`.
pub(crate) fn corrupted(msg: String) -> PyErr {
    CorruptedError::new_err(msg)
}

create_exception!(
    shmarena,
    ServiceError,
    ShmarenaError,
    "Publishing or connecting by name failed; the message names the published name and the cause."
);
create_exception!(
    shmarena,
    NotPublishedError,
    ServiceError,
    "Nobody publishes the name (never published, or the publisher is gone)."
);
create_exception!(
    shmarena,
    AlreadyPublishedError,
    ServiceError,
    "Another live process (or Publisher) already publishes the name."
);
create_exception!(
    shmarena,
    RefusedError,
    ServiceError,
    "The publisher refused this client's uid, or this client refused a publisher of another uid."
);

/// A library error as a Python exception: service errors get their own types.
pub(crate) fn service_err(e: shmarena::Error) -> PyErr {
    match &e {
        shmarena::Error::Service(s) => {
            let msg = chain(&e);
            match s {
                LibServiceError::NotPublished { other_uids, .. } if !other_uids.is_empty() => {
                    NotPublishedError::new_err(format!(
                        "{msg} (shmarena.connect(name, server_uid={}))",
                        other_uids[0]
                    ))
                }
                LibServiceError::NotPublished { .. } => NotPublishedError::new_err(msg),
                LibServiceError::AlreadyPublished {
                    name,
                    by_this_process: true,
                } => AlreadyPublishedError::new_err(format!(
                    "an arena is already published as {name:?} by this process: a Publisher of \
                     it is still open here (a notebook cell run twice?); call that Publisher's \
                     publish(arena) to serve a new generation, or its close() before publishing \
                     the name again"
                )),
                LibServiceError::AlreadyPublished { .. } => AlreadyPublishedError::new_err(msg),
                LibServiceError::Refused { .. } => RefusedError::new_err(msg),
                _ => ServiceError::new_err(msg),
            }
        }
        _ => lib_err(e),
    }
}
