//! Linux system calls, behind safe functions. The rest of the crate sees only this module's
//! safe API; the two mapping types here are the only place memory is mapped.

use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::path::Path;

use memmap2::{Mmap, MmapMut, MmapOptions, RemapOptions};
use rustix::fs::{FallocateFlags, Mode, OFlags, SealFlags};

#[path = "build_id.rs"]
mod build_id;
#[path = "service.rs"]
pub(crate) mod service;

#[path = "procfs.rs"]
pub(crate) mod procfs;
pub(crate) use build_id::{build_id, build_id_known};

/// Where POSIX shared memory objects live on Linux.
pub(crate) const SHM_DIR: &str = "/dev/shm";

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// What a memfd this crate makes holds. Its debug name says so: `/proc/PID/fd/N` links and
/// `/proc/PID/maps` paths read `/memfd:NAME (deleted)`, and `inspect` finds arenas by that name.
/// Every memfd is made through [`memfd_create`] with one of these, so the names made and the
/// names looked for cannot drift apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemfdKind {
    /// An arena built in place (`ArenaOptions::new()`).
    Arena,
    /// A sealed copy of an arena's bytes: a load of a file or named segment (`arena-serve`'s
    /// images among them), and the arena a named or file writer's seal returns.
    ArenaCopy,
    /// The service's one-page generation counter; not an arena.
    GenerationPage,
}

impl MemfdKind {
    /// Every kind.
    pub(crate) const ALL: [MemfdKind; 3] = [
        MemfdKind::Arena,
        MemfdKind::ArenaCopy,
        MemfdKind::GenerationPage,
    ];

    /// The debug name given to `memfd_create`.
    pub(crate) const fn debug_name(self) -> &'static str {
        match self {
            MemfdKind::Arena => "shmarena",
            MemfdKind::ArenaCopy => "shmarena-image",
            MemfdKind::GenerationPage => "shmarena-generation",
        }
    }

    /// Whether memfds of this kind hold an arena.
    pub(crate) const fn holds_arena(self) -> bool {
        matches!(self, MemfdKind::Arena | MemfdKind::ArenaCopy)
    }

    /// The kind a `/proc/PID/fd` link or `/proc/PID/maps` path names (`/memfd:NAME`, with or
    /// without ` (deleted)`), if it is a memfd this crate made; `None` for anything else, such
    /// as another program's memfd called `shmarena-cache`.
    pub(crate) fn of_proc_path(path: &str) -> Option<MemfdKind> {
        let name = path.strip_prefix("/memfd:")?;
        let name = name.strip_suffix(" (deleted)").unwrap_or(name);
        MemfdKind::ALL.into_iter().find(|k| k.debug_name() == name)
    }
}

/// An anonymous memfd that allows sealing, close-on-exec, named for what it holds, mode 0400,
/// sealed against shrinking.
///
/// Mode 0400: memfds start as 0777, and any process of the user can reach this one through
/// `/proc/PID/fd/N`. The mode does not stop that process (its owner may `chmod` it back through
/// the same path): what stops writes is `F_SEAL_FUTURE_WRITE` (see [`seal_future_writes`]), and
/// what a writer trusts is checked again once the bytes are sealed (`Arena::from_sealed_segment`). `F_SEAL_SHRINK` from the start: a mapping
/// of it can never lose its pages under the mapper (no SIGBUS), whoever truncates.
pub(crate) fn memfd_create(kind: MemfdKind) -> io::Result<File> {
    let flags = rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING;
    let fd = rustix::fs::memfd_create(kind.debug_name(), flags).map_err(errno)?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o400)).map_err(errno)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK).map_err(errno)?;
    Ok(File::from(fd))
}

/// Adds `F_SEAL_FUTURE_WRITE` to a memfd: from now on no `write(2)` and no new writable shared
/// mapping, from any process; mappings that exist (the writer's own) stay writable, and the file
/// can still grow. `Ok(false)` on a kernel older than 5.1, which does not know the seal.
pub(crate) fn seal_future_writes(file: &File) -> io::Result<bool> {
    match rustix::fs::fcntl_add_seals(file, SealFlags::FUTURE_WRITE) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::INVAL) => Ok(false),
        Err(e) => Err(errno(e)),
    }
}

/// Creates `/dev/shm/<name>` exclusively, mode 0600, read-write.
pub(crate) fn shm_create(name: &str) -> io::Result<File> {
    create_excl(Path::new(SHM_DIR).join(name).as_path())
}

/// Opens `/dev/shm/<name>` read-only without following symlinks and without blocking (a FIFO
/// there opens at once and is refused by the caller's regular-file check).
pub(crate) fn shm_open_ro(name: &str) -> io::Result<File> {
    open_ro(Path::new(SHM_DIR).join(name).as_path())
}

/// The path of `/dev/shm/<name>`.
pub(crate) fn shm_path(name: &str) -> std::path::PathBuf {
    Path::new(SHM_DIR).join(name)
}

/// Removes `/dev/shm/<name>`.
pub(crate) fn shm_unlink(name: &str) -> io::Result<()> {
    rustix::fs::unlink(Path::new(SHM_DIR).join(name)).map_err(errno)
}

/// Creates a file exclusively (never through a symlink), mode 0600, read-write.
pub(crate) fn create_excl(path: &Path) -> io::Result<File> {
    let flags = OFlags::CREATE
        | OFlags::EXCL
        | OFlags::RDWR
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::from_raw_mode(0o600)).map_err(errno)?;
    Ok(File::from(fd))
}

/// Opens `path` read-only without opening anything but a regular file: first with `O_PATH`,
/// which opens nothing (no device driver runs, no FIFO or terminal is touched), then `fstat`;
/// only a regular file is then opened for reading, through `/proc/self/fd/N` of that very
/// `O_PATH` descriptor (so the file checked is the file opened), with `O_NOCTTY | O_NONBLOCK`.
/// Anything else comes back as the `O_PATH` descriptor itself, which `fstat` describes and no
/// read gets through, for the caller's regular-file check to refuse. A symlink in the last
/// component is followed only if `follow` (else `ELOOP`, as `O_NOFOLLOW` gives).
pub(crate) fn open_regular_or_path(path: &Path, follow: bool) -> io::Result<File> {
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let at = rustix::fs::open(path, flags, Mode::empty()).map_err(errno)?;
    let st = rustix::fs::fstat(&at).map_err(errno)?;
    match rustix::fs::FileType::from_raw_mode(st.st_mode as _) {
        rustix::fs::FileType::RegularFile => {}
        rustix::fs::FileType::Symlink => return Err(errno(rustix::io::Errno::LOOP)),
        _ => return Ok(File::from(at)),
    }
    use std::os::fd::AsRawFd;
    let again = format!("/proc/self/fd/{}", at.as_raw_fd());
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd = rustix::fs::open(again.as_str(), flags, Mode::empty()).map_err(errno)?;
    Ok(File::from(fd))
}

/// Opens a file read-only without following a symlink in the last component, and without
/// opening anything but a regular file ([`open_regular_or_path`]): a FIFO or device comes back
/// unopened, for the caller's regular-file check to refuse before reading.
pub(crate) fn open_ro(path: &Path) -> io::Result<File> {
    open_regular_or_path(path, false)
}

/// Opens a path read-only, following symlinks (for `/proc/PID/fd/N`, which is one), without
/// opening anything but a regular file ([`open_regular_or_path`]).
pub(crate) fn open_ro_follow(path: &Path) -> io::Result<File> {
    open_regular_or_path(path, true)
}

/// Renames `from` to `to`, failing with `AlreadyExists` if `to` exists.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(errno)
}

/// Renames `from` to `to`, replacing `to`.
pub(crate) fn rename_replace(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)
}

/// Removes a file.
pub(crate) fn unlink(path: &Path) -> io::Result<()> {
    rustix::fs::unlink(path).map_err(errno)
}

/// Grows `file` from `from` to `to` bytes and reserves the blocks, so a full file system is an
/// `ENOSPC` error here rather than a SIGBUS on first touch. Falls back to a plain (sparse)
/// `ftruncate` where the file system has no `fallocate`.
pub(crate) fn reserve(file: &File, from: u64, to: u64) -> io::Result<()> {
    debug_assert!(to >= from);
    match rustix::fs::fallocate(file, FallocateFlags::empty(), from, to - from) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => file.set_len(to),
        Err(e) => {
            // tmpfs undoes a partial allocation on failure, but make sure the size is as before.
            let _ = file.set_len(from);
            Err(errno(e))
        }
    }
}

/// Applies every seal that makes a memfd immutable: no write, grow or shrink, no further seals.
pub(crate) fn seal_memfd(file: &File) -> io::Result<()> {
    let seals = SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL;
    rustix::fs::fcntl_add_seals(file, seals).map_err(errno)
}

/// The seals of a memfd, or `None` for a file that cannot carry seals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seals {
    pub(crate) write: bool,
    pub(crate) grow: bool,
    pub(crate) shrink: bool,
    pub(crate) seal: bool,
}

impl Seals {
    /// Whether the contents can never change again.
    pub(crate) fn immutable(&self) -> bool {
        self.write && self.shrink && self.grow
    }
}

pub(crate) fn seals(file: &File) -> Option<Seals> {
    let s = rustix::fs::fcntl_get_seals(file).ok()?;
    Some(Seals {
        write: s.contains(SealFlags::WRITE),
        grow: s.contains(SealFlags::GROW),
        shrink: s.contains(SealFlags::SHRINK),
        seal: s.contains(SealFlags::SEAL),
    })
}

/// The mode [`Arena::persist`](crate::Arena::persist) gives a sealed named segment: read-only,
/// plus the owner-execute bit as a mark that [`inspect::gc`](crate::inspect::gc) reads. It is
/// information for gc, not a promise to readers.
pub(crate) const PERSISTED_MODE: u32 = 0o500;

/// The bit of [`PERSISTED_MODE`] that marks a persisted segment.
pub(crate) const PERSISTED_BIT: u32 = 0o100;

/// Sets the permission bits.
pub(crate) fn chmod(file: &File, mode: u32) -> io::Result<()> {
    rustix::fs::fchmod(file, Mode::from_raw_mode(mode)).map_err(errno)
}

/// What `fstat` says about an open file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FileInfo {
    pub(crate) size: u64,
    pub(crate) uid: u32,
    pub(crate) mode: u32,
    pub(crate) is_regular: bool,
}

pub(crate) fn file_info(file: &File) -> io::Result<FileInfo> {
    let st = rustix::fs::fstat(file).map_err(errno)?;
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode as _);
    Ok(FileInfo {
        size: st.st_size as u64,
        uid: st.st_uid,
        mode: (st.st_mode as u32) & 0o7777,
        is_regular: ft == rustix::fs::FileType::RegularFile,
    })
}

/// The device and inode numbers of a descriptor's file: what the file is, while it exists.
pub(crate) fn file_identity(fd: impl std::os::fd::AsFd) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd).map_err(errno)?;
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// The inode number of a descriptor's file (a memfd's is unique while it exists).
pub(crate) fn inode(fd: impl std::os::fd::AsFd) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd).map_err(errno)?.st_ino as u64)
}

/// The effective uid of this process.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The pid of this process (changes after `fork`).
pub(crate) fn pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// 16 random bytes from the kernel.
pub(crate) fn random_id() -> io::Result<[u8; 16]> {
    let mut id = [0u8; 16];
    let mut filled = 0;
    while filled < id.len() {
        let n = rustix::rand::getrandom(&mut id[filled..], rustix::rand::GetRandomFlags::empty())
            .map_err(errno)?;
        filled += n;
    }
    Ok(id)
}

/// What `/proc/PID/stat` says about a process: its state letter (field 3) and start time in
/// clock ticks after boot (field 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) state: char,
    pub(crate) start: u64,
}

/// `/proc/PID/stat` of a process, or `None` if it does not exist (or `pid` is 0).
pub(crate) fn process_stat(pid: u32) -> Option<ProcStat> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) is in parentheses and may contain anything; fields after the last
    // ')' start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some(ProcStat { state, start })
}

/// Start time of a process in clock ticks after boot (`/proc/PID/stat` field 22), or `None` if
/// it does not exist. With the pid it identifies a process even across pid reuse.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    process_stat(pid).map(|s| s.start)
}

/// The pids of `/proc`, in directory order; empty if `/proc` cannot be read.
pub(crate) fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The descriptors of process `pid` (`/proc/PID/fd`): number and link target; empty if the
/// process is gone or this user may not look.
pub(crate) fn fd_links(pid: u32) -> Vec<(i32, std::path::PathBuf)> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            Some((fd, std::fs::read_link(e.path()).ok()?))
        })
        .collect()
}

/// The path through which descriptor `fd` of process `pid` can be opened or `stat`ed.
pub(crate) fn fd_path(pid: u32, fd: i32) -> std::path::PathBuf {
    format!("/proc/{pid}/fd/{fd}").into()
}

/// `/proc/PID/maps`, or `None` if unreadable.
pub(crate) fn maps(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()
}

/// A process's command name (`/proc/PID/comm`), empty if unreadable.
pub(crate) fn command(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

/// A process's command line (`/proc/PID/cmdline`, arguments joined by spaces), empty for kernel
/// threads or if unreadable.
pub(crate) fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Linux's `makedev`: the `st_dev` value of a `major:minor` pair as `/proc/PID/maps` prints it.
pub(crate) fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

/// The device number in the `dev` field (`MAJOR:MINOR`, hexadecimal) of a `/proc/PID/maps`
/// line.
pub(crate) fn parse_maps_dev(field: &str) -> Option<u64> {
    let (major, minor) = field.split_once(':')?;
    let major = u64::from_str_radix(major, 16).ok()?;
    let minor = u64::from_str_radix(minor, 16).ok()?;
    Some(makedev(major, minor))
}

/// Opens a path read-only for a header read: never opens anything but a regular file
/// ([`open_regular_or_path`]) and, unless `follow`, never follows a symlink in the last
/// component.
pub(crate) fn open_ro_nonblock(path: &Path, follow: bool) -> io::Result<File> {
    open_regular_or_path(path, follow)
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A writable shared mapping of a memfd that the writer grows as it writes: `len` bytes of
/// address space, of which the first `valid` are backed by the file and handed out as slices.
///
/// INVARIANTS: the file carries `F_SEAL_SHRINK` (checked when mapped), so once it holds `valid`
/// bytes it always does, whoever tries to truncate it; `valid <= map.len()`, and the file is at
/// least `valid` bytes long (the writer reserves before it raises `valid`). Only `..valid` is
/// ever turned into a slice: the address space past the end of the file would fault. `map`
/// exists only in process `pid` (it is `MADV_DONTFORK`): in any other process (a fork child)
/// its address range may hold unrelated memory, so there it is never dropped (no `munmap`).
pub(crate) struct MapMut {
    map: ManuallyDrop<MmapMut>,
    valid: usize,
    pid: u32,
}

impl Drop for MapMut {
    fn drop(&mut self) {
        if self.pid == pid() {
            // SAFETY: `map` is dropped exactly once, here, and not used after: `self` is being
            // dropped. In another process (a fork child, where the range was never inherited)
            // it is leaked instead, so nothing unmaps memory that is not this mapping.
            unsafe { ManuallyDrop::drop(&mut self.map) }
        }
    }
}

impl MapMut {
    /// Maps `len` bytes of address space over `file` (at least one byte), of which the first
    /// `valid` must already be in the file. `file` must carry `F_SEAL_SHRINK`
    /// ([`memfd_create`] adds it); anything else is refused with `EPERM`.
    pub(crate) fn new(file: &File, len: usize, valid: usize) -> io::Result<MapMut> {
        let shrink_sealed = rustix::fs::fcntl_get_seals(file)
            .map_err(errno)?
            .contains(SealFlags::SHRINK);
        let size = rustix::fs::fstat(file).map_err(errno)?.st_size as u64;
        if !shrink_sealed || valid > len || (valid as u64) > size {
            return Err(errno(rustix::io::Errno::PERM));
        }
        // SAFETY: the mapping is shared and writable over a file that holds at least `valid`
        // bytes (checked above) and can never shrink (`F_SEAL_SHRINK`, checked above, cannot be
        // removed), so the `valid` bytes handed out as slices stay backed whatever any process
        // does; the address space past them is never read or written until the file has grown
        // over it (`set_valid`). The writer is the only writer of the bytes: it seals
        // the memfd with `F_SEAL_FUTURE_WRITE` right after mapping it (docs/DESIGN.md, "Trust
        // model", says what that leaves to chance), and this process maps it writable nowhere
        // else.
        let map = unsafe { MmapOptions::new().len(len).map_mut(file)? };
        let map = MapMut {
            map: ManuallyDrop::new(map),
            valid,
            pid: pid(),
        };
        map.dont_fork()?;
        Ok(map)
    }

    /// Keeps the writable mapping out of children forked while the writer works (by any thread
    /// of this process): a child holding it would make `F_SEAL_WRITE` fail with EBUSY, and could
    /// write to the arena being built.
    fn dont_fork(&self) -> io::Result<()> {
        self.map.advise(memmap2::Advice::DontFork)
    }

    /// Grows the address space to `new_len` bytes (it may move; `valid` stays).
    pub(crate) fn grow(&mut self, new_len: usize) -> io::Result<()> {
        if new_len <= self.map.len() {
            return Ok(());
        }
        // SAFETY: `&mut self` proves no reference into the old mapping is alive, so the mapping
        // may move; `mremap` of a mapping that exists is allowed under `F_SEAL_FUTURE_WRITE`
        // (only new mappings are refused), and it keeps the bytes and flags (`MADV_DONTFORK`
        // included) of the pages it moves.
        unsafe { self.map.remap(new_len, RemapOptions::new().may_move(true)) }
    }

    /// Records that the file now holds at least `valid` bytes (the caller reserved them), so
    /// they may be handed out. Never lowers the mark, and never past the address space.
    pub(crate) fn set_valid(&mut self, valid: usize) {
        debug_assert!(valid <= self.map.len());
        self.valid = self.valid.max(valid.min(self.map.len()));
    }

    /// Bytes of address space.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes backed by the file, and handed out.
    #[inline]
    pub(crate) fn valid(&self) -> usize {
        self.valid
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map[..self.valid]
    }

    #[inline]
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map[..self.valid]
    }
}

/// A read-only shared mapping (`PROT_READ`, `MAP_SHARED`).
///
/// INVARIANTS: the mapping is never writable, and it covers `len` bytes that were inside the
/// file when it was mapped.
pub(crate) struct MapRo {
    map: Mmap,
}

impl MapRo {
    /// Maps the first `len` bytes of `file` read-only. `len` must be non-zero and at most the
    /// file's current length.
    pub(crate) fn new(file: &File, len: usize) -> io::Result<MapRo> {
        // SAFETY: `len` is at most the file length the caller just read with fstat, so every
        // byte is backed when mapped. The mapping is PROT_READ, so this process cannot write it.
        // Whether another process can change or truncate the file is the trust question
        // docs/DESIGN.md answers per backing: a sealed memfd cannot change at all (the caller
        // checks the seals before trusting it); a named object or file is accepted only if owned
        // by this user, and its archived entries are validated before use.
        let map = unsafe { MmapOptions::new().len(len).map(file)? };
        Ok(MapRo { map })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// Makes the descriptor of `keep` survive `exec` in the child `cmd` spawns, and only there:
/// the close-on-exec flag is cleared between fork and exec, in the child. The hook owns `keep`
/// (an arena clone, say), so the descriptor number stays open, and means the same file, for as
/// long as `cmd` exists, even if the caller drops its own copy before spawning.
pub(crate) fn inherit_fd_in<K>(cmd: &mut std::process::Command, keep: K)
where
    K: std::os::fd::AsFd + Send + Sync + 'static,
{
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // work is allowed: `keep.as_fd()` reads a field (no allocation, no locks) and rustix makes
    // one fcntl system call. The closure owns `keep`, so its descriptor is open in the parent
    // until `cmd` is dropped, hence open (the same file) in the child forked by `cmd.spawn`.
    unsafe {
        cmd.pre_exec(move || {
            rustix::io::fcntl_setfd(keep.as_fd(), rustix::io::FdFlags::empty())
                .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))
        });
    }
}

/// A close-on-exec duplicate of an inherited descriptor number, after checking it is open. The
/// original number is left alone, so a wrong guess about who owns it cannot close another's.
pub(crate) fn adopt_inherited_fd(fd: std::os::fd::RawFd) -> io::Result<File> {
    use std::os::fd::BorrowedFd;
    if fd < 0 {
        return Err(errno(rustix::io::Errno::BADF));
    }
    // SAFETY: `fd` is non-negative; fcntl(F_GETFD) on any number is harmless and tells
    // whether it is open (EBADF otherwise). The borrow ends with the call.
    let flags = rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) });
    flags.map_err(errno)?;
    // SAFETY: as above, `fd` is open for the duration of this call.
    let dup =
        rustix::io::fcntl_dupfd_cloexec(unsafe { BorrowedFd::borrow_raw(fd) }, 3).map_err(errno)?;
    Ok(File::from(dup))
}

/// Returns free memory to the system: first rkyv's scratch arena of the calling thread (which
/// [`ArenaWriter::put`](crate::ArenaWriter::put) fills and rkyv keeps for the next
/// serialization: tens of MiB after archiving a map of a million entries), then the free pages
/// of this process's heap (glibc's `malloc_trim(0)`: freed blocks in the middle of the heap as
/// well as at its end). After dropping a large private value (the source of an arena, say), the
/// process otherwise keeps those pages, and forks copy their page tables.
///
/// Returns whether the allocator released any memory; always `false` with an allocator other
/// than glibc's (the rkyv arena is released either way).
///
/// ```
/// let big: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
/// drop(big);
/// let _released: bool = shmarena::release_free_memory();
/// ```
pub fn release_free_memory() -> bool {
    rkyv::util::clear_arena();
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: `malloc_trim` has no preconditions: it takes the allocator's own locks and
        // only returns pages of blocks that are free, which nothing may use.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makedev_matches_the_kernel() {
        assert_eq!(makedev(0, 1), 1);
        assert_eq!(makedev(8, 1), 0x801);
        assert_eq!(makedev(259, 3), (259 << 8) | 3);
        assert_eq!(makedev(0, 300), (1 << 12 << 8) | (300 & 0xff));
    }

    #[test]
    fn this_process_has_a_stat() {
        let stat = process_stat(pid()).unwrap();
        assert_ne!(stat.state, 'Z');
        assert_eq!(Some(stat.start), process_start_time(pid()));
        assert_eq!(process_stat(0), None);
        assert!(pids().contains(&pid()));
        assert!(!fd_links(pid()).is_empty());
    }
}
