//! The raw floor that benchmarks compare the library with: the same `fstat` and read-only
//! `mmap` that opening an arena makes, with none of its checks, and the same memfd, `fallocate`,
//! writable `mmap` and copy that building a POD entry makes, with no header, checksum or seal.
//!
//! This is the one file of the benchmark library with `unsafe` (mapping a file is); each block
//! argues its safety. Applications want [`shmarena::Arena::open`] instead.

use std::fs::File;
use std::io;

use memmap2::{Advice, MmapMut, MmapOptions};
use rustix::fs::{FallocateFlags, MemfdFlags, Mode};

/// Maps all of `file` read-only (`fstat`, `mmap` with `PROT_READ` and `MAP_SHARED`), reads its
/// first 8 bytes through the mapping, unmaps it and returns them as a little-endian `u64`.
///
/// An empty file is an `InvalidInput` error. The same trust rules as for a named arena apply:
/// if another process truncates the file while it is mapped, the read raises SIGBUS.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let path = std::env::temp_dir().join(format!("shmarena-baseline-doc-{}", std::process::id()));
/// std::fs::write(&path, 7u64.to_le_bytes())?;
/// let file = std::fs::File::open(&path)?;
/// assert_eq!(shmarena_bench::baseline::map_and_touch(&file)?, 7);
/// # std::fs::remove_file(&path)?;
/// # Ok(()) }
/// ```
pub fn map_and_touch(file: &File) -> io::Result<u64> {
    let st = rustix::fs::fstat(file)?;
    let len =
        usize::try_from(st.st_size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot map an empty file",
        ));
    }
    // SAFETY: `len` is the file length just read with fstat, so every byte is backed when
    // mapped, and the mapping is PROT_READ, so this process cannot write it. The benchmarks map
    // only files they created themselves and nobody truncates while they are mapped; another
    // process doing so would raise SIGBUS, as documented above.
    let map = unsafe { MmapOptions::new().len(len).map(file)? };
    let mut first = [0u8; 8];
    let n = len.min(8);
    first[..n].copy_from_slice(&map[..n]);
    Ok(u64::from_le_bytes(first))
}

/// A fresh writable segment that [`copy_into_fresh_segment`] filled; dropping it unmaps and
/// frees it. Kept separate so a benchmark can leave the freeing out of its timing.
pub struct FreshSegment {
    map: MmapMut,
    /// Held only to keep the memfd open until the segment is dropped.
    _file: File,
}

impl std::fmt::Debug for FreshSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshSegment")
            .field("len", &self.map.len())
            .finish()
    }
}

/// The raw floor of building a POD entry: creates an anonymous memfd, reserves `bytes.len()`
/// bytes (rounded up to a page) with `fallocate`, maps it writable and copies `bytes` in, so
/// that every page is faulted in by the copy, exactly as the builder's segment is. No header,
/// no checksum, no seal.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let seg = shmarena_bench::baseline::copy_into_fresh_segment(&[1u8; 10_000])?;
/// drop(seg); // unmaps and frees it
/// # Ok(()) }
/// ```
pub fn copy_into_fresh_segment(bytes: &[u8]) -> io::Result<FreshSegment> {
    const PAGE: usize = 4096;
    let len = bytes.len().max(1).div_ceil(PAGE) * PAGE;
    // The same system calls as the library's builder: a CLOEXEC, sealable memfd made 0600,
    // and `fallocate` (or `ftruncate` where that is not supported).
    let fd = rustix::fs::memfd_create(
        "shmarena-baseline",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600))?;
    let file = File::from(fd);
    match rustix::fs::fallocate(&file, FallocateFlags::empty(), 0, len as u64) {
        Ok(()) => {}
        Err(rustix::io::Errno::OPNOTSUPP) => file.set_len(len as u64)?,
        Err(e) => return Err(e.into()),
    }
    // SAFETY: the memfd was just created by this function, is anonymous (no other process can
    // open it by name) and was reserved to `len` bytes above, so every byte of the mapping is
    // backed and nothing else can truncate or write it while it is mapped.
    let mut map = unsafe { MmapOptions::new().len(len).map_mut(&file)? };
    // As the builder does: keep the writable mapping out of forked children.
    map.advise(Advice::DontFork)?;
    map[..bytes.len()].copy_from_slice(bytes);
    Ok(FreshSegment { map, _file: file })
}
