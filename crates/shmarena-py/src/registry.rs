//! Per-process state of each arena: the mapping, the roots of archived entries read so far, and
//! the dtype and shape of arrays stored with `put_array`.
//!
//! This is the bottom of the reading side: it knows nothing of handles or views (`handle.rs`
//! caches [`ArenaState`]s; the views hold a [`Root`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use shmarena::View;

use crate::errors::{chain, corrupted, lib_err, type_mismatch, ShmarenaError};
use crate::value::{check_claim_depth, ArchivedKey, ArchivedValue, Value};

/// xxh3-64 of the value model's type name: with its size and alignment, its fingerprint.
static VALUE_TYPE_HASH: LazyLock<u64> =
    LazyLock::new(|| shmarena::format::checksum(std::any::type_name::<Value>().as_bytes()));

/// The entry holding dtype and shape of arrays stored with `put_array`.
pub(crate) const META_ENTRY: &str = "shmarena-py/arrays";

/// The old array side table: entry name to (dtype string, shape).
pub(crate) type SideTable = HashMap<String, (String, Vec<u64>)>;

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
    arrays: OnceLock<Result<SideTable, String>>,
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
        let view = self.value(name).map_err(|e| match e {
            shmarena::Error::TypeMismatch { .. } => type_mismatch(format!(
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

    /// Archived entry `name` as a [`Value`]. An entry this process does not trust yet is first
    /// scanned for its nesting ([`check_claim_depth`]): the library's validation, which `get`
    /// runs next, has no bound, and a forged value nested a few hundred thousand levels deep
    /// would overflow the thread's stack.
    fn value(&self, name: &str) -> Result<View<Value>, shmarena::Error> {
        if let Some((_, e)) = self.arena.layout().find(name) {
            let is_value = e.kind == shmarena::format::Kind::Archived
                && e.type_hash == *VALUE_TYPE_HASH
                && e.elem_size == std::mem::size_of::<ArchivedValue>() as u64
                && e.align as usize == std::mem::align_of::<ArchivedValue>();
            if is_value && !self.arena.trusts::<Value>(name) {
                let payload = &self.arena.as_bytes()[e.range()];
                check_claim_depth(payload, e.root_pos as usize).map_err(|why| {
                    shmarena::Error::Format {
                        arena: self.what(),
                        source: shmarena::format::FormatError::Corrupted {
                            detail: format!("entry {name:?}: {why}"),
                        },
                    }
                })?;
            }
        }
        self.arena.get::<Value>(name)
    }

    /// dtype and shape of top-level arrays in an arena written before format version 2 (the
    /// side table, docs/VALUES.md "Top-level arrays"), parsed once per process. A side table
    /// that does not validate, or a row that is not `name: (dtype, [dims...])`, is corrupt.
    pub(crate) fn arrays(&self) -> PyResult<&SideTable> {
        self.arrays
            .get_or_init(|| self.read_arrays())
            .as_ref()
            .map_err(|why| corrupted(format!("{}: {why}", self.what())))
    }

    fn read_arrays(&self) -> Result<SideTable, String> {
        let mut out = HashMap::new();
        let view = match self.value(META_ENTRY) {
            Ok(view) => view,
            Err(shmarena::Error::NoSuchEntry { .. } | shmarena::Error::TypeMismatch { .. }) => {
                return Ok(out)
            }
            Err(e) => {
                return Err(format!(
                    "the array side table {META_ENTRY:?}: {}",
                    chain(&e)
                ))
            }
        };
        let bad = |what: &str| format!("the array side table {META_ENTRY:?}: {what}");
        let ArchivedValue::Map(m) = &*view else {
            return Err(bad("not a dict"));
        };
        for (k, v) in m.iter() {
            let (ArchivedKey::Str(name), ArchivedValue::Tuple(t)) = (k, v) else {
                return Err(bad("a row is not a str key and a tuple"));
            };
            let (Some(ArchivedValue::Str(dtype)), Some(ArchivedValue::List(shape)), 2) =
                (t.first(), t.get(1), t.len())
            else {
                return Err(bad(&format!(
                    "row {:?} is not (dtype, [dims...])",
                    name.as_str()
                )));
            };
            let shape = shape
                .iter()
                .map(|d| match d {
                    ArchivedValue::Int(i) => u64::try_from(i.to_native()).ok(),
                    _ => None,
                })
                .collect::<Option<Vec<u64>>>()
                .ok_or_else(|| {
                    bad(&format!(
                        "row {:?} has a dimension that is not an int >= 0",
                        name.as_str()
                    ))
                })?;
            out.insert(name.as_str().to_owned(), (dtype.as_str().to_owned(), shape));
        }
        Ok(out)
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
