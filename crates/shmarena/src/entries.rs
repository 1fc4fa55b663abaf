//! Listing an arena's entries: [`Arena::entries`] and [`Arena::contains`].

use crate::arena::Arena;
use crate::format::{Entry, Kind};

/// What [`Arena::entries`] tells about one entry, from the table of contents (nothing is read
/// or validated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo<'a> {
    /// The entry's name.
    pub name: &'a str,
    /// Archived, POD or bytes: which of [`Arena::get`], [`Arena::slice`] or [`Arena::bytes`]
    /// reads it.
    pub kind: Kind,
    /// The type it was written as: the Rust path from [`std::any::type_name`], or a
    /// [`StableName`](crate::StableName) as `"NAME@vVERSION"`.
    pub type_name: &'a str,
    /// Length of the payload in bytes.
    pub byte_len: u64,
    /// Number of elements: of a POD slice, of bytes, or 1 for an archived value.
    pub count: u64,
}

impl<'a> From<&'a Entry> for EntryInfo<'a> {
    fn from(e: &'a Entry) -> EntryInfo<'a> {
        EntryInfo {
            name: &e.name,
            kind: e.kind,
            type_name: &e.type_name,
            byte_len: e.len,
            count: e.count,
        }
    }
}

impl Arena {
    /// The entries, in the order they were written.
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// use shmarena::format::Kind;
    /// let mut b = shmarena::ArenaOptions::new().create()?;
    /// b.put("names", &vec!["a".to_string()])?;
    /// b.put_slice("weights", &[1.0f32, 2.0])?;
    /// let arena = b.seal()?;
    /// let listed: Vec<(&str, Kind, u64)> =
    ///     arena.entries().map(|e| (e.name, e.kind, e.count)).collect();
    /// assert_eq!(listed, [("names", Kind::Archived, 1), ("weights", Kind::Pod, 2)]);
    /// assert!(arena.contains("weights") && !arena.contains("bias"));
    /// assert_eq!(arena.entry_count(), 2);
    /// # Ok(()) }
    /// ```
    pub fn entries(&self) -> impl ExactSizeIterator<Item = EntryInfo<'_>> + '_ {
        self.layout().entries.iter().map(EntryInfo::from)
    }

    /// Whether the arena has an entry called `name` (of any type).
    pub fn contains(&self, name: &str) -> bool {
        self.layout().find(name).is_some()
    }
}
