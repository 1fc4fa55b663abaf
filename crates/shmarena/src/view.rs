//! Typed views into a sealed arena, and the typed reads of [`Arena`] that make them. A view
//! holds a clone of its [`Arena`], so the mapping lives at least as long as the view.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;

use bytemuck::Pod;
use rkyv::bytecheck::CheckBytes;
use rkyv::{Archive, Portable};

use crate::archive::ArenaValidator;
use crate::arena::Arena;
use crate::error::Result;

/// The typed reads. They live here, beside the views they return, so that arena.rs does not
/// depend on view.rs (the dependency runs one way: view → arena).
impl Arena {
    /// Reads an archived entry as `T`, checking its type fingerprint, and validating it with
    /// bytecheck unless the arena's trust table holds a row for this entry as `T`'s archived
    /// type ([`Arena::trusts`]): a row the writer recorded when it validated the value at
    /// `put`, one a trusted channel brought, or one an earlier validation in this process added.
    /// Kernel seals alone are no such row. A failed validation is an error and adds no row.
    ///
    /// A view cannot outlive what it borrows from:
    ///
    /// ```compile_fail
    /// # fn main() -> shmarena::Result<()> {
    /// let mut b = shmarena::ArenaOptions::new().create()?;
    /// b.put("v", &vec![1u32, 2, 3])?;
    /// let arena = b.seal()?;
    /// let slice: &rkyv::vec::ArchivedVec<rkyv::Archived<u32>> = {
    ///     let view = arena.get::<Vec<u32>>("v")?;
    ///     &*view // error: `view` does not live long enough
    /// };
    /// # let _ = slice;
    /// # Ok(()) }
    /// ```
    pub fn get<T>(&self, name: &str) -> Result<View<T>>
    where
        T: Archive,
        T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
    {
        self.view_at(self.index_of(name)?)
    }

    /// Entry `index` as archived `T` (after a fingerprint check); see [`Arena::get`].
    pub(crate) fn view_at<T>(&self, index: usize) -> Result<View<T>>
    where
        T: Archive,
        T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
    {
        let root = self.archived_at::<T>(index)?;
        Ok(View::new(self.clone(), root))
    }

    /// Reads a POD entry as a slice of `T`, checking its type fingerprint.
    pub fn slice<T: Pod>(&self, name: &str) -> Result<SliceView<T>> {
        self.slice_at(self.index_of(name)?)
    }

    /// Entry `index` as `[T]` (after a fingerprint check); see [`Arena::slice`].
    pub(crate) fn slice_at<T: Pod>(&self, index: usize) -> Result<SliceView<T>> {
        let items = self.pod_at::<T>(index)?;
        Ok(SliceView::new(self.clone(), items))
    }

    /// The table-of-contents entry called `name`: its kind, element type
    /// ([`dtype_name`](crate::format::Entry::dtype_name)) and shape
    /// ([`dims`](crate::format::Entry::dims)), with no type check.
    pub fn entry(&self, name: &str) -> Result<&crate::format::Entry> {
        Ok(&self.layout().entries[self.index_of(name)?])
    }

    /// Reads a bytes entry written with [`ArenaWriter::put_bytes`](crate::ArenaWriter::put_bytes).
    pub fn bytes(&self, name: &str) -> Result<SliceView<u8>> {
        let payload = self.bytes_of(name)?;
        Ok(SliceView::new(self.clone(), payload))
    }
}

/// A checked view of an archived entry: derefs to `Archived<T>`, read in place.
///
/// Get one from [`Arena::get`]. It keeps the arena mapped; it is `Send` and `Sync` when the
/// archived type is `Sync` (archived types are plain bytes, so they are).
pub struct View<T: Archive> {
    // INVARIANTS: `root` points to a valid, aligned `T::Archived` inside the read-only mapping
    // of `arena`, established by `Arena::get`; that mapping is never written or remapped while
    // `arena` (and so this view) lives.
    root: NonNull<T::Archived>,
    arena: Arena,
    _type: PhantomData<fn() -> T>,
}

impl<T: Archive> View<T> {
    pub(crate) fn new(arena: Arena, root: &T::Archived) -> View<T> {
        View {
            root: NonNull::from(root),
            arena,
            _type: PhantomData,
        }
    }

    /// The arena this view reads from.
    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// Deserializes the entry into an owned `T` (a copy on the heap), for the rare value you
    /// need to own or mutate; read everything else in place through the view.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut b = shmarena::ArenaOptions::new().create()?;
    /// b.put("tags", &vec!["a".to_string(), "b".to_string()])?;
    /// let arena = b.seal()?;
    /// let mut tags: Vec<String> = arena.get::<Vec<String>>("tags")?.deserialize()?;
    /// tags.push("c".into());
    /// assert_eq!(tags, ["a", "b", "c"]);
    /// # Ok(()) }
    /// ```
    pub fn deserialize(&self) -> std::result::Result<T, rkyv::rancor::Error>
    where
        T::Archived: rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        rkyv::deserialize::<T, rkyv::rancor::Error>(&**self)
    }
}

impl<T: Archive> Deref for View<T> {
    type Target = T::Archived;

    fn deref(&self) -> &T::Archived {
        // SAFETY: by the field invariant `root` is valid and aligned for `T::Archived`, points
        // into a mapping that `self.arena` keeps alive and unchanged, and the returned borrow is
        // tied to `&self`, so it cannot outlive the view.
        unsafe { self.root.as_ref() }
    }
}

impl<T: Archive> Clone for View<T> {
    fn clone(&self) -> Self {
        View {
            root: self.root,
            arena: self.arena.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: Archive> fmt::Debug for View<T>
where
    T::Archived: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

// SAFETY: a `View` is a shared reference to immutable bytes plus an `Arena` (an `Arc` of
// `Send + Sync` state); sending it to another thread is like sending `&T::Archived`, which is
// `Send` exactly when `T::Archived: Sync`.
unsafe impl<T: Archive> Send for View<T> where T::Archived: Sync {}
// SAFETY: as above, sharing a `View` shares `&T::Archived`, sound when `T::Archived: Sync`.
unsafe impl<T: Archive> Sync for View<T> where T::Archived: Sync {}

/// A checked view of a POD entry: derefs to `[T]`, read in place.
///
/// Get one from [`Arena::slice`] or [`Arena::bytes`]. It keeps the arena mapped.
pub struct SliceView<T: Pod> {
    // INVARIANTS: `ptr` and `len` describe an aligned `[T]` inside the read-only mapping of
    // `arena`, established by `Arena::slice` through `bytemuck::try_cast_slice`; the mapping is
    // never written or remapped while `arena` lives.
    ptr: NonNull<T>,
    len: usize,
    arena: Arena,
}

impl<T: Pod> SliceView<T> {
    pub(crate) fn new(arena: Arena, items: &[T]) -> SliceView<T> {
        SliceView {
            ptr: NonNull::from(items).cast(),
            len: items.len(),
            arena,
        }
    }

    /// The arena this view reads from.
    pub fn arena(&self) -> &Arena {
        &self.arena
    }
}

impl<T: Pod> Deref for SliceView<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: by the field invariant, `ptr..ptr + len` is an aligned, initialised `[T]` in a
        // mapping that `self.arena` keeps alive and unchanged; any bytes are a valid `T` because
        // `T: Pod`; the borrow is tied to `&self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Pod> Clone for SliceView<T> {
    fn clone(&self) -> Self {
        SliceView {
            ptr: self.ptr,
            len: self.len,
            arena: self.arena.clone(),
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for SliceView<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

// SAFETY: a `SliceView` is a shared reference to immutable `[T]` plus an `Arena`; `T: Pod`
// implies `T: Copy + 'static` with no interior mutability, so `&[T]` is `Send` and `Sync`.
unsafe impl<T: Pod + Sync> Send for SliceView<T> {}
// SAFETY: as above.
unsafe impl<T: Pod + Sync> Sync for SliceView<T> {}
