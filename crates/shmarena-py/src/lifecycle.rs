//! What `shmarena.build` checks before it creates a segment, the messages (with hints) for what
//! it finds, `shmarena.remove` for named arenas, and the builder's thread check.
//!
//! Named segments are files in `/dev/shm` (that is what `shm_open` and `shm_unlink` do on
//! Linux), so removing one is a plain `unlink` there; [`shmarena::inspect::status`] reads its
//! header first, so only shmarena arenas are removed, and never one whose builder still runs
//! (unless asked to).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread::ThreadId;

use pyo3::prelude::*;
use shmarena::inspect::FileKey;
use shmarena::Locator;

use crate::errors::{chain, lib_err, ShmarenaError, WrongThreadError};
use crate::handle;

/// Where `/dev/shm` names live.
const SHM_DIR: &str = "/dev/shm";

/// Raises `WrongThreadError` unless this is the thread that made the builder.
pub(crate) fn check_thread(owner: ThreadId) -> PyResult<()> {
    if std::thread::current().id() == owner {
        return Ok(());
    }
    Err(WrongThreadError::new_err(
        "this builder belongs to the thread that called shmarena.build(): build on one thread, \
         then hand the sealed arena (or its views) to other threads",
    ))
}

/// A file arena's directory must exist: otherwise the error would name the temporary file the
/// builder writes first, not the missing directory.
pub(crate) fn check_file_target(path: &Path) -> PyResult<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => return Ok(()),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ShmarenaError::new_err(format!(
            "cannot build file arena {}: {} is not a directory",
            path.display(),
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ShmarenaError::new_err(format!(
            "cannot build file arena {}: directory {} does not exist (create it first, \
                 e.g. os.makedirs({:?}, exist_ok=True))",
            path.display(),
            dir.display(),
            dir.display().to_string()
        ))),
        Err(e) => Err(ShmarenaError::new_err(format!(
            "cannot build file arena {}: directory {}: {e}",
            path.display(),
            dir.display()
        ))),
    }
}

/// Who made an existing named segment, as far as its header tells.
enum Maker {
    /// Not a shmarena arena (or its header does not parse).
    NotAnArena(String),
    /// This process.
    Us,
    /// Another process that still runs.
    Running(u32),
    /// A process that exited without removing it.
    Gone(u32),
}

/// The maker of segment `name` and the segment's device and inode, or `None` if there is no
/// such segment.
fn maker(name: &str) -> PyResult<Option<(Maker, FileKey)>> {
    // Validated here too, so that no caller can make this read outside /dev/shm.
    let name = shmarena::validate_segment_name(name).map_err(lib_err)?;
    let locator = Locator::Shm {
        name: name.to_owned(),
    };
    let status = match shmarena::inspect::status(&locator) {
        Ok(s) => s,
        Err(shmarena::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(lib_err(e)),
    };
    let key = status.key;
    let owner = match (&status.header, status.owner) {
        (Ok(_), Some(o)) => o,
        (Err(e), _) => return Ok(Some((Maker::NotAnArena(chain(e)), key))),
        (Ok(_), None) => {
            return Ok(Some((Maker::NotAnArena("no owner recorded".into()), key)));
        }
    };
    let maker = if owner.pid == std::process::id() && owner.alive {
        Maker::Us
    } else if owner.alive {
        Maker::Running(owner.pid)
    } else {
        Maker::Gone(owner.pid)
    };
    Ok(Some((maker, key)))
}

/// Removes the name of segment `name` (validated, without its leading `/`, and checked with
/// [`maker`] by the caller, which found the segment `key`). Arenas this process built under
/// that name are marked persisted first, so that dropping them later does not unlink a new
/// segment that took the name.
fn unlink(name: &str, key: FileKey) -> PyResult<()> {
    let path = PathBuf::from(SHM_DIR).join(name);
    // The name may have been given to another segment since it was checked.
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        if (m.dev(), m.ino()) != (key.dev, key.ino) {
            return Err(ShmarenaError::new_err(format!(
                "named arena {name:?} was replaced while being removed; try again"
            )));
        }
    }
    for s in handle::cached() {
        if matches!(s.arena.locator(), Locator::Shm { name: n } if n == name) {
            s.arena.persist();
        }
    }
    std::fs::remove_file(&path).map_err(|e| {
        ShmarenaError::new_err(format!(
            "cannot remove named arena {name:?} ({}): {e}",
            path.display()
        ))
    })
}

/// The refusal for a segment that is not an arena or whose builder still runs, or `None` if it
/// may be removed.
fn refusal(name: &str, maker: &Maker, doing: &str, force: bool) -> Option<PyErr> {
    match maker {
        Maker::NotAnArena(why) => Some(ShmarenaError::new_err(format!(
            "cannot {doing} /dev/shm/{name}: it is not a shmarena arena ({why}); pick another \
             name, or remove it with os.remove({:?}) if you know what it is",
            format!("{SHM_DIR}/{name}")
        ))),
        Maker::Running(pid) if !force => Some(ShmarenaError::new_err(format!(
            "cannot {doing} named arena {name:?}: process {pid}, which built it, is still \
             running (it removes the name when it closes the arena or exits); open it with \
             shmarena.open(name='{name}'), or pass force=True to remove the name anyway"
        ))),
        _ => None,
    }
}

/// Before `build(name=N, overwrite=True)`: removes an existing segment `N` unless it is not an
/// arena or another running process built it.
pub(crate) fn clear_for_overwrite(name: &str) -> PyResult<()> {
    let name = shmarena::validate_segment_name(name).map_err(lib_err)?;
    let Some((m, key)) = maker(name)? else {
        return Ok(());
    };
    if let Some(e) = refusal(name, &m, "overwrite", false) {
        return Err(e);
    }
    match unlink(name, key) {
        Err(e) if !PathBuf::from(SHM_DIR).join(name).exists() => {
            drop(e); // removed meanwhile by someone else: the name is free either way
            Ok(())
        }
        other => other,
    }
}

/// The error for `build()` when its target exists, with a hint on what to do; other library
/// errors unchanged.
pub(crate) fn create_error(e: shmarena::Error, name: Option<&str>) -> PyErr {
    if !matches!(e, shmarena::Error::AlreadyExists { .. }) {
        return lib_err(e);
    }
    let base = chain(&e);
    let hint = match name {
        None => "pass overwrite=True to replace it".to_owned(),
        Some(name) => match maker(name).map(|m| m.map(|(m, _)| m)) {
            Ok(Some(Maker::Us)) => format!(
                "this process built it: close that arena first (arena.close()), or pass \
                 overwrite=True, or use another name; open it with shmarena.open(name='{name}')"
            ),
            Ok(Some(Maker::Running(pid))) => format!(
                "process {pid}, which built it, is still running: open it with \
                 shmarena.open(name='{name}'), or use another name"
            ),
            Ok(Some(Maker::Gone(pid))) => format!(
                "it was left behind by process {pid}, which exited without removing it (killed, \
                 or built with persist=True): remove it with shmarena.remove('{name}'), or pass \
                 overwrite=True"
            ),
            Ok(Some(Maker::NotAnArena(_))) => {
                "it is not a shmarena arena: use another name".to_owned()
            }
            Ok(None) | Err(_) => format!(
                "remove it with shmarena.remove('{name}') if it is left over, or pass \
                 overwrite=True"
            ),
        },
    };
    ShmarenaError::new_err(format!("{base}: {hint}"))
}

/// Removes the name of a named arena: one left behind by a builder that was killed or built it
/// with `persist=True`, or one this process built. Processes that mapped it keep reading it.
/// Refuses a segment that is not a shmarena arena, and one whose builder still runs unless
/// `force`; a missing name is an error unless `missing_ok`.
#[pyfunction]
#[pyo3(signature = (name, *, missing_ok = false, force = false))]
pub(crate) fn remove(name: &str, missing_ok: bool, force: bool) -> PyResult<()> {
    let name = shmarena::validate_segment_name(name).map_err(lib_err)?;
    let Some((m, key)) = maker(name)? else {
        if missing_ok {
            return Ok(());
        }
        return Err(ShmarenaError::new_err(format!(
            "no named arena {name:?} in {SHM_DIR} (pass missing_ok=True to ignore this)"
        )));
    };
    if let Some(e) = refusal(name, &m, "remove", force) {
        return Err(e);
    }
    unlink(name, key)
}
