//! Reading an arena's first bytes without mapping it.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::format::{FormatError, Header, HEADER_LEN};
use crate::locator::Locator;
use crate::os;

/// Reads up to the first [`HEADER_LEN`] bytes and parses them as a header.
fn read_header(file: &mut File) -> io::Result<std::result::Result<Header, FormatError>> {
    let mut buf = Vec::with_capacity(HEADER_LEN);
    file.by_ref()
        .take(HEADER_LEN as u64)
        .read_to_end(&mut buf)?;
    Ok(Header::parse(&buf))
}

/// An open segment: what `fstat` says, its header, and whether it is kernel-sealed.
pub(crate) struct Probe {
    pub(crate) meta: fs::Metadata,
    pub(crate) header: std::result::Result<Header, FormatError>,
    /// It carries the write, grow and shrink seals (only a memfd can).
    pub(crate) sealed: bool,
}

pub(crate) fn probe_path(path: &Path, follow: bool) -> io::Result<Probe> {
    let mut file = os::open_ro_nonblock(path, follow)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Ok(Probe {
            meta,
            header: Err(FormatError::BadMagic),
            sealed: false,
        });
    }
    let sealed = os::seals(&file).is_some_and(|s| s.immutable());
    let header = read_header(&mut file)?;
    Ok(Probe {
        meta,
        header,
        sealed,
    })
}

/// The path a locator is reached through.
pub(crate) fn locator_path(locator: &Locator) -> (PathBuf, bool) {
    match locator {
        Locator::Memfd { pid, fd } => (os::fd_path(*pid, *fd), true),
        Locator::Shm { name } => (Path::new(os::SHM_DIR).join(name), false),
        Locator::File { path } => (path.clone(), false),
    }
}
