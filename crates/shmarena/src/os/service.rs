//! Linux system calls for the arena service and for image files: abstract-namespace Unix
//! sockets, descriptor passing (`SCM_RIGHTS`), peer credentials, the shared generation page,
//! and reading a file into a memfd without mapping the file. Declared from `os/linux.rs`; the
//! rest of the crate sees only the safe functions and types here.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use memmap2::{Mmap, MmapMut, MmapOptions};
use rustix::event::{PollFd, PollFlags};
use rustix::fs::{Mode, OFlags, SealFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use super::errno;

/// The peer of a connected Unix socket, as the kernel recorded it (`SO_PEERCRED`): for a
/// client, the server's credentials at `listen`; for a server, the client's at `connect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerCred {
    pub(crate) pid: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// A listening abstract-namespace stream socket, non-blocking and close-on-exec. The name
/// disappears when the last descriptor of the socket closes, whatever way the process ends.
pub(crate) fn listen_abstract(name: &[u8]) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(errno)?;
    let addr = SocketAddrUnix::new_abstract_name(name).map_err(errno)?;
    rustix::net::bind(&fd, &addr).map_err(errno)?;
    rustix::net::listen(&fd, 128).map_err(errno)?;
    Ok(fd)
}

/// Accepts one pending connection (blocking, close-on-exec), or `None` if none is pending.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => Ok(None),
        Err(e) => Err(errno(e)),
    }
}

/// Connects to an abstract-namespace stream socket (close-on-exec). The socket is made
/// non-blocking, so the usual connect (room in the server's backlog) takes no socket option;
/// if the backlog is full, the socket is made blocking and the connect waits for room up to
/// `timeout` ([`set_send_timeout`], then `EAGAIN`). Read the socket with [`recv_with_fds`], which
/// waits with its own deadline whether the socket blocks or not.
pub(crate) fn connect_abstract(name: &[u8], timeout: Duration) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(errno)?;
    let addr = SocketAddrUnix::new_abstract_name(name).map_err(errno)?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) => return Ok(fd),
        // A Unix stream socket says EAGAIN (not EINPROGRESS) when the backlog is full; the
        // socket stays unconnected, so the connect can be made again, blocking.
        Err(rustix::io::Errno::AGAIN) => {}
        Err(e) => return Err(errno(e)),
    }
    rustix::io::ioctl_fionbio(&fd, false).map_err(errno)?;
    set_send_timeout(fd.as_fd(), timeout)?;
    rustix::net::connect(&fd, &addr).map_err(errno)?;
    Ok(fd)
}

/// Sets `SO_SNDTIMEO`: how long a blocking send, or a blocking connect to a full backlog,
/// waits. (Nothing here reads with a blocking `recv`: [`recv_with_fds`] keeps its own
/// deadline, so no `SO_RCVTIMEO` is set.)
pub(crate) fn set_send_timeout(sock: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    // A zero timeout means "forever" to the kernel; never ask for that.
    let timeout = timeout.max(Duration::from_millis(1));
    use rustix::net::sockopt::{set_socket_timeout, Timeout};
    set_socket_timeout(sock, Timeout::Send, Some(timeout)).map_err(errno)
}

/// The kernel's record of who is at the other end of a connected Unix socket.
pub(crate) fn peer_cred(sock: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let c = rustix::net::sockopt::socket_peercred(sock).map_err(errno)?;
    Ok(PeerCred {
        pid: c.pid.as_raw_nonzero().get() as u32,
        uid: c.uid.as_raw(),
        gid: c.gid.as_raw(),
    })
}

/// Sends `bytes` with `fds` attached (`SCM_RIGHTS`) in one message, without blocking and
/// without `SIGPIPE`. A short send is an error (`WriteZero`).
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    let sent =
        rustix::net::sendmsg(sock, &[IoSlice::new(bytes)], &mut control, flags).map_err(errno)?;
    if sent != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", bytes.len()),
        ));
    }
    Ok(())
}

/// Sends all of `bytes` (blocking; the socket's `SO_SNDTIMEO`, see [`set_send_timeout`],
/// bounds each wait), without `SIGPIPE`.
pub(crate) fn send_all(sock: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::net::send(sock, bytes, SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(())
}

/// What [`recv_with_fds`] got.
pub(crate) struct Received {
    /// Bytes received into the buffer (less than its length if the peer closed first).
    pub(crate) len: usize,
    /// Every descriptor that came with them, close-on-exec.
    pub(crate) fds: Vec<OwnedFd>,
    /// The kernel dropped descriptors that did not fit (`MSG_CTRUNC`).
    pub(crate) fds_truncated: bool,
}

/// Receives until `buf` is full or the peer closes, collecting descriptors (at most 4 fit; more
/// set `fds_truncated`). Gives up with `TimedOut` once `timeout` has passed since the call.
///
/// While nothing has arrived, it first busy-polls (non-blocking `recvmsg`) for up to `spin`
/// before it sleeps in `poll`: an answer expected within a few tens of microseconds then finds
/// this thread running, instead of having to wake it and, on an idle machine, its idle CPU
/// (about 50 µs on a virtual machine). The spin is bounded, and only spent once per call.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Duration,
    spin: Duration,
) -> io::Result<Received> {
    let start = Instant::now();
    let mut spinning = !spin.is_zero();
    let mut got = Received {
        len: 0,
        fds: Vec::new(),
        fds_truncated: false,
    };
    while got.len < buf.len() {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut buf[got.len..])];
        let flags = RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT;
        let msg = match rustix::net::recvmsg(sock, &mut iov, &mut control, flags) {
            Ok(msg) => msg,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => {
                let waited = start.elapsed();
                if spinning && waited < spin {
                    // Yield rather than spin in place: if the server's thread was woken onto
                    // this CPU, it runs now instead of waiting for the spin to end.
                    std::thread::yield_now();
                    continue;
                }
                spinning = false;
                let Some(left) = timeout.checked_sub(waited).filter(|d| !d.is_zero()) else {
                    return Err(io::ErrorKind::TimedOut.into());
                };
                wait_readable_for(sock, left)?;
                continue;
            }
            Err(e) => return Err(errno(e)),
        };
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = m {
                got.fds.extend(fds);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            got.fds_truncated = true;
        }
        if msg.bytes == 0 {
            break;
        }
        got.len += msg.bytes;
    }
    Ok(got)
}

/// Waits up to `timeout` for `sock` to become readable (or hung up); returns at the timeout
/// too (the caller's next read tells).
fn wait_readable_for(sock: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    let mut fds = [PollFd::new(&sock, PollFlags::IN)];
    let ts = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}

/// A close-on-exec pipe: the read end wakes a [`wait_readable`], the write end is the trigger.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(errno)
}

/// Writes one byte to a pipe (to wake a waiter).
pub(crate) fn poke(w: BorrowedFd<'_>) -> io::Result<()> {
    rustix::io::write(w, &[1]).map(|_| ()).map_err(errno)
}

/// Blocks until `a` or `b` is readable (or hung up); returns `(a_ready, b_ready)`.
pub(crate) fn wait_readable(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> io::Result<(bool, bool)> {
    let mut fds = [
        PollFd::new(&a, PollFlags::IN),
        PollFd::new(&b, PollFlags::IN),
    ];
    match rustix::event::poll(&mut fds, None) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok((false, false)),
        Err(e) => return Err(errno(e)),
    }
    let ready = |f: &PollFd<'_>| !f.revents().is_empty();
    Ok((ready(&fds[0]), ready(&fds[1])))
}

/// Waits up to `timeout` for `stop` to become readable (or hang up); returns whether it did.
pub(crate) fn wait_stop(stop: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(&stop, PollFlags::IN)];
    let ts = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(errno(e)),
    }
}

/// The supplementary group ids of process `pid`, from the `Groups:` line of
/// `/proc/PID/status`, if it could be read and the process still runs as `uid` (the `Uid:`
/// line's effective field), so that a pid reused by a process of another user is not believed.
pub(crate) fn supplementary_groups(pid: u32, uid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_groups(&status, uid)
}

/// The parsing half of [`supplementary_groups`].
fn parse_status_groups(status: &str, uid: u32) -> Option<Vec<u32>> {
    let mut euid = None;
    let mut groups = None;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            // real, effective, saved, filesystem
            euid = rest.split_ascii_whitespace().nth(1)?.parse::<u32>().ok();
        } else if let Some(rest) = line.strip_prefix("Groups:") {
            groups = Some(
                rest.split_ascii_whitespace()
                    .filter_map(|g| g.parse::<u32>().ok())
                    .collect::<Vec<u32>>(),
            );
        }
    }
    if euid? != uid {
        return None;
    }
    groups
}

/// A new read-only open file description of the same file as `fd` (through
/// `/proc/self/fd/N`): a process that receives it cannot write through it or map it writable.
pub(crate) fn reopen_ro(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)
}

/// Whether `fd` was made by `memfd_create` (its `/proc/self/fd` link reads `/memfd:NAME`).
pub(crate) fn is_memfd(fd: BorrowedFd<'_>) -> bool {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::read_link(path)
        .map(|t| t.as_os_str().as_encoded_bytes().starts_with(b"/memfd:"))
        .unwrap_or(false)
}

/// The seals on a descriptor (none for a file that cannot carry seals).
pub(crate) fn seals_of(fd: BorrowedFd<'_>) -> super::Seals {
    let s = rustix::fs::fcntl_get_seals(fd).unwrap_or(SealFlags::empty());
    super::Seals {
        write: s.contains(SealFlags::WRITE),
        grow: s.contains(SealFlags::GROW),
        shrink: s.contains(SealFlags::SHRINK),
        seal: s.contains(SealFlags::SEAL),
    }
}

/// Size and kind of a descriptor's file.
pub(crate) fn fd_info(fd: BorrowedFd<'_>) -> io::Result<super::FileInfo> {
    let st = rustix::fs::fstat(fd).map_err(errno)?;
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode as _);
    Ok(super::FileInfo {
        size: st.st_size as u64,
        uid: st.st_uid,
        mode: (st.st_mode as u32) & 0o7777,
        is_regular: ft == rustix::fs::FileType::RegularFile,
    })
}

/// Opens a file read-only without blocking on a FIFO or device and without following a symlink
/// in the last component; refuses anything but a regular file before any read.
pub(crate) fn open_regular_ro(path: &Path) -> io::Result<(File, u64)> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(errno)?;
    let info = fd_info(fd.as_fd())?;
    if !info.is_regular {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((File::from(fd), info.size))
}

/// Size of the generation page, and where its fields are (docs/DESIGN.md, "Service protocol").
pub(crate) const PAGE_LEN: usize = 4096;
/// The page's magic, at offset 0.
pub(crate) const PAGE_MAGIC: [u8; 8] = *b"SHMAGEN1";
/// Offset of the `u32` generation counter (low 32 bits of the generation).
const PAGE_COUNTER: usize = 8;

/// The publisher's side of the generation page: a one-page memfd it maps writable, then seals
/// against growing, shrinking, any future writable mapping or `write`, and further seals.
///
/// INVARIANTS: `map` is a `PAGE_LEN`-byte shared writable mapping of `file`, page-aligned, so
/// `PAGE_COUNTER` is aligned for a `u32`; the file can never shrink (`F_SEAL_SHRINK`).
pub(crate) struct CounterPage {
    map: MmapMut,
    file: File,
}

impl CounterPage {
    /// A new page holding the magic and `counter`.
    pub(crate) fn new(counter: u32) -> io::Result<CounterPage> {
        let file = super::memfd_create(super::MemfdKind::GenerationPage)?;
        file.set_len(PAGE_LEN as u64)?;
        // SAFETY: the memfd was just created by this process and is exactly PAGE_LEN bytes
        // long; it will be sealed against shrinking before anyone else sees it, so no access
        // through the mapping can fall past the end of the file.
        let mut map = unsafe { MmapOptions::new().len(PAGE_LEN).map_mut(&file)? };
        map.advise(memmap2::Advice::DontFork)?;
        map[..8].copy_from_slice(&PAGE_MAGIC);
        map[PAGE_COUNTER..PAGE_COUNTER + 4].copy_from_slice(&counter.to_le_bytes());
        let seals = SealFlags::FUTURE_WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL;
        rustix::fs::fcntl_add_seals(&file, seals).map_err(errno)?;
        Ok(CounterPage { map, file })
    }

    fn counter(&self) -> &AtomicU32 {
        let ptr = self
            .map
            .as_ptr()
            .wrapping_add(PAGE_COUNTER)
            .cast::<AtomicU32>();
        // SAFETY: by the struct invariant `ptr` is 4-aligned and inside the mapping, which lives
        // as long as `self`; the mapping is readable and writable; every access to these bytes,
        // here and in other processes, is atomic (`CounterView::load`), so there is no data race.
        unsafe { &*ptr }
    }

    /// Publishes a new counter value (release: a reader that sees it and then asks the server
    /// gets the state stored before).
    pub(crate) fn store(&self, counter: u32) {
        self.counter().store(counter, Ordering::Release);
    }

    /// The descriptor to hand out (readers should get [`reopen_ro`] of it).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// A reader's read-only mapping of a publisher's generation page.
///
/// INVARIANTS: `map` is a `PAGE_LEN`-byte read-only shared mapping of a memfd that carries
/// `F_SEAL_GROW` and `F_SEAL_SHRINK` and was at least `PAGE_LEN` long when mapped (so it never
/// shrinks and a read cannot fault); page-aligned, so `PAGE_COUNTER` is aligned for a `u32`.
pub(crate) struct CounterView {
    map: Mmap,
}

impl CounterView {
    /// Maps a received page after checking its seals, size and magic. The error says what is
    /// wrong, for the caller to wrap.
    pub(crate) fn new(fd: OwnedFd) -> Result<CounterView, String> {
        let seals = seals_of(fd.as_fd());
        if !(seals.grow && seals.shrink) {
            return Err("the generation page is not sealed against growing and shrinking".into());
        }
        let info = fd_info(fd.as_fd()).map_err(|e| format!("fstat of the generation page: {e}"))?;
        if !info.is_regular || info.size < PAGE_LEN as u64 {
            return Err(format!(
                "the generation page is {} bytes, not at least {PAGE_LEN}",
                info.size
            ));
        }
        let file = File::from(fd);
        // SAFETY: the file is at least PAGE_LEN bytes and sealed against shrinking (checked just
        // above, and seals cannot be removed), so every byte of the mapping stays backed; it is
        // mapped PROT_READ, so this process never writes it.
        let map = unsafe { MmapOptions::new().len(PAGE_LEN).map(&file) }
            .map_err(|e| format!("mapping the generation page: {e}"))?;
        if map[..8] != PAGE_MAGIC {
            return Err("the generation page has a bad magic".into());
        }
        Ok(CounterView { map })
    }

    /// The counter now. A relaxed load: it only says whether to ask the server again.
    pub(crate) fn load(&self) -> u32 {
        let ptr = self
            .map
            .as_ptr()
            .wrapping_add(PAGE_COUNTER)
            .cast::<AtomicU32>();
        // SAFETY: by the struct invariant `ptr` is 4-aligned and inside a mapping that lives as
        // long as `self` and cannot fault. The memory is read-only here: the standard library
        // documents (std::sync::atomic, "Atomic accesses to read-only memory") that a Relaxed
        // atomic load of at most 4 bytes is implemented so that it works on read-only memory,
        // which is the only access made through this reference. The publisher writes these
        // bytes only with atomic stores, so there is no data race.
        let counter = unsafe { &*ptr };
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_groups() {
        let status =
            "Name:\tx\nUid:\t1000\t1001\t1001\t1001\nGid:\t5\t5\t5\t5\nGroups:\t4 24 100 \n";
        assert_eq!(parse_status_groups(status, 1001), Some(vec![4, 24, 100]));
        assert_eq!(
            parse_status_groups(status, 1000),
            None,
            "the effective uid is checked"
        );
        assert_eq!(
            parse_status_groups("Uid:\t0\t0\t0\t0\nGroups:\t\n", 0),
            Some(vec![])
        );
        let me = euid_for_test();
        assert!(supplementary_groups(std::process::id(), me).is_some());
    }

    fn euid_for_test() -> u32 {
        rustix::process::geteuid().as_raw()
    }
}
