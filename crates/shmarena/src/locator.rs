//! Where an arena lives, and the naming rules for segments and entries.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

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

/// The one spelling of a locator, which [`FromStr`](std::str::FromStr) reads back:
/// `shm:NAME`, `file:PATH` or `memfd:PID:FD`. For prose (error messages), see
/// [`Locator::describe`].
///
/// ```
/// use shmarena::Locator;
/// let loc = Locator::Memfd { pid: 812, fd: 5 };
/// assert_eq!(loc.to_string(), "memfd:812:5");
/// assert_eq!("memfd:812:5".parse::<Locator>().unwrap(), loc);
/// ```
impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Locator::Memfd { pid, fd } => write!(f, "memfd:{pid}:{fd}"),
            Locator::Shm { name } => write!(f, "shm:{name}"),
            Locator::File { path } => write!(f, "file:{}", path.display()),
        }
    }
}

/// Parses a locator. The rule, in order:
///
/// 1. `shm:NAME`, `file:PATH` or `memfd:PID:FD`: that backing, explicitly (the form
///    [`Display`](fmt::Display) writes).
/// 2. `PID:FD` (two decimal numbers): the memfd arena process `PID` holds as descriptor `FD`.
/// 3. Anything with a `/` after an optional single leading one (`/tmp/x.arena`, `data/x`), or
///    starting with `.`: a file path (`./x.arena` for a file in the current directory).
/// 4. Anything else (`lexicon`, `/lexicon`): a named shared-memory segment, checked with
///    [`validate_segment_name`].
///
/// ```
/// use shmarena::Locator;
/// assert_eq!("/lex".parse::<Locator>().unwrap(), Locator::Shm { name: "lex".into() });
/// assert_eq!("812:5".parse::<Locator>().unwrap(), Locator::Memfd { pid: 812, fd: 5 });
/// assert!(matches!("/tmp/lex.arena".parse::<Locator>().unwrap(), Locator::File { .. }));
/// assert!(matches!("./lex.arena".parse::<Locator>().unwrap(), Locator::File { .. }));
/// assert!(matches!("file:lex.arena".parse::<Locator>().unwrap(), Locator::File { .. }));
/// ```
impl FromStr for Locator {
    type Err = Error;

    fn from_str(s: &str) -> Result<Locator> {
        if let Some(explicit) = Locator::parse_explicit(s) {
            return explicit;
        }
        if let Some(memfd) = parse_pid_fd(s, s) {
            return memfd;
        }
        let bare = s.strip_prefix('/').unwrap_or(s);
        if bare.contains('/') || s.starts_with('.') {
            return Ok(Locator::File { path: s.into() });
        }
        Ok(Locator::Shm {
            name: validate_segment_name(s)?.to_owned(),
        })
    }
}

/// `PID:FD` as two decimal numbers: `None` if `text` is not of that shape.
fn parse_pid_fd(text: &str, whole: &str) -> Option<Result<Locator>> {
    let (pid, fd) = text.split_once(':')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !(digits(pid) && digits(fd)) {
        return None;
    }
    let bad = |what: &str| Error::InvalidName {
        name: whole.to_owned(),
        reason: format!("{what} is out of range"),
    };
    Some((|| {
        Ok(Locator::Memfd {
            pid: pid.parse().map_err(|_| bad("the pid"))?,
            fd: fd.parse().map_err(|_| bad("the descriptor"))?,
        })
    })())
}

/// Bytes of locator a handle carries inline: a memfd's pid and fd, a segment name (at most 30
/// bytes) or a file path of at most this many bytes.
pub(crate) const INLINE_MAX: usize = 33;

/// The kind byte of an inline locator (see [`Locator::encode_inline`]).
pub(crate) mod inline_kind {
    /// pid (u32 LE) and fd (i32 LE).
    pub(crate) const MEMFD: u8 = 1;
    /// The segment name's bytes.
    pub(crate) const SHM: u8 = 2;
    /// The path's bytes.
    pub(crate) const FILE: u8 = 3;
    /// A file path too long to carry: its checksum (u64 LE). Such a locator resolves only in
    /// processes that already opened the arena.
    pub(crate) const FILE_HASH: u8 = 4;
}

impl Locator {
    /// The prose form for messages: `memfd arena pid 812 fd 5`, `shm segment "/lex"`,
    /// `file /data/lex.arena`.
    pub fn describe(&self) -> String {
        match self {
            Locator::Memfd { pid, fd } => format!("memfd arena pid {pid} fd {fd}"),
            Locator::Shm { name } => format!("shm segment \"/{name}\""),
            Locator::File { path } => format!("file {}", path.display()),
        }
    }

    /// The shortest spelling that [`FromStr`] reads back as this locator: `PID:FD` for a memfd,
    /// the bare name for a segment, `file:PATH` for a file. For compact encodings (Python
    /// pickles); [`Display`](fmt::Display) writes the explicit form.
    ///
    /// ```
    /// use shmarena::Locator;
    /// for loc in [Locator::Memfd { pid: 812, fd: 5 }, Locator::Shm { name: "lex".into() }] {
    ///     assert_eq!(loc.shorthand().parse::<Locator>().unwrap(), loc);
    /// }
    /// assert_eq!(Locator::Memfd { pid: 812, fd: 5 }.shorthand(), "812:5");
    /// ```
    pub fn shorthand(&self) -> String {
        match self {
            Locator::Memfd { pid, fd } => format!("{pid}:{fd}"),
            // Validated names have no '/' or ':' and do not start with '.'.
            Locator::Shm { name } => name.clone(),
            Locator::File { .. } => self.to_string(),
        }
    }

    /// Only the explicit forms `shm:NAME`, `file:PATH` and `memfd:PID:FD` (what
    /// [`Display`](fmt::Display) writes): `None` if `s` has none of these prefixes.
    pub fn parse_explicit(s: &str) -> Option<Result<Locator>> {
        if let Some(name) = s.strip_prefix("shm:") {
            return Some(validate_segment_name(name).map(|name| Locator::Shm {
                name: name.to_owned(),
            }));
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Some(Err(Error::InvalidName {
                    name: s.to_owned(),
                    reason: "file: needs a path".into(),
                }));
            }
            return Some(Ok(Locator::File { path: path.into() }));
        }
        let rest = s.strip_prefix("memfd:")?;
        Some(parse_pid_fd(rest, s).unwrap_or_else(|| {
            Err(Error::InvalidName {
                name: s.to_owned(),
                reason: "memfd: needs PID:FD, two decimal numbers".into(),
            })
        }))
    }

    /// The locator as a handle carries it: a kind byte, a length and up to [`INLINE_MAX`]
    /// bytes. A file path longer than that is carried as its checksum.
    pub(crate) fn encode_inline(&self) -> (u8, u8, [u8; INLINE_MAX]) {
        let mut buf = [0u8; INLINE_MAX];
        let (kind, len) = match self {
            Locator::Memfd { pid, fd } => {
                buf[..4].copy_from_slice(&pid.to_le_bytes());
                buf[4..8].copy_from_slice(&fd.to_le_bytes());
                (inline_kind::MEMFD, 8)
            }
            Locator::Shm { name } => {
                // Validated names have at most MAX_SEGMENT_NAME (30) bytes.
                let n = name.len().min(INLINE_MAX);
                buf[..n].copy_from_slice(&name.as_bytes()[..n]);
                (inline_kind::SHM, n)
            }
            Locator::File { path } => {
                let bytes = path.as_os_str().as_encoded_bytes();
                if bytes.len() <= INLINE_MAX {
                    buf[..bytes.len()].copy_from_slice(bytes);
                    (inline_kind::FILE, bytes.len())
                } else {
                    buf[..8].copy_from_slice(&crate::format::checksum(bytes).to_le_bytes());
                    (inline_kind::FILE_HASH, 8)
                }
            }
        };
        (kind, len as u8, buf)
    }

    /// Reads back what [`encode_inline`](Self::encode_inline) wrote. `None` for a file hash, an
    /// unknown kind or malformed bytes.
    pub(crate) fn decode_inline(kind: u8, bytes: &[u8]) -> Option<Locator> {
        match kind {
            inline_kind::MEMFD if bytes.len() == 8 => Some(Locator::Memfd {
                pid: u32::from_le_bytes(bytes[..4].try_into().ok()?),
                fd: i32::from_le_bytes(bytes[4..8].try_into().ok()?),
            }),
            inline_kind::SHM => Some(Locator::Shm {
                name: std::str::from_utf8(bytes).ok()?.to_owned(),
            }),
            inline_kind::FILE => {
                // On Unix any bytes are a valid OsStr.
                use std::os::unix::ffi::OsStrExt;
                Some(Locator::File {
                    path: std::ffi::OsStr::from_bytes(bytes).into(),
                })
            }
            _ => None,
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
    fn display_and_from_str_round_trip() {
        for loc in [
            Locator::Shm { name: "lex".into() },
            Locator::Shm {
                name: "lex.v2-x_y".into(),
            },
            Locator::Memfd { pid: 812, fd: 5 },
            Locator::Memfd {
                pid: u32::MAX,
                fd: i32::MAX,
            },
            Locator::File {
                path: "/tmp/lex.arena".into(),
            },
            Locator::File {
                path: "lex.arena".into(),
            },
            Locator::File { path: "1:2".into() },
            Locator::File {
                path: "shm:x".into(),
            },
        ] {
            let text = loc.to_string();
            assert_eq!(text.parse::<Locator>().unwrap(), loc, "{text}");
            let short = loc.shorthand();
            assert_eq!(short.parse::<Locator>().unwrap(), loc, "{short}");
            assert_eq!(Locator::parse_explicit(&text).unwrap().unwrap(), loc);
        }
        assert_eq!(Locator::Shm { name: "a".into() }.to_string(), "shm:a");
        assert_eq!(Locator::Memfd { pid: 1, fd: 2 }.to_string(), "memfd:1:2");
        assert_eq!(Locator::File { path: "/x".into() }.to_string(), "file:/x");
        assert_eq!(
            Locator::Shm { name: "a".into() }.describe(),
            "shm segment \"/a\""
        );
    }

    #[test]
    fn shorthand_forms() {
        let shm = |n: &str| Locator::Shm { name: n.into() };
        let file = |p: &str| Locator::File { path: p.into() };
        let parse = |s: &str| s.parse::<Locator>().unwrap();
        assert_eq!(parse("lex"), shm("lex"));
        assert_eq!(parse("/lex.v2"), shm("lex.v2"));
        assert_eq!(parse("shm:/lex"), shm("lex"));
        assert_eq!(parse("memfd:1:2"), Locator::Memfd { pid: 1, fd: 2 });
        assert_eq!(parse("12:5"), Locator::Memfd { pid: 12, fd: 5 });
        assert_eq!(parse("/a/b"), file("/a/b"));
        assert_eq!(parse("a/b"), file("a/b"));
        assert_eq!(parse("./x"), file("./x"));
        assert_eq!(parse("file:x"), file("x"));
        assert_eq!(parse("file:1:2"), file("1:2"));
        assert!(Locator::parse_explicit("lex").is_none());
        assert!(Locator::parse_explicit("12:5").is_none());
        for bad in [
            "",
            "a b",
            "memfd:x",
            "memfd:1:-2",
            "99999999999:1",
            "file:",
            "shm:a/b",
        ] {
            assert!(bad.parse::<Locator>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inline_codec_round_trips() {
        let long = format!("/tmp/{}", "x".repeat(40));
        for loc in [
            Locator::Shm {
                name: "x".repeat(30),
            },
            Locator::Memfd { pid: 812, fd: 5 },
            Locator::Memfd {
                pid: u32::MAX,
                fd: -1,
            },
            Locator::File {
                path: "/tmp/a".into(),
            },
            Locator::File {
                path: "x".repeat(INLINE_MAX).into(),
            },
        ] {
            let (kind, len, buf) = loc.encode_inline();
            let back = Locator::decode_inline(kind, &buf[..usize::from(len)]);
            assert_eq!(back.as_ref(), Some(&loc));
        }
        let (kind, len, buf) = Locator::File {
            path: long.clone().into(),
        }
        .encode_inline();
        assert_eq!((kind, len), (inline_kind::FILE_HASH, 8));
        assert_eq!(
            u64::from_le_bytes(buf[..8].try_into().unwrap()),
            crate::format::checksum(long.as_bytes())
        );
        assert_eq!(Locator::decode_inline(kind, &buf[..8]), None);
        assert_eq!(Locator::decode_inline(inline_kind::MEMFD, &buf[..7]), None);
        assert_eq!(Locator::decode_inline(99, &buf[..1]), None);
    }

    #[test]
    fn entry_names() {
        assert!(validate_entry_name("lexicon/v2 ü").is_ok());
        assert!(validate_entry_name("").is_err());
        assert!(validate_entry_name("a\nb").is_err());
        assert!(validate_entry_name(&"x".repeat(256)).is_err());
    }
}
