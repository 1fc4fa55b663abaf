//! Attach: open an arena and read its first value, in each backing and at several sizes, against
//! the raw floor of the same open + `fstat` + `mmap` + touch with none of the library's checks.
//!
//! Issue 6 target: ≤ 50 µs and flat in size on the sealed-memfd path.

use std::fs::File;
use std::hint::black_box;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion};
use shmarena::{Arena, ArenaOptions};
use shmarena_bench::{attach_sizes, first_value, pod_arena, size_label, unique_name, TempDir};

fn open_shm_ro(name: &str) -> File {
    let fd = rustix::shm::open(name, rustix::shm::OFlags::RDONLY, rustix::fs::Mode::empty())
        .expect("shm_open");
    File::from(fd)
}

fn attach(c: &mut Criterion) {
    let dir = TempDir::new().expect("temporary directory");
    for size in attach_sizes() {
        let label = size_label(size);

        // Sealed memfd, built by this process: reached through /proc/self/fd/N (as another
        // process of the user would, with its pid) or from a descriptor (as a forked or spawned
        // child that inherited it would).
        let arena = pod_arena(ArenaOptions::new(), size);
        assert!(arena.is_kernel_sealed());
        let pid = std::process::id();
        let fd = arena.as_fd().as_raw_fd();
        let proc_path = PathBuf::from(format!("/proc/self/fd/{fd}"));
        let mut g = c.benchmark_group("attach/memfd-proc");
        g.bench_with_input(
            BenchmarkId::new("baseline: open /proc/self/fd/N+mmap+touch", &label),
            &proc_path,
            |b, p| {
                b.iter(|| {
                    let f = File::open(p).expect("open");
                    black_box(shmarena_bench::baseline::map_and_touch(&f).expect("map"))
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("Arena::open_memfd", &label),
            &fd,
            |b, fd| b.iter(|| first_value(&Arena::open_memfd(pid, *fd).expect("open_memfd"))),
        );
        g.finish();

        let mut g = c.benchmark_group("attach/memfd-fd");
        g.bench_with_input(
            BenchmarkId::new("baseline: dup+mmap+touch", &label),
            &arena,
            |b, a| {
                b.iter(|| {
                    let f = File::from(a.as_fd().try_clone_to_owned().expect("dup"));
                    black_box(shmarena_bench::baseline::map_and_touch(&f).expect("map"))
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("Arena::open_fd", &label),
            &arena,
            |b, a| {
                b.iter(|| {
                    let fd = a.as_fd().try_clone_to_owned().expect("dup");
                    first_value(&Arena::open_fd(fd).expect("open_fd"))
                })
            },
        );
        g.finish();
        drop(arena);

        // Named segments and files are copied into a sealed memfd by the safe API (issue 11):
        // O(size), so they are measured only up to 64 MiB.
        if size > 64 << 20 {
            continue;
        }

        // Named segment in /dev/shm.
        let name = unique_name("attach");
        let arena = pod_arena(ArenaOptions::new().named(&name), size);
        let mut g = c.benchmark_group("attach/named");
        g.bench_with_input(
            BenchmarkId::new("baseline: shm_open+mmap+touch", &label),
            &name,
            |b, n| {
                b.iter(|| {
                    black_box(
                        shmarena_bench::baseline::map_and_touch(&open_shm_ro(n)).expect("map"),
                    )
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("Arena::load_named (copies)", &label),
            &name,
            |b, n| b.iter(|| first_value(&Arena::load_named(n).expect("load_named"))),
        );
        g.finish();
        drop(arena); // unlinks the name

        // File (in the temporary directory; its pages stay in the page cache).
        let path = dir.path().join(format!("attach-{label}.arena"));
        let arena = pod_arena(ArenaOptions::new().file(&path), size);
        let mut g = c.benchmark_group("attach/file");
        g.bench_with_input(
            BenchmarkId::new("baseline: open+mmap+touch", &label),
            &path,
            |b, p| {
                b.iter(|| {
                    let f = File::open(p).expect("open");
                    black_box(shmarena_bench::baseline::map_and_touch(&f).expect("map"))
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("Arena::load_file (copies)", &label),
            &path,
            |b, p| b.iter(|| first_value(&Arena::load_file(p).expect("load_file"))),
        );
        g.finish();
        drop(arena);
        std::fs::remove_file(&path).expect("remove the arena file");
    }
}

shmarena_bench::bench_main!(2; attach);
