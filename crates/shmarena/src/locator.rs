//! Where an arena lives, and the naming rules for segments and entries.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Longest segment name, in bytes. macOS limits POSIX shm names to 31 bytes including the
/// leading slash, so 30 keeps one name valid everywhere.
pub const MAX_SEGMENT_NAME: usize = 30;

/// Where an arena lives: enough to open it again from another process of the same user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Locator {
    /// A sealed memfd held open by process `pid` as descriptor `fd`; reachable through
    /// `/proc/<pid>/fd/<fd>`, by inheritance across `fork`, or as an inherited descriptor.
    Memfd {
        /// The process holding the descriptor.
        pid: u32,
        /// The descriptor number in that process.
        fd: i32,
    },
    /// A named POSIX shared-memory segment (`/dev/shm/<name>` on Linux). Stored without the
    /// leading slash.
    Shm {
        /// The validated segment name.
        name: String,
    },
    /// A file.
    File {
        /// Its path.
        path: PathBuf,
    },
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Locator::Memfd { pid, fd } => write!(f, "memfd arena pid {pid} fd {fd}"),
            Locator::Shm { name } => write!(f, "shm segment \"/{name}\""),
            Locator::File { path } => write!(f, "file {}", path.display()),
        }
    }
}

/// Checks a segment name and returns it without a leading slash.
///
/// The portable rule: 1 to [`MAX_SEGMENT_NAME`] bytes of ASCII letters, digits, `.`, `_` and
/// `-`, not starting with `.`. A single leading `/` (the POSIX spelling) is accepted and dropped.
///
/// ```
/// assert_eq!(shmarena::validate_segment_name("/lexicon-v2").unwrap(), "lexicon-v2");
/// assert!(shmarena::validate_segment_name("../etc/passwd").is_err());
/// assert!(shmarena::validate_segment_name("a-name-that-is-far-too-long-for-macos").is_err());
/// ```
pub fn validate_segment_name(name: &str) -> Result<&str> {
    let bad = |reason: &str| Error::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() {
        return Err(bad("segment names must not be empty"));
    }
    if bare.len() > MAX_SEGMENT_NAME {
        return Err(bad(&format!(
            "segment names are at most {MAX_SEGMENT_NAME} bytes (macOS allows 31 with the slash); this one has {}",
            bare.len()
        )));
    }
    if bare.contains('/') {
        return Err(bad(
            "segment names must not contain '/' (only one leading '/' is allowed)",
        ));
    }
    if bare.starts_with('.') {
        return Err(bad("segment names must not start with '.'"));
    }
    if let Some(c) = bare
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(&format!(
            "segment names may use only ASCII letters, digits, '.', '_' and '-', not {c:?}"
        )));
    }
    Ok(bare)
}

/// Checks an entry name: 1 to 255 bytes of UTF-8 with no control characters.
pub fn validate_entry_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Error::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(bad("entry names must not be empty"));
    }
    if name.len() > crate::format::MAX_ENTRY_NAME {
        return Err(bad(&format!(
            "entry names are at most {} bytes; this one has {}",
            crate::format::MAX_ENTRY_NAME,
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("entry names must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        for good in ["a", "/a", "lex-1.2_x", "A0", &"x".repeat(30)] {
            assert!(validate_segment_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/",
            "//a",
            "a/b",
            "..",
            ".hidden",
            "a b",
            "é",
            "a\0b",
            &"x".repeat(31),
        ] {
            let e = validate_segment_name(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidName { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn entry_names() {
        assert!(validate_entry_name("lexicon/v2 ü").is_ok());
        assert!(validate_entry_name("").is_err());
        assert!(validate_entry_name("a\nb").is_err());
        assert!(validate_entry_name(&"x".repeat(256)).is_err());
    }
}
