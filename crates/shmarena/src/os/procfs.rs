//! Parsers of `/proc` text for `inspect`: the listening Unix sockets of `/proc/net/unix`, the
//! socket inodes behind `/proc/PID/fd` links, and the memory figures of `/proc/PID/smaps` and
//! `/proc/PID/smaps_rollup`. Plain reads and string parsing; each parser is tested on sample
//! text below.

/// A listening Unix socket bound in the abstract namespace, from `/proc/net/unix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AbstractListener {
    /// The socket's inode (what `/proc/PID/fd` links read as `socket:[INODE]`).
    pub(crate) inode: u64,
    /// The name, without the leading NUL (`/proc/net/unix` prints it as `@`).
    pub(crate) name: String,
}

/// `__SO_ACCEPTCON` in the `Flags` column: the socket listens.
const SO_ACCEPTCON: u32 = 0x0001_0000;

/// Every listening abstract-namespace socket whose name starts with `prefix`, or an empty list
/// if `/proc/net/unix` cannot be read. (The file lists the sockets of this network namespace.)
pub(crate) fn abstract_listeners(prefix: &str) -> Vec<AbstractListener> {
    std::fs::read_to_string("/proc/net/unix")
        .map(|text| parse_net_unix(&text, prefix))
        .unwrap_or_default()
}

/// The parsing half of [`abstract_listeners`]. A line reads
/// `Num RefCount Protocol Flags Type St Inode [Path]`, hexadecimal except the inode.
fn parse_net_unix(text: &str, prefix: &str) -> Vec<AbstractListener> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut f = line.split_ascii_whitespace();
        let (Some(_num), Some(_refs), Some(_proto), Some(flags), Some(_ty), Some(_st), Some(ino)) = (
            f.next(),
            f.next(),
            f.next(),
            f.next(),
            f.next(),
            f.next(),
            f.next(),
        ) else {
            continue;
        };
        let Some(path) = f.next() else {
            continue;
        };
        let (Ok(flags), Ok(inode)) = (u32::from_str_radix(flags, 16), ino.parse::<u64>()) else {
            continue;
        };
        let Some(name) = path.strip_prefix('@') else {
            continue;
        };
        if flags & SO_ACCEPTCON != 0 && name.starts_with(prefix) {
            out.push(AbstractListener {
                inode,
                name: name.to_owned(),
            });
        }
    }
    out
}

/// The socket inode a `/proc/PID/fd` link target names (`socket:[12345]`), if it is a socket.
pub(crate) fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// What one process's mappings of one file cost, summed over its mappings of that file, from
/// `/proc/PID/smaps` (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MappingCost {
    /// `Rss`: pages of the file this process has touched and that are resident. Shared pages:
    /// every process that touched a page counts it in full.
    pub(crate) rss: u64,
    /// `Pss`: the same pages, each divided by the number of processes that map it.
    pub(crate) pss: u64,
    /// Mapped size (`Size`).
    pub(crate) size: u64,
}

/// The cost of `pid`'s mappings of the file with device `dev` and inode `ino`, or `None` if
/// smaps cannot be read or the process maps no such file.
pub(crate) fn mapping_cost(pid: u32, dev: u64, ino: u64) -> Option<MappingCost> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    parse_smaps(&text, dev, ino)
}

/// The parsing half of [`mapping_cost`]. Each mapping is a `maps`-style line
/// (`address perms offset major:minor inode [path]`) followed by `Key: value kB` lines.
fn parse_smaps(text: &str, dev: u64, ino: u64) -> Option<MappingCost> {
    let mut cost = MappingCost::default();
    let mut found = false;
    let mut in_wanted = false;
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(first) = f.next() else {
            continue;
        };
        if first.ends_with(':') {
            if !in_wanted {
                continue;
            }
            let kib = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024;
            match first {
                "Rss:" => cost.rss += kib(f.next()),
                "Pss:" => cost.pss += kib(f.next()),
                "Size:" => cost.size += kib(f.next()),
                _ => {}
            }
            continue;
        }
        // A mapping header: address perms offset dev inode [path].
        in_wanted = false;
        let (Some(_perms), Some(_off), Some(d), Some(i)) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let (Some(d), Ok(i)) = (super::parse_maps_dev(d), i.parse::<u64>()) else {
            continue;
        };
        if i == ino && d == dev {
            in_wanted = true;
            found = true;
        }
    }
    found.then_some(cost)
}

/// The process's private anonymous memory, `Anonymous:` of `/proc/PID/smaps_rollup`, in
/// bytes; `None` if unreadable.
pub(crate) fn anonymous(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_rollup_anonymous(&text)
}

fn parse_rollup_anonymous(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix("Anonymous:")?;
        Some(v.split_ascii_whitespace().next()?.parse::<u64>().ok()? * 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_unix() {
        let text = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 4242 @shmarena/0/lexicon
0000000000000000: 00000003 00000000 00000000 0001 03 4243 @shmarena/0/lexicon
0000000000000000: 00000002 00000000 00010000 0001 01 17 /run/systemd/notify
0000000000000000: 00000002 00000000 00010000 0001 01 18 @other
0000000000000000: 00000002 00000000 00000000 0002 01 19
";
        assert_eq!(
            parse_net_unix(text, "shmarena/"),
            vec![AbstractListener {
                inode: 4242,
                name: "shmarena/0/lexicon".into()
            }]
        );
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
    }

    #[test]
    fn smaps() {
        let text = "\
7f0000000000-7f0000100000 r--s 00000000 00:01 77 /memfd:shmarena (deleted)
Size:               1024 kB
Rss:                 512 kB
Pss:                 256 kB
Anonymous:             0 kB
7f0000200000-7f0000201000 r--s 00000000 00:01 78 /memfd:shmarena-generation (deleted)
Size:                  4 kB
Rss:                   4 kB
Pss:                   4 kB
7f0000300000-7f0000400000 r--s 00000000 00:01 77 /memfd:shmarena (deleted)
Size:               1024 kB
Rss:                   8 kB
Pss:                   2 kB
";
        let dev = crate::os::makedev(0, 1);
        assert_eq!(
            parse_smaps(text, dev, 77),
            Some(MappingCost {
                rss: 520 * 1024,
                pss: 258 * 1024,
                size: 2048 * 1024
            })
        );
        assert_eq!(parse_smaps(text, dev, 99), None);
        assert_eq!(
            parse_rollup_anonymous("Rss: 10 kB\nAnonymous:   300 kB\n"),
            Some(300 * 1024)
        );
        assert!(anonymous(std::process::id()).is_some());
    }
}
