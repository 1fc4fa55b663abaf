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
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    if let Some(note) = elf_build_id(&bytes) {
        return Some(xxhash_rust::xxh3::xxh3_128(note).to_le_bytes());
    }
    Some(xxhash_rust::xxh3::xxh3_128(&bytes).to_le_bytes())
}

/// The descriptor of the `NT_GNU_BUILD_ID` note of a 64-bit little-endian ELF file, if any.
fn elf_build_id(b: &[u8]) -> Option<&[u8]> {
    let u16_at = |i: usize| Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?));
    let u32_at = |i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let u64_at = |i: usize| Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
    // ELF magic, ELFCLASS64, ELFDATA2LSB.
    if b.get(0..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        const PT_NOTE: u32 = 4;
        if u32_at(ph)? != PT_NOTE {
            continue;
        }
        let off = usize::try_from(u64_at(ph + 8)?).ok()?;
        let size = usize::try_from(u64_at(ph + 32)?).ok()?;
        let notes = b.get(off..off.checked_add(size)?)?;
        let mut at = 0;
        while at + 12 <= notes.len() {
            let word = |i: usize| -> Option<usize> {
                Some(u32::from_le_bytes(notes.get(i..i + 4)?.try_into().ok()?) as usize)
            };
            let (namesz, descsz, kind) = (word(at)?, word(at + 4)?, word(at + 8)?);
            let name_at = at + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let end = desc_at + descsz.div_ceil(4) * 4;
            const NT_GNU_BUILD_ID: usize = 3;
            if kind == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz)? == b"GNU\0" {
                return notes.get(desc_at..desc_at + descsz);
            }
            at = end;
        }
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
}
