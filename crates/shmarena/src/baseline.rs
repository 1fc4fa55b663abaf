//! The raw floor that benchmarks compare the library with: the same `fstat` and read-only
//! `mmap` that opening an arena makes, with none of its checks. It exists so that the benchmark
//! crate can measure that floor without `unsafe` of its own; applications want
//! [`Arena::open`](crate::Arena::open) instead.

use std::fs::File;
use std::io;

use crate::os;

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
/// assert_eq!(shmarena::baseline::map_and_touch(&file)?, 7);
/// # std::fs::remove_file(&path)?;
/// # Ok(()) }
/// ```
pub fn map_and_touch(file: &File) -> io::Result<u64> {
    let info = os::file_info(file)?;
    let len =
        usize::try_from(info.size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot map an empty file",
        ));
    }
    let map = os::MapRo::new(file, len)?;
    let mut first = [0u8; 8];
    let n = len.min(8);
    first[..n].copy_from_slice(&map.bytes()[..n]);
    Ok(u64::from_le_bytes(first))
}

/// A fresh writable segment that [`copy_into_fresh_segment`] filled; dropping it unmaps and
/// frees it. Kept separate so a benchmark can leave the freeing out of its timing.
pub struct FreshSegment {
    map: os::MapMut,
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
/// let seg = shmarena::baseline::copy_into_fresh_segment(&[1u8; 10_000])?;
/// drop(seg); // unmaps and frees it
/// # Ok(()) }
/// ```
pub fn copy_into_fresh_segment(bytes: &[u8]) -> io::Result<FreshSegment> {
    const PAGE: usize = 4096;
    let len = bytes.len().max(1).div_ceil(PAGE) * PAGE;
    let file = os::memfd_create("shmarena-baseline")?;
    os::reserve(&file, 0, len as u64)?;
    let mut map = os::MapMut::new(&file, len)?;
    map.bytes_mut()[..bytes.len()].copy_from_slice(bytes);
    Ok(FreshSegment { map, _file: file })
}
