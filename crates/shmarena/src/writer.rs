//! The writer: building an arena in place in its segment, and sealing it.

use std::collections::HashSet;

use bytemuck::Pod;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::sharing::Share;
use rkyv::ser::Serializer;
use rkyv::{Archive, Portable, Serialize};

use crate::archive::{ArenaSerializer, ArenaValidator, SegmentWriter};
use crate::arena::{Arena, Backing};
use crate::error::{Error, Result};
use crate::format::{self, Entry, Header, Kind, Prim};
use crate::locator::{validate_entry_name, Locator};
use crate::os;
use crate::segment::{round_up, Segment, Site};
use crate::trust::TypeKey;

/// An arena under construction. Add entries with the `put` methods, then [`seal`](Self::seal)
/// it; until then no reader can open it as sealed.
///
/// A failed `put` leaves the writer as it was before the call.
///
/// Dropping a writer without sealing removes what it made: the memfd is freed, a named segment
/// unlinked and a temporary file removed.
///
/// A writer belongs to the process that created it. In a child forked while it builds (a
/// fork-mode pool job, Python's `os.fork()`), where its writable mapping does not exist, every
/// `put`, and [`seal`](Self::seal), fails with [`Error::WrongProcess`], and dropping it there
/// removes, unmaps and truncates nothing.
pub struct ArenaWriter {
    seg: Segment,
    /// The process that created the writer (see [`ArenaWriter::check_process`]).
    pid: u32,
    site: Site,
    /// Where the sealed arena will be found.
    locator: Locator,
    header: Header,
    entries: Vec<Entry>,
    /// The xxh3-64 of each entry's name: a new name is checked against this set, and only a
    /// hash already present (a duplicate, or a collision) costs a scan of `entries`, so
    /// building N entries stays O(N).
    name_hashes: HashSet<u64>,
    /// (entry index, archived type) pairs `put` validated, in this process's memory: the
    /// sealed arena's first trust rows.
    validated: Vec<(usize, TypeKey, crate::archive::Recheck)>,
    /// Next free byte.
    pos: usize,
}

/// How a `put` of an rkyv value establishes that the bytes it wrote are a valid archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PutCheck {
    /// Validate with bytecheck, then record a trust row ([`ArenaWriter::put`]).
    Validate,
    /// Neither: readers validate ([`ArenaWriter::put_unvalidated`]).
    Skip,
    /// Record a trust row on the caller's word ([`ArenaWriter::put_trusted`]); debug builds
    /// validate anyway.
    Trust,
}

impl std::fmt::Debug for ArenaWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArenaWriter")
            .field("segment", &self.seg.what())
            .field("entries", &self.entries.len())
            .field("len", &self.pos)
            .finish()
    }
}

impl ArenaWriter {
    /// Starts a writer on a fresh segment: writes the "building" header to it and to the file
    /// the arena will be written out to, if any.
    pub(crate) fn start(
        seg: Segment,
        site: Site,
        locator: Locator,
        header: Header,
    ) -> Result<ArenaWriter> {
        let mut writer = ArenaWriter {
            seg,
            pid: os::pid(),
            site,
            locator,
            header,
            entries: Vec::new(),
            name_hashes: HashSet::new(),
            validated: Vec::new(),
            pos: format::HEADER_LEN,
        };
        // The "building" header goes on a named segment or file first: a writer killed later
        // then leaves a segment whose header names its dead creator (an orphan `inspect::gc`
        // can collect), and `Arena::wait_named` waits on it.
        let head = writer.header.encode();
        if let Some(mirror) = writer.seg.mirror() {
            std::os::unix::fs::FileExt::write_all_at(mirror, &head, 0).map_err(|e| {
                let what = writer.seg.what().to_owned();
                Error::os(format!("writing the header of {what}"), &what, e)
            })?;
        }
        writer.seg.ensure(format::HEADER_LEN)?;
        writer.seg.note_written(format::HEADER_LEN);
        writer.seg.bytes_mut()[..format::HEADER_LEN].copy_from_slice(&head);
        Ok(writer)
    }

    /// Archives `value` with rkyv straight into the segment, with no intermediate buffer, then
    /// validates the archive once with bytecheck so that readers of a sealed memfd can skip that.
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// use std::collections::HashMap;
    /// let lexicon: HashMap<String, u32> = [("apple".to_string(), 1), ("pear".to_string(), 2)].into();
    /// let mut b = shmarena::ArenaOptions::new().create()?;
    /// b.put("lexicon", &lexicon)?;
    /// let arena = b.seal()?;
    /// let lex = arena.get::<HashMap<String, u32>>("lexicon")?;
    /// assert_eq!(lex.get("pear").map(|v| v.to_native()), Some(2));
    /// # Ok(()) }
    /// ```
    pub fn put<T>(&mut self, name: &str, value: &T) -> Result<()>
    where
        T: Archive + for<'a, 'w> Serialize<ArenaSerializer<'a, 'w>>,
        T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
    {
        self.put_as(name, value, std::any::type_name::<T>(), PutCheck::Validate)
    }

    /// [`put`](Self::put), recording `type_name` as the entry's type (the Rust path, or a
    /// [`StableName`](crate::StableName)).
    pub(crate) fn put_as<T>(
        &mut self,
        name: &str,
        value: &T,
        type_name: &str,
        check: PutCheck,
    ) -> Result<()>
    where
        T: Archive + for<'a, 'w> Serialize<ArenaSerializer<'a, 'w>>,
        T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
    {
        self.check_process()?;
        self.check_new_name(name)?;
        let align = format::ARCHIVED_ALIGN.max(align_of::<T::Archived>());
        let start = self.aligned_pos(align)?;
        self.seg.zero_reused(self.pos, start);
        let seg = &mut self.seg;
        let (serialized, len, failure) = rkyv::util::with_arena(|arena| {
            let writer = SegmentWriter::new(seg, start);
            let mut ser = Serializer::new(writer, arena.acquire(), Share::new());
            let serialized = rkyv::api::serialize_using::<_, rancor::Error>(value, &mut ser);
            let (writer, _, _) = ser.into_raw_parts();
            let (len, failure) = writer.finish();
            (serialized, len, failure)
        });
        // The writer raised the zeroing mark itself before each copy into the segment.
        let end = start + len;
        let root_pos = match (serialized, failure) {
            (_, Some(e)) => return Err(e),
            (Err(e), None) => {
                return Err(Error::Serialize {
                    entry: name.to_owned(),
                    message: e.to_string(),
                })
            }
            (Ok(root_pos), None) => root_pos,
        };
        let payload = &self.seg.bytes()[start..end];
        // `put_unvalidated` skips both the check and the trust row: every reader validates the
        // entry on first access instead. `put_trusted` records the row on its caller's promise
        // (checked anyway in debug builds).
        let trusted = check != PutCheck::Skip;
        let run_bytecheck = match check {
            PutCheck::Validate => true,
            PutCheck::Trust => cfg!(debug_assertions),
            PutCheck::Skip => false,
        };
        if run_bytecheck {
            crate::archive::validate_at::<T::Archived>(payload, root_pos).map_err(|e| {
                Error::Serialize {
                    entry: name.to_owned(),
                    message: format!("the archive rkyv wrote does not validate: {e}"),
                }
            })?;
        }
        // A row only where nothing but this writer can change the bytes before `seal`.
        if trusted && self.seg.protected() {
            self.validated.push((
                self.entries.len(),
                crate::trust::key_of::<T::Archived>(),
                crate::archive::passes::<T::Archived>,
            ));
        }
        self.push(Entry {
            name: name.to_owned(),
            kind: Kind::Archived,
            prim: Prim::Opaque,
            flags: if trusted { format::FLAG_VALIDATED } else { 0 },
            align: align_of::<T::Archived>() as u32,
            offset: start as u64,
            len: len as u64,
            root_pos: root_pos as u64,
            count: 1,
            elem_size: size_of::<T::Archived>() as u64,
            type_hash: format::checksum(type_name.as_bytes()),
            type_name: type_name.to_owned(),
            checksum: format::checksum(payload),
            prim_arg: 0,
            shape: None,
        });
        Ok(())
    }

    /// [`put`](Self::put) without the validation pass: faster to build (bytecheck runs at about
    /// 1 GB/s), but the entry carries no proof of validity, so every reader validates it on its
    /// first access, even on a sealed memfd that would otherwise skip that. Use it for an entry
    /// that is written once and read by few processes, or read by one that opens it with
    /// validation anyway.
    ///
    /// Safe either way: it only moves the validation from the writer to the readers.
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// let mut b = shmarena::ArenaOptions::new().create()?;
    /// b.put_unvalidated("words", &vec!["a".to_string(), "b".to_string()])?;
    /// let arena = b.seal()?;
    /// assert_eq!(arena.get::<Vec<String>>("words")?.len(), 2); // validated here
    /// # Ok(()) }
    /// ```
    pub fn put_unvalidated<T>(&mut self, name: &str, value: &T) -> Result<()>
    where
        T: Archive + for<'a, 'w> Serialize<ArenaSerializer<'a, 'w>>,
        T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
    {
        self.put_as(name, value, std::any::type_name::<T>(), PutCheck::Skip)
    }

    /// [`put`](Self::put) without the validation pass, on the caller's promise that the bytes
    /// rkyv writes for `value` are a valid archive: the entry is trusted as if `put` had
    /// validated it, so this process and the readers that inherit its trust (fork children,
    /// [`share_with`](crate::Arena::share_with), service sessions, Python pickles) read it
    /// without bytecheck. Its `put` is as fast as [`put_unvalidated`](Self::put_unvalidated);
    /// [`seal`](Self::seal) still checks the entry once on the sealed bytes before it keeps the
    /// row (as it does for every `put` entry: another process of the user could have written to
    /// the building memfd; see docs/DESIGN.md, "The writer's bytes are its own").
    ///
    /// Debug builds (`debug_assertions`) validate anyway and return
    /// [`Error::Serialize`] for an archive that does not validate.
    ///
    /// # Safety
    ///
    /// Every `rkyv::Serialize` and `rkyv::Archive` impl that serializing `value` runs (`T`'s
    /// own and those of every type inside it, including `#[rkyv(with = ...)]` wrappers) must
    /// write a valid archive of what it resolves to. rkyv's own impls for core and std types
    /// and the impls that `#[derive(rkyv::Archive, rkyv::Serialize)]` generates do; a
    /// hand-written impl may not (a safe `resolve` can emplace a relative pointer or a length
    /// that does not match what `serialize` wrote), and a reader that trusts such an entry
    /// reads out of bounds. When in doubt, use [`put`](Self::put).
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// use std::collections::HashMap;
    /// let lexicon: HashMap<String, u32> = [("apple".to_string(), 1)].into();
    /// let mut b = shmarena::ArenaOptions::new().create()?;
    /// // SAFETY: `HashMap<String, u32>` is serialized by rkyv's own impls.
    /// unsafe { b.put_trusted("lexicon", &lexicon)? };
    /// let arena = b.seal()?;
    /// assert!(arena.trusts::<HashMap<String, u32>>("lexicon"));
    /// # Ok(()) }
    /// ```
    pub unsafe fn put_trusted<T>(&mut self, name: &str, value: &T) -> Result<()>
    where
        T: Archive + for<'a, 'w> Serialize<ArenaSerializer<'a, 'w>>,
        T::Archived: Portable + for<'a> CheckBytes<ArenaValidator<'a>>,
    {
        self.put_as(name, value, std::any::type_name::<T>(), PutCheck::Trust)
    }

    /// Copies a slice of plain-old-data elements into the segment, 64-byte aligned.
    pub fn put_slice<T: Pod>(&mut self, name: &str, items: &[T]) -> Result<()> {
        let type_name = std::any::type_name::<T>();
        self.put_pod_with(
            name,
            Kind::Pod,
            Prim::from_type_name(type_name),
            type_name,
            size_of::<T>(),
            align_of::<T>(),
            items.len(),
            |dst| Some(copy_and_checksum(dst, bytemuck::cast_slice(items))),
        )
    }

    /// Copies an n-dimensional array of plain-old-data elements, in row-major (C) order, and
    /// records its shape in the table of contents (format version 2). Read the shape back with
    /// [`Arena::entry`] and [`Entry::dims`](crate::format::Entry::dims); [`Arena::slice`]
    /// reads the elements as before.
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// let mut b = shmarena::ArenaOptions::new().create()?;
    /// b.put_array("grid", &[0f64; 12], &[3, 4])?;
    /// let arena = b.seal()?;
    /// assert_eq!(arena.entry("grid")?.dims(), [3, 4]);
    /// assert_eq!(arena.slice::<f64>("grid")?.len(), 12);
    /// # Ok(()) }
    /// ```
    pub fn put_array<T: Pod>(&mut self, name: &str, items: &[T], shape: &[u64]) -> Result<()> {
        check_shape(name, items.len(), shape, std::mem::size_of::<T>())?;
        self.put_slice(name, items)?;
        self.last_entry().shape = Some(shape.to_vec());
        Ok(())
    }

    /// Copies the bytes of an n-dimensional array whose element type is one of the format's
    /// primitives, Rust-native or not (`bool`, `f16`, complex, datetime, fixed-width strings;
    /// see docs/FORMAT.md): `prim_arg` is the unit code of a datetime or timedelta (else 0),
    /// `elem_size` the bytes of one element, `data` the elements in row-major order, in this
    /// machine's byte order. The entry's type name is `type_name`, else the primitive's
    /// [`dtype_name`](crate::format::Entry::dtype_name). [`Prim::Opaque`] elements are aligned
    /// to the largest power of two up to 16 that divides `elem_size`.
    #[allow(clippy::too_many_arguments)]
    pub fn put_raw_array(
        &mut self,
        name: &str,
        prim: Prim,
        prim_arg: u8,
        elem_size: usize,
        data: &[u8],
        shape: &[u64],
        type_name: Option<&str>,
    ) -> Result<()> {
        let invalid = |reason: String| Error::InvalidArray {
            entry: name.to_owned(),
            reason,
        };
        let opaque_align = (elem_size > 0).then(|| 1usize << elem_size.trailing_zeros().min(4));
        let align = prim.align().or(opaque_align);
        let (Some(align), true) = (align, prim.fits(elem_size as u64)) else {
            return Err(invalid(format!(
                "primitive {} cannot have {elem_size}-byte elements",
                prim.as_str()
            )));
        };
        let timed = matches!(prim, Prim::DateTime64 | Prim::TimeDelta64);
        if (timed && usize::from(prim_arg) >= format::TIME_UNITS.len()) || (!timed && prim_arg != 0)
        {
            return Err(invalid(format!(
                "parameter {prim_arg} is not valid for primitive {}",
                prim.as_str()
            )));
        }
        if data.len() % elem_size != 0 {
            return Err(invalid(format!(
                "{} bytes are not whole {elem_size}-byte elements",
                data.len()
            )));
        }
        let count = data.len() / elem_size;
        check_shape(name, count, shape, elem_size)?;
        let probe = Entry {
            name: String::new(),
            kind: Kind::Pod,
            prim,
            flags: 0,
            align: align as u32,
            offset: 0,
            len: 0,
            root_pos: 0,
            count: 0,
            elem_size: elem_size as u64,
            type_hash: 0,
            type_name: String::new(),
            checksum: 0,
            prim_arg,
            shape: None,
        };
        let type_name = type_name.map_or_else(|| probe.dtype_name(), str::to_owned);
        self.put_pod_with(
            name,
            Kind::Pod,
            prim,
            &type_name,
            elem_size,
            align,
            count,
            |dst| Some(copy_and_checksum(dst, data)),
        )?;
        let entry = self.last_entry();
        entry.prim_arg = prim_arg;
        entry.shape = Some(shape.to_vec());
        Ok(())
    }

    /// Like [`put_slice_with`](Self::put_slice_with) for an n-dimensional array: reserves the
    /// elements of `shape` (row-major), lets `fill` write them in place and records the shape.
    pub fn put_array_with<T: Pod>(
        &mut self,
        name: &str,
        shape: &[u64],
        fill: impl FnOnce(&mut [T]),
    ) -> Result<()> {
        let count = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| Error::InvalidArray {
                entry: name.to_owned(),
                reason: format!("shape {shape:?} holds more elements than fit in memory"),
            })?;
        check_shape(name, count, shape, std::mem::size_of::<T>())?;
        self.put_slice_with(name, count, fill)?;
        self.last_entry().shape = Some(shape.to_vec());
        Ok(())
    }

    fn last_entry(&mut self) -> &mut Entry {
        self.entries.last_mut().expect("an entry was just added")
    }

    /// Reserves `count` elements of `T` in the segment and lets `fill` write them in place, with
    /// no source copy. The slice starts zeroed. If `fill` panics, the writer is unchanged.
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// let mut b = shmarena::ArenaOptions::new().create()?;
    /// b.put_slice_with::<f32>("grid", 1000, |dst| {
    ///     for (i, x) in dst.iter_mut().enumerate() {
    ///         *x = i as f32 * 0.5;
    ///     }
    /// })?;
    /// let arena = b.seal()?;
    /// assert_eq!(arena.slice::<f32>("grid")?[10], 5.0);
    /// # Ok(()) }
    /// ```
    pub fn put_slice_with<T: Pod>(
        &mut self,
        name: &str,
        count: usize,
        fill: impl FnOnce(&mut [T]),
    ) -> Result<()> {
        let type_name = std::any::type_name::<T>();
        let prim = Prim::from_type_name(type_name);
        self.put_pod_with(
            name,
            Kind::Pod,
            prim,
            type_name,
            size_of::<T>(),
            align_of::<T>(),
            count,
            |bytes| {
                fill(bytemuck::cast_slice_mut(bytes));
                None
            },
        )
    }

    /// Copies opaque bytes into the segment, 64-byte aligned. Read them back with
    /// [`Arena::bytes`].
    pub fn put_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.put_pod_with(
            name,
            Kind::Bytes,
            Prim::U8,
            "u8",
            1,
            1,
            bytes.len(),
            |dst| Some(copy_and_checksum(dst, bytes)),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn put_pod_with(
        &mut self,
        name: &str,
        kind: Kind,
        prim: Prim,
        type_name: &str,
        elem_size: usize,
        elem_align: usize,
        count: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<u64>,
    ) -> Result<()> {
        self.check_process()?;
        self.check_new_name(name)?;
        if elem_size == 0 {
            // No bytes would hold the count: `()` or `[T; 0]` elements cannot be stored.
            return Err(Error::InvalidArray {
                entry: name.to_owned(),
                reason: format!("its element type {type_name} is zero-sized"),
            });
        }
        let len = elem_size
            .checked_mul(count)
            .ok_or_else(|| Error::TooLarge {
                what: format!("entry {name:?}"),
                size: u64::MAX,
            })?;
        let align = format::POD_ALIGN.max(elem_align);
        let start = self.aligned_pos(align)?;
        let end = start.checked_add(len).ok_or_else(|| Error::TooLarge {
            what: format!("entry {name:?}"),
            size: len as u64,
        })?;
        self.seg.ensure(end)?;
        self.seg.zero_reused(self.pos, end);
        self.seg.note_written(end);
        let dst = &mut self.seg.bytes_mut()[start..end];
        let checksum = match fill(dst) {
            Some(sum) => sum,
            None => format::checksum(&self.seg.bytes()[start..end]),
        };
        self.push(Entry {
            name: name.to_owned(),
            kind,
            prim,
            flags: 0,
            align: elem_align as u32,
            offset: start as u64,
            len: len as u64,
            root_pos: 0,
            count: count as u64,
            elem_size: elem_size as u64,
            type_hash: format::checksum(type_name.as_bytes()),
            type_name: type_name.to_owned(),
            checksum,
            prim_arg: 0,
            shape: None,
        });
        Ok(())
    }

    /// [`Error::WrongProcess`] unless this is the process that created the writer: after
    /// `fork`, the writable mapping is not inherited (`MADV_DONTFORK`), so a write would land in
    /// whatever the child later placed at that address.
    fn check_process(&self) -> Result<()> {
        let current = os::pid();
        if current == self.pid {
            return Ok(());
        }
        Err(Error::WrongProcess {
            what: self.seg.what().to_owned(),
            creator: self.pid,
            current,
        })
    }

    fn check_new_name(&self, name: &str) -> Result<()> {
        validate_entry_name(name)?;
        let taken = self.name_hashes.contains(&name_hash(name))
            && self.entries.iter().any(|e| e.name == name);
        if taken {
            return Err(Error::AlreadyExists {
                what: format!("entry {name:?} in {}", self.seg.what()),
                source: None,
            });
        }
        if self.entries.len() >= u32::MAX as usize {
            return Err(Error::TooLarge {
                what: format!("table of contents of {}", self.seg.what()),
                size: self.entries.len() as u64,
            });
        }
        Ok(())
    }

    fn aligned_pos(&self, align: usize) -> Result<usize> {
        round_up(self.pos as u64, align as u64)
            .and_then(|p| usize::try_from(p).ok())
            .ok_or(Error::TooLarge {
                what: self.seg.what().to_owned(),
                size: self.pos as u64,
            })
    }

    fn push(&mut self, entry: Entry) {
        self.pos = entry.range().end;
        self.name_hashes.insert(name_hash(&entry.name));
        self.entries.push(entry);
    }

    /// Bytes used so far (header and payloads).
    pub fn len(&self) -> u64 {
        self.pos as u64
    }

    /// Whether no entry has been added yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of entries added so far.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The random id of the arena being built.
    pub fn id(&self) -> crate::ArenaId {
        crate::ArenaId(self.header.arena_id)
    }

    /// Writes the table of contents and the sealed header, then makes the arena read-only. Every
    /// arena is built in a private memfd (see [`ArenaOptions::create`](crate::ArenaOptions::create));
    /// sealing:
    /// - named segment or file: writes the finished bytes out to the segment or the temporary
    ///   file (payloads first, the sealed header last) and sets mode 0400; a file is then
    ///   synced to disk and renamed into place;
    /// - then, for every target: unmaps the writable mapping, adds
    ///   `F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL` to the memfd and maps it
    ///   read-only.
    ///
    /// The returned arena always maps that kernel-sealed memfd, the bytes this writer wrote and
    /// validated, so no write to the segment or file, before or after `seal`, can change what it
    /// reads. For a named segment or a file that costs a copy of the arena in memory, for as
    /// long as the arena lives, on top of the segment or file itself; its
    /// [`locator`](Arena::locator) still names the segment or file, which other processes
    /// reach through [`Arena::load_named`] and [`Arena::load_file`] (handles do that).
    ///
    /// The writer is consumed. If sealing fails before anything changed (no room for the
    /// table of contents), [`SealError::into_writer`] gives it back; after that point, a
    /// failure removes everything it made.
    ///
    /// That hand-back is why the error type is [`SealError`], not [`Error`]. It converts into
    /// [`Error`] with `?` (the writer, if any, is dropped then), so in a function returning
    /// [`shmarena::Result`](crate::Result) write `Ok(b.seal()?)`, or
    /// `b.seal().map_err(Into::into)`:
    ///
    /// ```
    /// fn build() -> shmarena::Result<shmarena::Arena> {
    ///     let mut b = shmarena::ArenaOptions::new().create()?;
    ///     b.put_slice("v", &[1u8, 2])?;
    ///     Ok(b.seal()?)
    /// }
    /// assert_eq!(build().unwrap().slice::<u8>("v").unwrap()[1], 2);
    /// ```
    ///
    /// `return b.seal()` alone does not compile there (the error types differ):
    ///
    /// ```compile_fail
    /// fn build() -> shmarena::Result<shmarena::Arena> {
    ///     let b = shmarena::ArenaOptions::new().create()?;
    ///     return b.seal();
    /// }
    /// ```
    ///
    /// In another process than the writer's (a fork child), it fails with
    /// [`Error::WrongProcess`] and hands the writer back; drop it there, which removes nothing.
    pub fn seal(mut self) -> std::result::Result<Arena, SealError> {
        if let Err(error) = self.check_process() {
            return Err(SealError {
                error,
                writer: Some(Box::new(self)),
            });
        }
        let (toc_off, total, toc) = match self.place_toc() {
            Ok(placed) => placed,
            // Nothing has changed yet: hand the writer back.
            Err(error) => {
                return Err(SealError {
                    error,
                    writer: Some(Box::new(self)),
                })
            }
        };
        self.seg.zero_reused(self.pos, total);
        self.seg.bytes_mut()[toc_off..total].copy_from_slice(&toc);
        self.header.state = format::STATE_SEALED;
        // The lowest version that can express the entries, so older readers read what they can.
        self.header.version = if self.entries.iter().any(Entry::needs_v2) {
            format::FORMAT_VERSION
        } else {
            format::MIN_FORMAT_VERSION
        };
        self.header.toc_offset = toc_off as u64;
        self.header.toc_len = toc.len() as u64;
        self.header.total_len = total as u64;
        self.header.entry_count = self.entries.len() as u32;
        self.header.toc_checksum = format::checksum(&toc);
        let head = self.header.encode();
        self.seg.bytes_mut()[..format::HEADER_LEN].copy_from_slice(&head);
        self.finish(total).map_err(|error| SealError {
            error,
            writer: None,
        })
    }

    /// Encodes the table of contents and makes room for it: `(offset, total length, bytes)`.
    fn place_toc(&mut self) -> Result<(usize, usize, Vec<u8>)> {
        let toc = format::encode_toc(&self.entries);
        let toc_off = self.aligned_pos(8)?;
        let total = toc_off.checked_add(toc.len()).ok_or(Error::TooLarge {
            what: self.seg.what().to_owned(),
            size: u64::MAX,
        })?;
        self.seg.ensure(total)?;
        Ok((toc_off, total, toc))
    }

    /// Writes a named segment's or file's copy out, seals the memfd and maps it as the arena.
    fn finish(self, total: usize) -> Result<Arena> {
        let ArenaWriter {
            seg,
            mut site,
            locator,
            validated,
            ..
        } = self;
        let (map, file, mirror, what) = seg.into_parts();
        let io = |context: &str| {
            let what = what.clone();
            let context = format!("{context} {what}");
            move |e| Error::os(context, &what, e)
        };
        // A named segment or file is written out from the memfd: its payloads first, then the
        // sealed header, so a reader that sees the header sealed finds every byte it names. The
        // writer never maps the segment or file, so nothing done to it can reach this
        // process's memory, and the arena returned here reads the memfd.
        if let Some(mirror) = &mirror {
            let bytes = &map.bytes()[..total];
            write_out(
                mirror,
                &bytes[format::HEADER_LEN..],
                format::HEADER_LEN as u64,
            )
            .and_then(|()| write_out(mirror, &bytes[..format::HEADER_LEN], 0))
            .and_then(|()| mirror.set_len(total as u64))
            .map_err(io("writing out"))?;
        }
        // Unmap the writable mapping: a memfd refuses F_SEAL_WRITE while one exists.
        drop(map);
        os::seal_memfd(&file).map_err(|e| Error::Io {
            context: format!(
                "sealing {what} (EBUSY means another process still maps it writable, for \
                 example a child forked during the build)"
            ),
            source: e,
        })?;
        let backing = match (&mut site, &mirror) {
            (Site::Memfd, _) | (_, None) => Backing::Memfd,
            (Site::Shm { name, unlink, .. }, Some(mirror)) => {
                os::chmod(mirror, 0o400).map_err(io("making read-only"))?;
                // The arena now owns the name and unlinks it on drop unless persisted.
                *unlink = false;
                Backing::Shm {
                    name: name.clone(),
                    owner_pid: os::pid(),
                }
            }
            (
                Site::File {
                    tmp,
                    path,
                    overwrite,
                    done,
                    ..
                },
                Some(mirror),
            ) => {
                mirror.sync_all().map_err(io("syncing"))?;
                os::chmod(mirror, 0o400).map_err(io("making read-only"))?;
                let renamed = if *overwrite {
                    os::rename_replace(tmp, path)
                } else {
                    os::rename_noreplace(tmp, path)
                };
                renamed.map_err(io(&format!("renaming {} to", tmp.display())))?;
                *done = true;
                Backing::File
            }
        };
        // The arena maps the sealed memfd; a named segment's name or a file's path stays its
        // locator, for handles and other processes.
        Arena::from_sealed_segment(file, backing, locator, &validated)
    }
}

/// The key of an entry name in [`ArenaWriter::name_hashes`].
fn name_hash(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// Writes all of `bytes` to `file` at `offset` with `pwrite`, in pieces of at most 64 MiB.
fn write_out(file: &std::fs::File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const PIECE: usize = 64 << 20;
    let mut at = offset;
    for piece in bytes.chunks(PIECE) {
        file.write_all_at(piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// Checks that `shape` holds `count` elements and has at most [`format::MAX_NDIM`] dimensions.
/// The reader's E16 (docs/FORMAT.md) for a shape about to be written.
fn check_shape(name: &str, count: usize, shape: &[u64], elem_size: usize) -> Result<()> {
    let product = format::shape_elements(shape, elem_size as u64);
    if shape.len() > format::MAX_NDIM || product != Some(count as u64) {
        return Err(Error::InvalidArray {
            entry: name.to_owned(),
            reason: format!(
                "shape {shape:?} does not hold {count} elements of {elem_size} bytes in at most \
                 {} dimensions and {} bytes",
                format::MAX_NDIM,
                format::MAX_ARRAY_BYTES
            ),
        });
    }
    Ok(())
}

/// Copies `src` into `dst` (of equal length) and returns the xxh3 checksum of the bytes, hashing
/// each chunk right after copying it, while it is still in cache, instead of reading the whole
/// payload a second time.
fn copy_and_checksum(dst: &mut [u8], src: &[u8]) -> u64 {
    const CHUNK: usize = 128 << 10;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (d, s) in dst.chunks_mut(CHUNK).zip(src.chunks(CHUNK)) {
        d.copy_from_slice(s);
        hasher.update(d);
    }
    hasher.digest()
}

/// A failed [`ArenaWriter::seal`]. If it failed before changing anything (no space left for the
/// table of contents, say), it hands the writer back, so the work is not lost: free some space
/// and seal again.
///
/// It converts into [`Error`], so `writer.seal()?` works in functions returning
/// [`shmarena::Result`](crate::Result).
pub struct SealError {
    error: Error,
    writer: Option<Box<ArenaWriter>>,
}

impl SealError {
    /// What went wrong.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The writer, unchanged, if sealing failed before it changed anything.
    pub fn into_writer(self) -> Option<ArenaWriter> {
        self.writer.map(|w| *w)
    }

    /// The writer, unchanged, if sealing failed before it changed anything.
    #[deprecated(note = "renamed into_writer")]
    pub fn into_builder(self) -> Option<ArenaWriter> {
        self.into_writer()
    }

    /// The error, dropping the writer (which removes what it made).
    pub fn into_error(self) -> Error {
        self.error
    }
}

impl std::fmt::Debug for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealError")
            .field("error", &self.error)
            .field("writer_returned", &self.writer.is_some())
            .finish()
    }
}

/// Says only that sealing failed; [`source`](std::error::Error::source) returns the cause.
impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.writer.is_some() {
            f.write_str("cannot seal the arena (the writer is handed back unchanged)")
        } else {
            f.write_str("cannot seal the arena")
        }
    }
}

impl std::error::Error for SealError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<SealError> for Error {
    fn from(e: SealError) -> Error {
        e.error
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunked_checksum_equals_the_one_shot_checksum() {
        for len in [
            0,
            1,
            4095,
            128 << 10,
            (128 << 10) + 1,
            1 << 20,
            (3 << 20) + 17,
        ] {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            let mut dst = vec![0u8; len];
            let sum = super::copy_and_checksum(&mut dst, &src);
            assert_eq!(dst, src);
            assert_eq!(sum, crate::format::checksum(&src), "len {len}");
        }
    }
}
