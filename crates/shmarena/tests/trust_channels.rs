//! Trust rows that arrive from another process (issue 20, paths 4 and 5): a service answer and
//! `share_with`'s environment at exec. No kernel fact proves what the answering process or the
//! launcher did, so their rows are taken only after the program opts in (`unsafe`
//! `ConnectOptions::trust_publisher_rows`, `shmarena::trust_inherited_rows`). Without it, the
//! reader validates: a forged answer or environment gives a typed error, never a signal.
//!
//! Each attack runs in a child process (`run_checked`), so that a signal fails the test with the
//! child's status instead of killing the test binary.

mod common;

use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::process::Command;

use common::{exited_with, fork_and_wait, run_checked, run_isolated};
use shmarena::format::FormatError;
use shmarena::handle::INHERITED_FDS_ENV;
use shmarena::{Arena, ArenaOptions, Error, Handle};

/// The typed error a read of bytes that are not a valid archived value gives.
fn assert_corrupted<T: std::fmt::Debug>(r: shmarena::Result<T>) {
    match r {
        Err(Error::Format {
            source: FormatError::Corrupted { .. },
            ..
        }) => {}
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// A genuine arena (`v` = `[1, 2, 3]` as `Vec<u32>`, trusted here: built and validated here),
/// and its bytes with the Vec's length patched to 2^30: same id, same table of contents.
fn genuine_and_forged() -> (Arena, Vec<u8>) {
    let mut w = ArenaOptions::new().create().unwrap();
    w.put("v", &vec![1u32, 2, 3]).unwrap();
    let arena = w.seal().unwrap();
    assert!(arena.trusts::<Vec<u32>>("v"));
    let mut bytes = arena.as_bytes().to_vec();
    let e = &arena.layout().entries[0];
    let root = (e.offset + e.root_pos) as usize;
    // An archived Vec is a relative pointer (4 bytes) then the length (4 bytes).
    assert_eq!(
        u32::from_le_bytes(bytes[root + 4..root + 8].try_into().unwrap()),
        3
    );
    bytes[root + 4..root + 8].copy_from_slice(&(1u32 << 30).to_le_bytes());
    (arena, bytes)
}

/// `bytes` in a fresh memfd with the write, grow, shrink and seal seals, by safe code only.
fn sealed_memfd(bytes: &[u8]) -> OwnedFd {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create("forged", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes).unwrap();
    rustix::fs::fcntl_add_seals(
        &f,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )
    .unwrap();
    f.into()
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

// ---------------------------------------------------------------------------------------------
// Path 4: a forged service answer.

/// A service answer forged by this very program: a helper process calls `listen()` on a socket
/// this process bound under the name (so `SO_PEERCRED` names the helper, not this process),
/// and a thread here answers with a crafted sealed memfd and rows copied from a genuine
/// publisher's answer. Without the opt-in the client validates: a typed error, no signal.
#[test]
fn a_forged_service_answer_is_validated() {
    run_isolated("forged_service_answer_child", &[]);
}

#[test]
#[ignore = "run by a_forged_service_answer_is_validated"]
fn forged_service_answer_child() {
    let pid = std::process::id();
    let (genuine_name, forged_name) = (format!("trust{pid}-g"), format!("trust{pid}-f"));
    let (arena, bytes) = genuine_and_forged();
    let forged = sealed_memfd(&bytes);
    let publisher = arena.publish(&genuine_name).unwrap();

    let sock_name = shmarena::service::socket_name(euid(), &forged_name).unwrap();
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        None,
    )
    .unwrap();
    let addr = rustix::net::SocketAddrUnix::new_abstract_name(sock_name.as_bytes()).unwrap();
    rustix::net::bind(&sock, &addr).unwrap();
    // The helper's `listen()` makes it the socket's peer for SO_PEERCRED (it allocates nothing).
    let status = fork_and_wait(|| i32::from(rustix::net::listen(&sock, 8).is_err()));
    assert_eq!(exited_with(status), Some(0), "the helper could not listen");
    let listener = UnixListener::from(sock);

    let genuine_sock = shmarena::service::socket_name(euid(), &genuine_name).unwrap();
    let answer = std::thread::spawn(move || {
        // A genuine answer: 64 bytes with the arena's and the page's descriptors, then the
        // publisher's build identity and rows.
        let mut g =
            UnixStream::connect_addr(&SocketAddr::from_abstract_name(genuine_sock).unwrap())
                .unwrap();
        let mut msg = [0u8; 64];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            &g,
            &mut [std::io::IoSliceMut::new(&mut msg)],
            &mut control,
            rustix::net::RecvFlags::empty(),
        )
        .unwrap();
        assert_eq!(got.bytes, 64);
        let mut fds: Vec<OwnedFd> = Vec::new();
        for m in control.drain() {
            if let rustix::net::RecvAncillaryMessage::ScmRights(r) = m {
                fds.extend(r);
            }
        }
        assert_eq!(fds.len(), 2, "the genuine answer carries two descriptors");
        let row_count = u32::from_le_bytes(msg[56..60].try_into().unwrap()) as usize;
        assert!(row_count > 0, "the genuine publisher sends rows");
        let mut rows = vec![0u8; 16 + 20 * row_count];
        g.read_exact(&mut rows).unwrap();

        // The forged answer: the same message and rows, the crafted memfd in place of the arena.
        let c = listener.accept().unwrap().0;
        let send = [forged.as_fd(), fds[1].as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&send)));
        rustix::net::sendmsg(
            &c,
            &[std::io::IoSlice::new(&msg)],
            &mut control,
            rustix::net::SendFlags::empty(),
        )
        .unwrap();
        // The client has not opted in, so it does not read the rows: it may close the
        // connection before they are all written (a broken pipe here is that, not a failure).
        let _ = (&c).write_all(&rows);
        // Keep the connection open until the client has read everything.
        let mut end = [0u8; 1];
        let _ = (&c).read(&mut end);
    });
    match shmarena::connect(&forged_name) {
        Ok(got) => {
            assert!(
                !got.trusts::<Vec<u32>>("v"),
                "rows taken from an answer nobody vouched for"
            );
            assert_corrupted(
                got.get::<Vec<u32>>("v")
                    .map(|v| v.iter().map(|x| u64::from(x.to_native())).sum::<u64>()),
            );
        }
        Err(e) => panic!("expected the forged arena, validated on read; got {e}"),
    }
    answer.join().unwrap();
    drop(publisher);
    println!("OK:forged_service_answer_child");
}

// ---------------------------------------------------------------------------------------------
// Path 5: a forged `share_with` environment.

/// The parent calls `share_with`, reads the entry back from `cmd.get_envs()`, and points it at
/// a crafted sealed memfd whose close-on-exec flag it cleared, keeping the genuine rows. The
/// child, which has not opted in, validates: a typed error, no signal.
#[test]
fn a_forged_share_with_environment_is_validated() {
    let (arena, bytes) = genuine_and_forged();
    let forged = sealed_memfd(&bytes);
    rustix::io::fcntl_setfd(&forged, rustix::io::FdFlags::empty()).unwrap();
    let ino = std::fs::File::from(forged.try_clone().unwrap())
        .metadata()
        .unwrap()
        .ino();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "forged_environment_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    arena
        .handle::<Vec<u32>>("v")
        .unwrap()
        .share_with(&mut cmd, "TRUST_CHANNELS_HANDLE")
        .unwrap();
    let genuine = cmd
        .get_envs()
        .find(|(k, _)| *k == INHERITED_FDS_ENV)
        .and_then(|(_, v)| v)
        .expect("share_with set the entry")
        .to_str()
        .unwrap()
        .to_owned();
    let (id, rest) = genuine.split_once('=').unwrap();
    let trust = rest
        .splitn(3, ':')
        .nth(2)
        .expect("the parent sends trust rows");
    let fd = forged.as_raw_fd();
    cmd.env(INHERITED_FDS_ENV, format!("{id}={fd}:{ino}:{trust}"));
    run_checked(&mut cmd, "forged_environment_child");
    drop(forged);
}

#[test]
#[ignore = "run by a_forged_share_with_environment_is_validated"]
fn forged_environment_child() {
    let h = Handle::<Vec<u32>>::from_env("TRUST_CHANNELS_HANDLE").unwrap();
    let arena = h.arena().unwrap();
    assert!(!arena.trusts::<Vec<u32>>("v"), "rows taken without opt-in");
    assert_corrupted(
        h.get()
            .map(|v| v.iter().map(|x| u64::from(x.to_native())).sum::<u64>()),
    );
    println!("OK:forged_environment_child");
}

/// The genuine entry, without the opt-in: the child attaches the inherited descriptor and
/// validates each entry once (then caches it).
#[test]
fn a_genuine_environment_without_opt_in_validates_once() {
    let (arena, _) = genuine_and_forged();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "no_opt_in_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    arena
        .handle::<Vec<u32>>("v")
        .unwrap()
        .share_with(&mut cmd, "TRUST_CHANNELS_HANDLE")
        .unwrap();
    run_checked(&mut cmd, "no_opt_in_child");
}

#[test]
#[ignore = "run by a_genuine_environment_without_opt_in_validates_once"]
fn no_opt_in_child() {
    let h = Handle::<Vec<u32>>::from_env("TRUST_CHANNELS_HANDLE").unwrap();
    let arena = h.arena().unwrap();
    assert!(!arena.trusts::<Vec<u32>>("v"));
    assert_eq!(&*h.get().unwrap(), &[1, 2, 3][..]);
    assert!(arena.trusts::<Vec<u32>>("v"), "validated once, then cached");
    println!("OK:no_opt_in_child");
}

/// A launcher that runs `keep_vouched_rows` last (the pool does) passes genuine rows intact and
/// strips the rows of an edited entry: a child that opted in then validates the forged arena.
#[test]
fn keep_vouched_rows_strips_an_edited_entry() {
    let (arena, bytes) = genuine_and_forged();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "opted_in_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    arena
        .handle::<Vec<u32>>("v")
        .unwrap()
        .share_with(&mut cmd, "TRUST_CHANNELS_HANDLE")
        .unwrap();
    let env = |cmd: &Command| {
        cmd.get_envs()
            .find(|(k, _)| *k == INHERITED_FDS_ENV)
            .and_then(|(_, v)| v)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let genuine = env(&cmd);
    assert!(shmarena::keep_vouched_rows(&mut cmd));
    assert_eq!(env(&cmd), genuine, "share_with's own entry is kept whole");
    cmd.env("TRUST_CHANNELS_EXPECT", "trusted");
    run_checked(&mut cmd, "opted_in_child");

    // The same entry pointed at a crafted memfd: its rows go, the descriptor stays listed.
    let forged = sealed_memfd(&bytes);
    rustix::io::fcntl_setfd(&forged, rustix::io::FdFlags::empty()).unwrap();
    let ino = std::fs::File::from(forged.try_clone().unwrap())
        .metadata()
        .unwrap()
        .ino();
    let (id, rest) = genuine.split_once('=').unwrap();
    let trust = rest.splitn(3, ':').nth(2).unwrap();
    let fd = forged.as_raw_fd();
    cmd.env(INHERITED_FDS_ENV, format!("{id}={fd}:{ino}:{trust}"));
    assert!(!shmarena::keep_vouched_rows(&mut cmd));
    assert_eq!(env(&cmd), format!("{id}={fd}:{ino}"));
    cmd.env("TRUST_CHANNELS_EXPECT", "forged");
    run_checked(&mut cmd, "opted_in_child");
    drop(forged);
}

#[test]
#[ignore = "run by keep_vouched_rows_strips_an_edited_entry"]
fn opted_in_child() {
    // SAFETY: started only by `keep_vouched_rows_strips_an_edited_entry`, whose entries are
    // `share_with`'s own or had their rows stripped by `keep_vouched_rows`.
    unsafe { shmarena::trust_inherited_rows() };
    let h = Handle::<Vec<u32>>::from_env("TRUST_CHANNELS_HANDLE").unwrap();
    let arena = h.arena().unwrap();
    match std::env::var("TRUST_CHANNELS_EXPECT").unwrap().as_str() {
        "trusted" => {
            assert!(
                arena.trusts::<Vec<u32>>("v"),
                "opted in: the rows are taken"
            );
            assert!(!arena.trusts::<Vec<u64>>("v"));
            assert_eq!(&*h.get().unwrap(), &[1, 2, 3][..]);
        }
        _ => {
            assert!(!arena.trusts::<Vec<u32>>("v"));
            assert_corrupted(
                h.get()
                    .map(|v| v.iter().map(|x| u64::from(x.to_native())).sum::<u64>()),
            );
        }
    }
    println!("OK:opted_in_child");
}
