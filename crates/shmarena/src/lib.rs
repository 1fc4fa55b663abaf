//! Build a large read-only dataset once, in place in shared memory, seal it, and read it from
//! many processes with typed views: no copy and no deserialization per process.
//!
//! ```
//! # fn main() -> shmarena::Result<()> {
//! use std::collections::HashMap;
//!
//! // Create: a sealed memfd by default (`.named("lex")` or `.file(path)` for the others).
//! let mut b = shmarena::ArenaOptions::new().create()?;
//!
//! // Archive: rkyv writes straight into the segment; POD slices are copied once.
//! let lexicon: HashMap<String, (u8, f32)> =
//!     [("apple".into(), (1, 0.9)), ("carrot".into(), (2, 0.7))].into();
//! b.put("lexicon", &lexicon)?;
//! b.put_slice("centroids", &[0.0f32, 1.0, 2.0, 3.0])?;
//!
//! // Seal: read-only from here, enforced by the kernel; the writer is consumed.
//! let arena = b.seal()?;
//!
//! // Read in place: `View` derefs to the archived map, `SliceView` to `[f32]`.
//! let lex = arena.get::<HashMap<String, (u8, f32)>>("lexicon")?;
//! assert_eq!(lex.get("apple").map(|v| v.0), Some(1));
//! assert_eq!(arena.slice::<f32>("centroids")?[3], 3.0);
//!
//! // Reading as the wrong type is an error, never garbage.
//! assert!(matches!(
//!     arena.slice::<u64>("centroids"),
//!     Err(shmarena::Error::TypeMismatch { .. })
//! ));
//! # Ok(()) }
//! ```
//!
//! # Backings
//!
//! | backing | made by | reached by | freed |
//! |---|---|---|---|
//! | sealed memfd (default) | [`ArenaOptions::new`] | fork (inherited), an inherited fd ([`Arena::open_fd`]), `/proc/PID/fd/N` ([`Arena::open_memfd`]) | by the kernel when the last fd or mapping goes, even on SIGKILL |
//! | named segment | [`ArenaOptions::named`] | any process of the user: copied into a sealed memfd ([`Arena::load_named`], [`Arena::open`], handles), or mapped in place by the `unsafe` [`Arena::open_named`] | unlinked when the writer's arena drops, unless [`Arena::persist`]ed |
//! | file | [`ArenaOptions::file`] | any process that can read it: copied ([`Arena::load_file`], [`Arena::open`], handles), or mapped in place by the `unsafe` [`Arena::open_file`] | never (it is an image) |
//!
//! All three hold the same bytes, laid out as docs/FORMAT.md describes. Every arena is built in
//! a private memfd, sealed from its creation against shrinking and, once the writer has mapped
//! it, against writes from anywhere but that mapping (`F_SEAL_SHRINK`, `F_SEAL_FUTURE_WRITE`):
//! no process can change or truncate what the writer validated before it seals. A named
//! segment or a file receives a copy of the finished bytes at [`ArenaWriter::seal`], and the
//! [`Arena`] `seal` returns maps the memfd, so the writer's process holds the arena's size
//! twice (the segment and the memfd) while that arena lives.
//!
//! A sealed memfd can also be [published](Arena::publish) by name: any process of the user then
//! reaches it with [`connect`] or follows its generations with [`subscribe`] (see
//! [`service`]). [`Arena::load_file`] copies an image file into a sealed memfd, checked once.
//!
//! # Trust model
//!
//! - The header and table of contents are bounds-checked on every open: O(entries). Corrupted,
//!   truncated, foreign or half-built bytes give a typed [`Error`], never a panic or an
//!   out-of-bounds read.
//! - Archived entries are validated with bytecheck on first access as each type in each process,
//!   and the result is cached per (entry, real type identity: a `TypeId`, not the type's name).
//!   Validation is skipped only on evidence that safe code cannot forge, held in this process's
//!   memory, on a memfd the kernel seals (write, grow, shrink): this process, or a fork
//!   ancestor, built the arena and validated the entry as that very type at `put` (in its own
//!   memfd, which the kernel kept anyone else from changing from then on), or validated it
//!   since, or took rows it opted into (below). Nothing read from the arena's bytes counts (the
//!   `validated` flag and the type names are information). Arenas opened by descriptor, `/proc`
//!   path, name, file or a handle string start with nothing
//!   trusted. [`Arena::trusts`] tells which reads skip bytecheck; docs/DESIGN.md has the table.
//! - **Trust from another process is opted into, with `unsafe`.** A process that shares an arena
//!   also sends the entries it knows valid (its trust rows), so that the receiver can skip
//!   bytecheck too. No kernel fact proves that those rows speak of the bytes received, and a
//!   program can forge them in safe code, so they are taken only where the program says so:
//!   - [`Arena::share_with`]'s environment: a child takes its launcher's rows after
//!     `unsafe { shmarena::trust_inherited_rows() }` ([`trust_inherited_rows`]), once at the top
//!     of `main`. A spawn-mode `shmarena_pool` worker does this itself (the pool is its
//!     launcher, and checks its side with [`keep_vouched_rows`]).
//!   - [`connect`] / [`subscribe`]: the publisher's rows with
//!     `unsafe { ConnectOptions::new().trust_publisher_rows() }`
//!     ([`ConnectOptions::trust_publisher_rows`]).
//!   - Python pickles: `shmarena.trust_pickled_rows()`, and `connect(..., trusted=True)`.
//!
//!   Without the opt-in the arena arrives the same way and each archived entry is validated
//!   once per process on its first read: about the time of a few sequential reads of its bytes
//!   (`cargo bench -p shmarena-bench --bench validate -- validate/per-GB/shapes`); POD slices
//!   need no validation.
//! - Named segments and files can be rewritten or truncated by any process of their owner, so
//!   the safe API never maps one: it copies it into a sealed memfd with `pread`
//!   ([`Arena::load_named`], [`Arena::load_file`]), and the writer never maps one at all: it
//!   writes the sealed bytes out to it, and its own arena is its sealed memfd. Mapping one in
//!   place is the
//!   `unsafe` [`Arena::open_named`] / [`Arena::open_file`], whose caller promises that nothing
//!   writes to it meanwhile. docs/DESIGN.md says what each backing can and cannot promise.
//!
//! # Your own types, and their names
//!
//! Derive rkyv's traits through the re-export, with `#[rkyv(crate = shmarena::rkyv)]`, so
//! that your crate needs no rkyv dependency and names the version shmarena archives with:
//!
//! ```
//! #[derive(shmarena::rkyv::Archive, shmarena::rkyv::Serialize, shmarena::rkyv::Deserialize)]
//! #[rkyv(crate = shmarena::rkyv)]
//! struct Word {
//!     text: String,
//!     label: u8,
//! }
//! # fn main() -> shmarena::Result<()> {
//! let mut b = shmarena::ArenaOptions::new().create()?;
//! b.put("w", &Word { text: "apple".into(), label: 1 })?;
//! let arena = b.seal()?;
//! assert_eq!(arena.get::<Word>("w")?.label, 1);
//! # Ok(()) }
//! ```
//!
//! An entry records its type as [`std::any::type_name`], the Rust path of the type, and a
//! typed read must ask for the same path. That path is fragile: it changes when a module
//! moves, differs in a second binary that includes the model with `#[path]`, and the standard
//! library does not promise it stays the same across compiler versions. Such a read is refused
//! with [`Error::TypeMismatch`] (never garbage). For arenas that other programs read or that
//! outlive a build (files, persisted segments), give the type a [`StableName`] and use
//! [`ArenaWriter::put_stable`] and [`Arena::get_stable`]; a stable name decides only which
//! entries match and is never evidence for skipping validation (see [`Arena::trusts`]).
//!
//! # Lifecycle
//!
//! A [`ArenaWriter`] writes a header that says "building"; [`ArenaWriter::seal`] writes the table of
//! contents, flips the header to "sealed" and makes the segment read-only. A reader refuses an
//! arena that is not sealed with [`Error::Format`] ([`format::FormatError::StillBuilding`]). A dropped writer removes what it made.
//!
//! A named segment lives until the writer's arena drops, unless [`Arena::persist`]ed; a
//! reader that may start first waits with [`Arena::wait_named`]; any process of the user
//! removes one by name with [`Arena::remove_named`] (an orphan of a killed writer, or a
//! persisted arena); [`inspect::gc`] removes orphans and keeps persisted segments.
//!
//! # Platform support
//!
//! Linux only for now (memfd, `/dev/shm`, `/proc`). Segment names already follow the portable
//! rule (30 bytes, `[A-Za-z0-9._-]`) so that a macOS port keeps them.
//!
//! # Features
//!
//! - `pointer_width_64`: rkyv relative pointers of 64 bits, lifting rkyv's 2 GiB limit per
//!   archived entry. The width is recorded in the header; an arena of the other width is refused
//!   with [`Error::Format`] ([`format::FormatError::PointerWidth`]). POD entries have no such limit either way.
//!
//! - `serde`: `Serialize`/`Deserialize` for [`Handle`] and [`SliceHandle`] (as their string
//!   form).
//!
//! # Where `unsafe` lives
//!
//! Six files, each block with its `// SAFETY:` argument:
//!
//! - `os/linux.rs`: creating, growing (`mremap`) and read-only mapping of a segment, dropping
//!   the writer's mapping only in the process that made it, the pre-exec hook that passes
//!   inherited memfds to a child, and adopting an inherited descriptor;
//! - `os/service.rs`: mapping the service's one-page generation counter;
//! - `os/build_id.rs`: reading the loaded object's ELF build-id note through `dl_iterate_phdr`;
//! - `view.rs`: dereferencing a [`View`] or [`SliceView`], and their `Send`/`Sync` impls;
//! - `arena.rs`: reading an archived entry the trust table vouches for without re-validation,
//!   and the `unsafe fn` `Arena::accept_trust_token` (a trusted channel's rows).
//! - `open.rs`: `Arena::open_named` and `Arena::open_file` forwarding their caller's promise
//!   to their [`OpenOptions`] twins.
//!
//! The public `unsafe fn`s, each with its `# Safety` section, are those where the caller vouches
//! for what the library cannot check: [`ArenaWriter::put_trusted`] (the value's rkyv impls write
//! a valid archive), [`Arena::open_named`] and [`Arena::open_file`] with their
//! [`OpenOptions`] twins (no other process writes the segment or file while it is mapped),
//! [`trust_inherited_rows`] (the launcher passed `share_with`'s entries unedited) and
//! [`ConnectOptions::trust_publisher_rows`] (whoever answers on the name is a genuine
//! publisher of this build).
//!
//! The process pool is the separate `shmarena-pool` crate, whose `unsafe` stays in its own
//! private `os` module.
//!
//! # Layout
//!
//! `format` (bytes, no I/O) → `os` (system calls) → `trust` (the rows that let a read skip
//! bytecheck) → `error` → `locator` → `segment` (the growable segment) → `archive` (rkyv glue) →
//! `arena` (mapping, checked access) → `open` (reaching an arena by locator, descriptor, name or
//! path; loads) → `image` (saving image files) → `writer` and `options` (building and sealing) →
//! `view` (typed views) → `entries` → `attach` → `handle` → `stable` → `service` → `inspect` →
//! `lifecycle` (named segments by name). Each module imports only modules to its left: there is
//! no import circle.
//! docs/DESIGN.md has the table, which `tests/layout.rs` checks against the code.

#[cfg(not(target_os = "linux"))]
compile_error!("shmarena supports Linux only for now (memfd, /dev/shm and /proc)");

mod archive;
mod arena;
mod attach;
mod entries;
mod error;
pub mod format;
pub mod handle;
mod image;
pub mod inspect;
mod lifecycle;
mod locator;
mod open;
mod options;
mod segment;
pub mod service;
mod stable;
mod trust;
mod view;
mod writer;

#[cfg_attr(target_os = "linux", path = "os/linux.rs")]
mod os;

#[doc(hidden)]
pub use archive::SegmentWriter;
pub use archive::{ArenaSerializer, ArenaValidator, MAX_NESTING};
pub use arena::{Arena, ArenaId};
pub use attach::{attach, detach, detach_all, expect_id, keep_vouched_rows, trust_inherited_rows};
pub use entries::EntryInfo;
pub use error::{error_chain, Error, Result};
pub use handle::{Handle, SliceHandle};
pub use locator::{validate_entry_name, validate_segment_name, Locator, MAX_SEGMENT_NAME};
pub use open::OpenOptions;
pub use options::ArenaOptions;
pub use os::release_free_memory;
pub use service::{connect, subscribe, ConnectOptions, PublishOptions, Publisher, Subscription};
pub use stable::StableName;
pub use view::{SliceView, View};
pub use writer::{ArenaWriter, SealError};

/// The README's examples, run as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExample;

/// Every Rust block of docs/*.md runs as a doctest too (blocks in other languages are skipped).
#[cfg(doctest)]
mod docs_examples {
    #[doc = include_str!("../../../docs/DESIGN.md")]
    struct Design;
    #[doc = include_str!("../../../docs/FORMAT.md")]
    struct Format;
    #[doc = include_str!("../../../docs/PYTHON.md")]
    struct Python;
    #[doc = include_str!("../../../docs/RELIABILITY.md")]
    struct Reliability;
    #[doc = include_str!("../../../docs/BENCHMARKS.md")]
    struct Benchmarks;
}

/// Re-exported so users name the same rkyv and bytemuck versions shmarena archives with.
pub use bytemuck;
pub use rkyv;
