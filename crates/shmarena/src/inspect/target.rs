//! What a command-line argument names: an arena by its [`Locator`], or an entry of one by a
//! handle string. Parsed once, by [`Target::from_str`](std::str::FromStr).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::handle::RawHandle;
use crate::locator::Locator;

/// An arena, or an entry of one, as `arena-inspect` takes it: any [`Locator`] spelling (see its
/// [`FromStr`](Locator#impl-FromStr-for-Locator): `shm:NAME`, `file:PATH`, `memfd:PID:FD`,
/// `PID:FD`, a path, a segment name), or a handle string (`shmarena1:...`, see [`RawHandle`]),
/// which also names an arena id and an entry.
///
/// ```
/// use shmarena::{inspect::Target, Locator};
/// let t: Target = "812:5".parse().unwrap();
/// assert_eq!(t.locator(), &Locator::Memfd { pid: 812, fd: 5 });
/// assert!(t.handle().is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// An arena, by where it lives.
    Arena(Locator),
    /// An entry, by a handle: its arena must still have the handle's id.
    Handle {
        /// The handle.
        handle: RawHandle,
        /// Where the handle says the arena lives.
        locator: Locator,
    },
}

impl Target {
    /// Where the arena lives.
    pub fn locator(&self) -> &Locator {
        match self {
            Target::Arena(locator) | Target::Handle { locator, .. } => locator,
        }
    }

    /// The handle, if the target was given as one.
    pub fn handle(&self) -> Option<&RawHandle> {
        match self {
            Target::Arena(_) => None,
            Target::Handle { handle, .. } => Some(handle),
        }
    }
}

impl FromStr for Target {
    type Err = Error;

    /// A handle string if [`is_handle_string`] says so (and then it must parse as one), else a
    /// [`Locator`]. A handle that names its file by the hash of a long path is refused: give the
    /// path instead.
    fn from_str(s: &str) -> Result<Target> {
        if !is_handle_string(s) {
            return s.parse().map(Target::Arena);
        }
        let handle: RawHandle = s.parse()?;
        let locator = handle.locator().ok_or_else(|| Error::BadHandle {
            handle: s.to_owned(),
            reason: "it names its file by the hash of a long path; give the path instead".into(),
        })?;
        Ok(Target::Handle { handle, locator })
    }
}

/// The form it was parsed from: the handle string, or the locator's canonical spelling.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Arena(locator) => write!(f, "{locator}"),
            Target::Handle { handle, .. } => write!(f, "{handle}"),
        }
    }
}

/// Whether `s` looks like a handle string (`shmarena<version>:...`) rather than a locator.
pub fn is_handle_string(s: &str) -> bool {
    s.strip_prefix("shmarena")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(v, _)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let shm = |n: &str| Locator::Shm { name: n.into() };
        let arena = |s: &str| match s.parse::<Target>().unwrap() {
            Target::Arena(l) => l,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(arena("lex"), shm("lex"));
        assert_eq!(arena("shm:lex"), shm("lex"));
        assert_eq!(arena("12:5"), Locator::Memfd { pid: 12, fd: 5 });
        assert_eq!(arena("./x"), Locator::File { path: "./x".into() });

        let id = "00112233445566778899aabbccddeeff";
        for (text, locator, entry) in [
            (
                format!("shmarena1:{id}:0:p:0000000000000001:shm:lex"),
                shm("lex"),
                0,
            ),
            (
                format!("shmarena1:{id}:2:a:0000000000000001:memfd:12:5"),
                Locator::Memfd { pid: 12, fd: 5 },
                2,
            ),
            // 0.1's spelling of the locator part.
            (
                format!("shmarena1:{id}:0:p:0000000000000001:shm/lex"),
                shm("lex"),
                0,
            ),
            (
                format!("shmarena1:{id}:3:a:0000000000000001:memfd/12/5"),
                Locator::Memfd { pid: 12, fd: 5 },
                3,
            ),
        ] {
            let t: Target = text.parse().unwrap();
            assert_eq!(t.locator(), &locator, "{text}");
            let h = t.handle().unwrap();
            assert_eq!(h.entry_index(), entry);
            assert_eq!(h.arena_id().to_string(), id);
            assert_eq!(h.locator().as_ref(), Some(&locator));
        }
        let filehash = format!("shmarena1:{id}:0:p:0000000000000001:filehash:00000000000000ff");
        assert!(filehash.parse::<RawHandle>().unwrap().locator().is_none());
        assert!(matches!(
            filehash.parse::<Target>(),
            Err(Error::BadHandle { .. })
        ));

        assert!(is_handle_string("shmarena1:x"));
        assert!(!is_handle_string("shmarena-x") && !is_handle_string("shmarena:1"));
        // A bad handle is an error, not a locator; bad locators are tested with `Locator`.
        for bad in ["shmarena1:zz", "shmarena1:", "shmarena7:x", "", "memfd:x"] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn handle_strings_round_trip() {
        let id = "00112233445566778899aabbccddeeff";
        for loc in [
            "shm:lex",
            "memfd:12:5",
            "file:/tmp/lex.arena",
            "filehash:00000000000000ff",
        ] {
            let text = format!("shmarena1:{id}:7:a:0123456789abcdef:{loc}");
            let h: RawHandle = text.parse().unwrap();
            assert_eq!(h.to_string(), text);
        }
        let old: RawHandle = format!("shmarena1:{id}:7:a:0123456789abcdef:file/x.arena")
            .parse()
            .unwrap();
        assert!(old.to_string().ends_with(":file:x.arena"));
    }
}
