//! The view types: `MapView` and `ListView` are an entry's root plus a path of positions (map
//! entries by insertion index, list elements by index). Each access walks the path from the
//! root, O(depth), so a view needs no pointer of its own into the mapping and pickles to the same
//! few bytes it is made of.
//!
//! Only the types live here, so that `to_py.rs` can make views and the views' methods (in
//! `map.rs` and `list.rs`) can use `to_py.rs` with no import circle.

use std::sync::Arc;

use pyo3::prelude::*;

use crate::handle::Slice;
use crate::registry::Root;

/// A read-only `collections.abc.Mapping` over an archived dict: lookups hash the key and probe
/// the archived table in place. Methods in `map.rs`.
#[pyclass(frozen, module = "shmarena", name = "MapView")]
pub(crate) struct MapView {
    pub(crate) root: Arc<Root>,
    pub(crate) path: Vec<u32>,
}

/// A read-only `collections.abc.Sequence` over an archived list or tuple, with lazy slicing.
/// Methods in `list.rs`.
#[pyclass(frozen, sequence, module = "shmarena", name = "ListView")]
pub(crate) struct ListView {
    pub(crate) root: Arc<Root>,
    pub(crate) path: Vec<u32>,
    /// `None`: the whole list.
    pub(crate) slice: Option<Slice>,
}
