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
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let (range, path) = maps.lines().find_map(|line| {
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
    fn the_test_binary_has_a_build_id_note() {
        let exe = std::fs::File::open("/proc/self/exe").unwrap();
        let id = super::elf_build_id(&exe);
        // Debian's linker adds one by default; other toolchains may not (then the hash is used).
        if let Some(id) = id {
            assert!(!id.is_empty() && id.len() <= 64);
        }
    }
}
