//! Noticing replaced images: an inotify watch on each image's directory wakes the main loop
//! when a watched file name is renamed onto or written and closed; the main loop also checks
//! every `--poll-ms`, for what inotify cannot see.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use rustix::fs::inotify;
use rustix::io::Errno;

/// Why the main loop wakes up.
pub(crate) enum Wake {
    /// SIGTERM or SIGINT: stop.
    Signal,
    /// A watched file name changed: check the images.
    Changed,
}

/// The directory inotify watches for `path`: its parent (`.` for a bare file name).
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Watches the directories of `paths` and sends [`Wake::Changed`] on `tx` each time one of
/// their file names is the target of a rename (`IN_MOVED_TO`: `Arena::save`, `mv`) or a file
/// of that name is closed after writing (`IN_CLOSE_WRITE`: written in place), or when the
/// kernel's event queue overflowed. Watching the directory, not the file, keeps working after
/// a rename replaces the file's inode.
///
/// Fails if inotify cannot be set up (no inotify, or the user's watch limit is reached); the
/// caller then relies on its periodic check alone. If reading events fails later, the thread
/// says so on standard error and ends, with the same result.
pub(crate) fn spawn(paths: &[PathBuf], tx: Sender<Wake>) -> std::io::Result<()> {
    let errno = |e: Errno| std::io::Error::from_raw_os_error(e.raw_os_error());
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC).map_err(errno)?;
    let mask = inotify::WatchFlags::MOVED_TO | inotify::WatchFlags::CLOSE_WRITE;
    // Watch descriptor -> the file names that matter in that directory.
    let mut names: HashMap<i32, HashSet<OsString>> = HashMap::new();
    for path in paths {
        let Some(file) = path.file_name() else {
            continue;
        };
        let dir = dir_of(path);
        let wd = inotify::add_watch(&fd, dir.as_path(), mask).map_err(|e| {
            std::io::Error::new(
                errno(e).kind(),
                format!("watching {}: {}", dir.display(), errno(e)),
            )
        })?;
        names.entry(wd).or_default().insert(file.to_owned());
    }
    std::thread::Builder::new()
        .name("inotify".into())
        .spawn(move || {
            let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
            let mut events = inotify::Reader::new(&fd, &mut buf);
            loop {
                let changed = match events.next() {
                    Ok(ev) => {
                        ev.events().contains(inotify::ReadFlags::QUEUE_OVERFLOW)
                            || ev.file_name().is_some_and(|n| {
                                names.get(&ev.wd()).is_some_and(|set| {
                                    set.contains(std::ffi::OsStr::from_bytes(n.to_bytes()))
                                })
                            })
                    }
                    Err(Errno::INTR) => continue,
                    Err(e) => {
                        eprintln!(
                            "arena-serve: reading inotify events failed ({}); from now on \
                             replaced images are noticed by the periodic check only",
                            errno(e)
                        );
                        return;
                    }
                };
                // The main loop is gone: stop.
                if changed && tx.send(Wake::Changed).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
