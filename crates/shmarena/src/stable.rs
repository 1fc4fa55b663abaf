//! Stable entry type names: matching an archived entry by a name the user chooses, not by the
//! Rust path of its type, so that code can move between modules and binaries.

use rkyv::bytecheck::CheckBytes;
use rkyv::{Archive, Portable, Serialize};

use crate::archive::{ArenaSerializer, ArenaValidator};
use crate::arena::{Arena, Want};
use crate::error::Result;
use crate::handle::Handle;
use crate::view::View;
use crate::writer::ArenaWriter;

/// A name and version for an archived type that stay the same wherever the type's code lives.
///
/// By default an entry records its type as [`std::any::type_name`], the Rust path
/// (`app::model::Catalog`), and a reader must ask for a type with the same path: a second
/// binary that includes the model with `#[path]`, or a refactoring that moves the module,
/// reads it as `reader::model::Catalog` and is refused with
/// [`Error::TypeMismatch`](crate::Error::TypeMismatch). That path is also not guaranteed stable across compiler
/// versions. For arenas that outlive one build (files on disk, segments read by other
/// programs), implement this trait and use [`ArenaWriter::put_stable`],
/// [`Arena::get_stable`] and [`Arena::stable_handle`]; the entry then records
/// `"{NAME}@v{VERSION}"`.
///
/// The name only decides which entries match; it is never evidence for skipping validation:
/// an entry read through a stable name is checked with bytecheck on first access as `T` in each
/// process, unless this process holds a trust row for that entry and `T`'s real type identity
/// (it wrote or validated it as `T`, or received it through a trusted channel it opted into
/// from a process of the same build: see [`Arena::trusts`]). Its archived size and alignment must match as well. Bump
/// `VERSION` whenever the type's archived layout changes (a field added, removed, retyped or
/// reordered), so that old arenas are refused by name instead of failing validation (or,
/// worse, validating as a different shape).
///
/// ```
/// # fn main() -> shmarena::Result<()> {
/// mod app {
///     pub mod model {
///         #[derive(shmarena::rkyv::Archive, shmarena::rkyv::Serialize)]
///         #[rkyv(crate = shmarena::rkyv)]
///         pub struct Catalog {
///             pub items: Vec<String>,
///         }
///         impl shmarena::StableName for Catalog {
///             const NAME: &'static str = "example.Catalog";
///             const VERSION: u32 = 1;
///         }
///     }
/// }
/// use app::model::Catalog;
///
/// let mut b = shmarena::ArenaOptions::new().create()?;
/// b.put_stable("catalog", &Catalog { items: vec!["apple".into()] })?;
/// let arena = b.seal()?;
/// // Any type with the same stable name, version and archived layout reads it.
/// let catalog = arena.get_stable::<Catalog>("catalog")?;
/// assert_eq!(catalog.items[0], "apple");
/// assert_eq!(arena.entries().next().unwrap().type_name, "example.Catalog@v1");
/// # Ok(()) }
/// ```
pub trait StableName {
    /// The name, unique among the types of your arenas (say `"myapp.Catalog"`).
    const NAME: &'static str;
    /// The version of the archived layout; bump it when the layout changes.
    const VERSION: u32;
}

/// The type name an entry of `T` records: `"{NAME}@v{VERSION}"`.
pub(crate) fn stable_type_name<T: StableName>() -> String {
    format!("{}@v{}", T::NAME, T::VERSION)
}

impl ArenaWriter {
    /// [`put`](ArenaWriter::put), recording `T`'s [`StableName`] instead of its Rust path.
    pub fn put_stable<T>(&mut self, name: &str, value: &T) -> Result<()>
    where
        T: StableName + Archive + for<'a, 'w> Serialize<ArenaSerializer<'a, 'w>>,
        T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
    {
        self.put_as(
            name,
            value,
            &stable_type_name::<T>(),
            crate::writer::PutCheck::Validate,
        )
    }
}

impl Arena {
    /// Reads an entry written with [`ArenaWriter::put_stable`] as `T`, matching it by `T`'s
    /// [`StableName`], archived size and alignment. The name is never evidence: the entry is
    /// validated with bytecheck on first access in this process unless this process holds a
    /// trust row for it and `T`'s real type (see [`Arena::trusts`]).
    pub fn get_stable<T>(&self, name: &str) -> Result<View<T>>
    where
        T: StableName + Archive,
        T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
    {
        self.stable_view_at(self.index_of(name)?)
    }

    pub(crate) fn stable_view_at<T>(&self, index: usize) -> Result<View<T>>
    where
        T: StableName + Archive,
        T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
    {
        let want = Want::archived_stable::<T>(stable_type_name::<T>());
        let root = self.archived_as::<T>(index, want)?;
        Ok(View::new(self.clone(), root))
    }

    /// A handle to an entry written with [`ArenaWriter::put_stable`]; resolve it with
    /// [`Handle::get_stable`].
    pub fn stable_handle<T: StableName + Archive>(&self, name: &str) -> Result<Handle<T>> {
        let want = Want::archived_stable::<T>(stable_type_name::<T>());
        let (index, type_hash, kind) = self.locate_as(name, &want)?;
        Handle::from_parts(self, index, type_hash, kind)
    }
}

impl<T> Handle<T>
where
    T: StableName + Archive,
    T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
{
    /// [`get`](Handle::get) for a handle made with [`Arena::stable_handle`]: the entry is
    /// matched by `T`'s [`StableName`] and validated as `T` unless this process trusts it as `T`.
    pub fn get_stable(&self) -> Result<View<T>> {
        let arena = self.arena()?;
        arena.stable_view_at(self.raw().entry_index() as usize)
    }
}
