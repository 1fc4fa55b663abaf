//! Measuring what processes really use, the way docs/BENCHMARKS.md reports it: proportional set
//! size (`Pss`, shared pages split between the processes that map them) plus page tables
//! (`VmPTE`). Summing `Rss` would count a shared arena once per process. The example and
//! `benches/src/bin/compare.rs` both report these figures.

use std::io;

/// Memory of one process, in KiB, from `/proc/PID/smaps_rollup` and `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    /// Proportional set size: private pages plus this process's share of shared pages.
    pub pss_kib: u64,
    /// The part of `pss_kib` that is shared memory (tmpfs, memfd, shm).
    pub pss_shmem_kib: u64,
    /// Page tables.
    pub pte_kib: u64,
    /// Resident set size, for comparison only: never sum it over processes.
    pub rss_kib: u64,
}

impl ProcessMemory {
    /// Reads the figures of process `pid`.
    pub fn of(pid: u32) -> io::Result<ProcessMemory> {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        Ok(ProcessMemory {
            pss_kib: field_kib(&rollup, "Pss:"),
            pss_shmem_kib: field_kib(&rollup, "Pss_Shmem:"),
            pte_kib: field_kib(&status, "VmPTE:"),
            rss_kib: field_kib(&rollup, "Rss:"),
        })
    }

    /// `pss_kib + pte_kib`: what the process costs the machine.
    pub fn total_kib(&self) -> u64 {
        self.pss_kib + self.pte_kib
    }

    /// The sum over processes (those that no longer exist are skipped).
    pub fn sum(pids: impl IntoIterator<Item = u32>) -> ProcessMemory {
        pids.into_iter()
            .filter_map(|pid| ProcessMemory::of(pid).ok())
            .fold(ProcessMemory::default(), |a, b| ProcessMemory {
                pss_kib: a.pss_kib + b.pss_kib,
                pss_shmem_kib: a.pss_shmem_kib + b.pss_shmem_kib,
                pte_kib: a.pte_kib + b.pte_kib,
                rss_kib: a.rss_kib + b.rss_kib,
            })
    }
}

fn field_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = ProcessMemory::of(std::process::id()).unwrap();
        assert!(me.pss_kib > 0 && me.rss_kib >= me.pss_kib, "{me:?}");
        assert_eq!(field_kib("Pss:     12 kB\nRss: 3 kB", "Pss:"), 12);
    }
}
