//! Named segments by name, from any process of their user: removing one
//! ([`Arena::remove_named`]) and waiting for one that is still being built
//! ([`Arena::wait_named`]). Neither maps the segment; they read its header with `pread`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::format::{FormatError, Header, HEADER_LEN};
use crate::inspect::Owner;
use crate::locator::{validate_segment_name, Locator};
use crate::os;

/// What is at a name now: the open segment and its header bytes (possibly fewer than a full
/// header, or zeros, while the writer is still setting it up).
fn read_header(name: &str, what: &str) -> Result<(File, Vec<u8>)> {
    let file = os::shm_open_ro(name).map_err(|e| Error::os(format!("opening {what}"), what, e))?;
    let mut buf = vec![0u8; HEADER_LEN];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::Io {
                    context: format!("reading the header of {what}"),
                    source: e,
                })
            }
        }
    }
    buf.truncate(got);
    Ok((file, buf))
}

impl Arena {
    /// Removes named segment `name` from any process of its user: an orphan whose writer was
    /// killed, a [`persist`](Arena::persist)ed arena nobody needs any more, or one another
    /// process built. Mappings that exist stay valid; no process can open the name any more.
    ///
    /// Refuses ([`Error::PermissionDenied`]) a segment owned by another user, and
    /// ([`Error::Format`] with [`FormatError::BadMagic`]) one that does not start with the
    /// arena magic, so it cannot remove some other program's segment by mistake; a segment
    /// still being built (or left half-built) is removed. [`Error::NotFound`] if no segment has
    /// that name.
    ///
    /// ```
    /// # fn main() -> shmarena::Result<()> {
    /// # let name = format!("doc-rm-{}", std::process::id());
    /// let mut b = shmarena::ArenaOptions::new().named(&name).create()?;
    /// b.put_slice("xs", &[1u32, 2])?;
    /// let arena = b.seal()?;
    /// arena.persist(); // outlives this process...
    /// shmarena::Arena::remove_named(&name)?; // ...until removed, from any process
    /// assert!(matches!(shmarena::Arena::load_named(&name), Err(shmarena::Error::NotFound { .. })));
    /// # Ok(()) }
    /// ```
    pub fn remove_named(name: &str) -> Result<()> {
        let name = validate_segment_name(name)?;
        let what = Locator::Shm {
            name: name.to_owned(),
        }
        .describe();
        let (file, header) = read_header(name, &what)?;
        let info =
            os::file_info(&file).map_err(|e| Error::os(format!("inspecting {what}"), &what, e))?;
        let me = os::euid();
        if info.uid != me {
            return Err(Error::PermissionDenied {
                what,
                reason: format!(
                    "it is owned by uid {}, not by this user (uid {me})",
                    info.uid
                ),
                source: None,
            });
        }
        // A writer fills the header right after creating the segment: an empty or all-zero
        // header is an arena being set up; anything else must carry the magic.
        let blank = header.iter().all(|&b| b == 0);
        if !blank && !header.starts_with(&crate::format::MAGIC) {
            return Err(Error::format(&what, FormatError::BadMagic));
        }
        os::shm_unlink(name).map_err(|e| Error::os(format!("removing {what}"), &what, e))
    }

    /// Waits until a sealed arena is at named segment `name`, for at most `timeout`: for a
    /// reader that may start before the writer has finished. It only waits; open the arena
    /// afterwards as usual.
    ///
    /// Returns `Ok(())` once the segment's header says sealed. Waits while the name does not
    /// exist or the arena is still being built; gives up at once, with the cause, if the
    /// segment is not an arena or cannot be read, or if its writer died before sealing
    /// ([`Error::Format`] with [`FormatError::StillBuilding`]: remove the orphan with
    /// [`Arena::remove_named`]). After `timeout`, [`Error::Timeout`] says what was there last.
    ///
    /// ```no_run
    /// # fn main() -> shmarena::Result<()> {
    /// use std::time::Duration;
    /// shmarena::Arena::wait_named("lexicon", Duration::from_secs(60))?;
    /// // The writer has sealed it: open it now.
    /// # Ok(()) }
    /// ```
    pub fn wait_named(name: &str, timeout: Duration) -> Result<()> {
        let name = validate_segment_name(name)?;
        let what = Locator::Shm {
            name: name.to_owned(),
        }
        .describe();
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let last = match read_header(name, &what) {
                Ok((_, bytes)) => match Header::parse(&bytes) {
                    Ok(h) => match h.require_sealed() {
                        Ok(()) => return Ok(()),
                        Err(e) if !Owner::of(&h).alive => {
                            return Err(Error::format(
                                &format!(
                                    "{what} (its writer, pid {}, exited before sealing it)",
                                    h.creator_pid
                                ),
                                e,
                            ))
                        }
                        Err(e) => Error::format(&what, e),
                    },
                    // Being set up: shorter than a header, or not yet written.
                    Err(e @ FormatError::Truncated { .. }) => Error::format(&what, e),
                    Err(e @ FormatError::BadMagic) if bytes.iter().all(|&b| b == 0) => {
                        Error::format(&what, e)
                    }
                    Err(e) => return Err(Error::format(&what, e)),
                },
                Err(e @ Error::NotFound { .. }) => e,
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what,
                    last: last.to_string(),
                });
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
