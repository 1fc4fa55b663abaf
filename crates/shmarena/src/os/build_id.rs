//! The identity of the object file that holds this crate's code: the executable for a Rust
//! binary, the extension module for the Python bindings. Two processes with the same build
//! identity run the same code, so a `TypeId` digest means the same type in both.

use std::io::Read;
use std::sync::OnceLock;

/// The build identity of this process's copy of shmarena: the ELF build-id note of the object
/// file that contains this function, or else an xxh3-128 of that file's bytes. Computed once.
/// All zeros if neither can be read (then no channel row is ever accepted: see
/// [`build_id_known`]).
pub(crate) fn build_id() -> [u8; 16] {
    static ID: OnceLock<[u8; 16]> = OnceLock::new();
    *ID.get_or_init(|| compute().unwrap_or([0; 16]))
}

/// Whether [`build_id`] identifies anything (a zero identity matches nothing).
pub(crate) fn build_id_known() -> bool {
    build_id() != [0; 16]
}

fn compute() -> Option<[u8; 16]> {
    let here = build_id as fn() -> [u8; 16] as usize;
    // The loaded object's own note, read in memory (no system call); the file otherwise.
    if let Some(note) = loaded_build_id(here) {
        return Some(xxhash_rust::xxh3::xxh3_128(&note).to_le_bytes());
    }
    // Read line by line and stop at the mapping: the kernel then formats only the lines before
    // it (for an executable, the first few), not the whole table.
    let maps = std::io::BufReader::new(std::fs::File::open("/proc/self/maps").ok()?);
    let (range, path) = std::io::BufRead::lines(maps).find_map(|line| {
        let line = line.ok()?;
        let mut cols = line.split_whitespace();
        let range = cols.next()?;
        let (lo, hi) = range.split_once('-')?;
        let lo = usize::from_str_radix(lo, 16).ok()?;
        let hi = usize::from_str_radix(hi, 16).ok()?;
        let path = cols.nth(4)?;
        (lo <= here && here < hi).then(|| (range.to_owned(), path.to_owned()))
    })?;
    // The mapping's own file, even if its path was replaced since; the path otherwise.
    let mut file = std::fs::File::open(format!("/proc/self/map_files/{range}"))
        .or_else(|_| std::fs::File::open(&path))
        .ok()?;
    if let Some(note) = elf_build_id(&file) {
        return Some(xxhash_rust::xxh3::xxh3_128(&note).to_le_bytes());
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    Some(xxhash_rust::xxh3::xxh3_128(&bytes).to_le_bytes())
}

/// The `NT_GNU_BUILD_ID` note of the loaded object (executable or shared library) whose
/// readable segments contain address `here`, read from memory through `dl_iterate_phdr`.
fn loaded_build_id(here: usize) -> Option<Vec<u8>> {
    const PT_LOAD: u32 = 1;
    const PT_NOTE: u32 = 4;
    const PF_R: u32 = 4;
    struct Search {
        here: usize,
        found: Option<Vec<u8>>,
    }
    /// Called by the loader once per loaded object, with the loader's lock held; it allocates
    /// but never panics (all arithmetic is checked), so no unwind crosses the C frame.
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&mut Search` passed to `dl_iterate_phdr` below, alive and not
        // otherwise borrowed for the whole call; `info` points to a valid `dl_phdr_info` for the
        // duration of this callback (the loader's contract).
        let (search, info) = unsafe { (&mut *data.cast::<Search>(), &*info) };
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: the loader gives `dlpi_phnum` program headers at `dlpi_phdr`, mapped for as
        // long as the object is loaded, which it stays during the callback.
        let phdrs =
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        let base = info.dlpi_addr as usize;
        let range = |vaddr: u64, len: u64| -> Option<(usize, usize)> {
            let start = base.checked_add(usize::try_from(vaddr).ok()?)?;
            Some((start, start.checked_add(usize::try_from(len).ok()?)?))
        };
        let loads: Vec<(usize, usize)> = phdrs
            .iter()
            .filter(|p| p.p_type == PT_LOAD && p.p_flags & PF_R != 0)
            .filter_map(|p| range(p.p_vaddr, p.p_filesz))
            .collect();
        if !loads
            .iter()
            .any(|&(lo, hi)| lo <= search.here && search.here < hi)
        {
            return 0;
        }
        for p in phdrs.iter().filter(|p| p.p_type == PT_NOTE) {
            let Some((lo, hi)) = range(p.p_vaddr, p.p_memsz) else {
                continue;
            };
            // Only a note that lies inside a readable, file-backed loaded segment is read.
            if !loads.iter().any(|&(l, h)| l <= lo && hi <= h) {
                continue;
            }
            // SAFETY: `lo..hi` lies inside a readable PT_LOAD segment of this loaded object
            // (checked just above), which the loader mapped with its file contents and keeps
            // mapped while the object is loaded; the bytes are never written after loading.
            let notes = unsafe { std::slice::from_raw_parts(lo as *const u8, hi - lo) };
            if let Some(id) = find_build_id(notes) {
                search.found = Some(id.to_vec());
                break;
            }
        }
        1 // our object: stop, with or without a note
    }
    let mut search = Search { here, found: None };
    // SAFETY: `visit` upholds the callback contract above; `search` outlives the call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(visit),
            std::ptr::from_mut(&mut search).cast::<libc::c_void>(),
        )
    };
    search.found
}

/// `len` bytes at `offset` of `file` (at most 1 MiB), if it has them.
fn read_at(file: &std::fs::File, offset: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    if len > 1 << 20 {
        return None;
    }
    let mut b = vec![0u8; len];
    file.read_exact_at(&mut b, offset).ok()?;
    Some(b)
}

/// The descriptor of the `NT_GNU_BUILD_ID` note of a 64-bit little-endian ELF file, if any,
/// read with a few `pread`s (the ELF header, the program headers, the note segments).
fn elf_build_id(file: &std::fs::File) -> Option<Vec<u8>> {
    let head = read_at(file, 0, 64)?;
    let u16_at = |b: &[u8], i: usize| Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?));
    let u32_at = |b: &[u8], i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let u64_at = |b: &[u8], i: usize| Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
    // ELF magic, ELFCLASS64, ELFDATA2LSB.
    if head.get(0..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = u64_at(&head, 0x20)?;
    let phentsize = usize::from(u16_at(&head, 0x36)?);
    let phnum = usize::from(u16_at(&head, 0x38)?);
    if phentsize < 56 {
        return None;
    }
    let phdrs = read_at(file, phoff, phentsize.checked_mul(phnum)?)?;
    for ph in phdrs.chunks_exact(phentsize) {
        const PT_NOTE: u32 = 4;
        if u32_at(ph, 0)? != PT_NOTE {
            continue;
        }
        let notes = read_at(file, u64_at(ph, 8)?, usize::try_from(u64_at(ph, 32)?).ok()?)?;
        if let Some(id) = find_build_id(&notes) {
            return Some(id.to_vec());
        }
    }
    None
}

/// The `NT_GNU_BUILD_ID` descriptor in a note segment's bytes.
fn find_build_id(notes: &[u8]) -> Option<&[u8]> {
    let word = |i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(notes.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let mut at = 0;
    while at + 12 <= notes.len() {
        let (namesz, descsz, kind) = (word(at)?, word(at + 4)?, word(at + 8)?);
        let name_at = at + 12;
        let desc_at = name_at.checked_add(namesz.div_ceil(4) * 4)?;
        let end = desc_at.checked_add(descsz.div_ceil(4) * 4)?;
        const NT_GNU_BUILD_ID: usize = 3;
        if kind == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz)? == b"GNU\0" {
            return notes.get(desc_at..desc_at + descsz);
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_build_has_an_identity() {
        assert!(super::build_id_known());
        assert_eq!(super::build_id(), super::build_id());
    }

    #[test]
    fn the_note_in_memory_is_the_note_in_the_file() {
        let exe = std::fs::File::open("/proc/self/exe").unwrap();
        let here = super::build_id as fn() -> [u8; 16] as usize;
        assert_eq!(super::loaded_build_id(here), super::elf_build_id(&exe));
    }

    #[test]
    fn the_test_binary_has_a_build_id_note() {
        let exe = std::fs::File::open("/proc/self/exe").unwrap();
        let id = super::elf_build_id(&exe);
        // Debian's linker adds one by default; other toolchains may not (then the hash is used).
        if let Some(id) = id {
            assert!(!id.is_empty() && id.len() <= 64);
        }
    }
}
