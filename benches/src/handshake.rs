//! The raw floor of connecting to a published arena: a bare `SCM_RIGHTS` handshake on an
//! abstract-namespace Unix socket (the server sends one byte with a memfd attached, the client
//! receives it), then `fstat` + read-only `mmap` + a read of the first page
//! ([`baseline::map_and_touch`](crate::baseline::map_and_touch)). No credentials, message,
//! seals, header or table are checked: what `shmarena::connect` adds is everything else.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// A thread that answers every connection on an abstract socket with one byte and `file`'s
/// descriptor; stopped and joined on drop.
pub struct FdServer {
    name: Vec<u8>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FdServer {
    /// Listens on the abstract name `name` and hands out `file`.
    pub fn start(name: &str, file: File) -> io::Result<FdServer> {
        let name = name.as_bytes().to_vec();
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::bind(&listener, &SocketAddrUnix::new_abstract_name(&name)?)?;
        rustix::net::listen(&listener, 128)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while let Ok(conn) = rustix::net::accept_with(&listener, SocketFlags::CLOEXEC) {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let fds = [file.as_fd()];
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                control.push(SendAncillaryMessage::ScmRights(&fds));
                let _ = rustix::net::sendmsg(
                    &conn,
                    &[IoSlice::new(&[1])],
                    &mut control,
                    SendFlags::NOSIGNAL,
                );
            }
        });
        Ok(FdServer {
            name,
            stop,
            thread: Some(thread),
        })
    }

    /// One handshake: connect, receive the descriptor, map it, read its first 8 bytes.
    pub fn fetch_and_touch(&self) -> io::Result<u64> {
        let fd = fetch_fd(&self.name)?;
        crate::baseline::map_and_touch(&File::from(fd))
    }
}

impl Drop for FdServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = fetch_fd(&self.name); // wakes the accept
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects to the abstract socket `name` and receives the descriptor it sends.
fn fetch_fd(name: &[u8]) -> io::Result<OwnedFd> {
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::connect(&sock, &SocketAddrUnix::new_abstract_name(name)?)?;
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    rustix::net::recvmsg(
        &sock,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = m {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no descriptor came",
    ))
}
