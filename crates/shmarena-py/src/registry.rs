//! Per-process state of each arena: the mapping, the roots of archived entries read so far, and
//! the dtype and shape of arrays stored with `put_array`.
//!
//! This is the bottom of the reading side: it knows nothing of handles or views (`handle.rs`
//! caches [`ArenaState`]s; the views hold a [`Root`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use shmarena::View;

use crate::errors::{chain, lib_err, ShmarenaError};
use crate::value::{ArchivedKey, ArchivedValue, Value};

/// The entry holding dtype and shape of arrays stored with `put_array`.
pub(crate) const META_ENTRY: &str = "shmarena-py/arrays";

/// One archived entry's root, shared by every view into it.
pub(crate) struct Root {
    pub(crate) entry: String,
    pub(crate) view: View<Value>,
}

impl Root {
    pub(crate) fn arena(&self) -> &shmarena::Arena {
        self.view.arena()
    }

    /// The node at `path`, or `None` if the path does not lead anywhere (a forged handle).
    pub(crate) fn walk(&self, path: &[u32]) -> Option<&ArchivedValue> {
        let mut node: &ArchivedValue = &self.view;
        for &i in path {
            node = match node {
                ArchivedValue::Map(m) => m.get_index(i as usize)?.1,
                ArchivedValue::List(v) | ArchivedValue::Tuple(v) => v.get(i as usize)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The error for a path that does not lead to the container a view expects.
    pub(crate) fn bad_path(&self, path: &[u32]) -> PyErr {
        ShmarenaError::new_err(format!(
            "entry {:?} of arena {} has no container at position path {path:?}",
            self.entry,
            self.arena().id()
        ))
    }
}

/// Per-process state of one arena: the mapping, the roots of entries read so far, and the
/// dtype/shape of arrays stored with `put_array`.
pub(crate) struct ArenaState {
    pub(crate) arena: shmarena::Arena,
    /// The process that built the arena (and so unlinks a named one on close or exit); a fork
    /// child inherits this state but is not the owner.
    owner_pid: Option<u32>,
    roots: Mutex<HashMap<String, Arc<Root>>>,
    arrays: OnceLock<HashMap<String, (String, Vec<usize>)>>,
}

impl ArenaState {
    pub(crate) fn new(arena: shmarena::Arena, owner: bool) -> ArenaState {
        let owner_pid = owner.then(std::process::id);
        ArenaState {
            arena,
            owner_pid,
            roots: Mutex::new(HashMap::new()),
            arrays: OnceLock::new(),
        }
    }

    /// Whether this process built the arena.
    pub(crate) fn is_owner(&self) -> bool {
        self.owner_pid == Some(std::process::id())
    }

    /// The arena as error messages name it.
    pub(crate) fn what(&self) -> String {
        format!(
            "arena {} ({})",
            self.arena.id(),
            self.arena.locator().describe()
        )
    }

    /// The root of archived entry `name`, read once per process.
    pub(crate) fn root(&self, name: &str) -> PyResult<Arc<Root>> {
        let mut roots = self.roots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = roots.get(name) {
            return Ok(r.clone());
        }
        let view = self.arena.get::<Value>(name).map_err(|e| match e {
            shmarena::Error::TypeMismatch { .. } => PyTypeError::new_err(format!(
                "entry {name:?} of {} was not stored by shmarena's Python bindings: {}",
                self.what(),
                chain(&e)
            )),
            shmarena::Error::NoSuchEntry { .. } => PyKeyError::new_err(name.to_owned()),
            other => lib_err(other),
        })?;
        let root = Arc::new(Root {
            entry: name.to_owned(),
            view,
        });
        roots.insert(name.to_owned(), root.clone());
        Ok(root)
    }

    /// dtype and shape of top-level arrays, parsed once per process.
    pub(crate) fn arrays(&self) -> &HashMap<String, (String, Vec<usize>)> {
        self.arrays.get_or_init(|| {
            let mut out = HashMap::new();
            let Ok(view) = self.arena.get::<Value>(META_ENTRY) else {
                return out;
            };
            if let ArchivedValue::Map(m) = &*view {
                for (k, v) in m.iter() {
                    let (ArchivedKey::Str(name), ArchivedValue::Tuple(t)) = (k, v) else {
                        continue;
                    };
                    let (Some(ArchivedValue::Str(dtype)), Some(ArchivedValue::List(shape))) =
                        (t.first(), t.get(1))
                    else {
                        continue;
                    };
                    let shape = shape
                        .iter()
                        .filter_map(|d| match d {
                            ArchivedValue::Int(i) => usize::try_from(i.to_native()).ok(),
                            _ => None,
                        })
                        .collect();
                    out.insert(name.as_str().to_owned(), (dtype.as_str().to_owned(), shape));
                }
            }
            out
        })
    }

    /// Entry names a Python user sees (the metadata entry is hidden).
    pub(crate) fn names(&self) -> Vec<&str> {
        self.arena
            .layout()
            .entries
            .iter()
            .map(|e| e.name.as_str())
            .filter(|n| *n != META_ENTRY)
            .collect()
    }
}
