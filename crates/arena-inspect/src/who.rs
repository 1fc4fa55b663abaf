//! `who`: the processes that map an arena or hold a descriptor to it, and what it costs.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::json;
use shmarena::inspect;
use shmarena::Locator;

use crate::arena::target;
use crate::output::{self, Table};

pub(crate) fn who(arg: &str, json: bool, out: &mut dyn Write) -> Result<i32> {
    let named = target(arg)?;
    let usage = inspect::usage(named.locator()).with_context(|| format!("cannot inspect {arg}"))?;
    let holders: Vec<_> = usage
        .holders
        .iter()
        .filter(|h| !named.is_own_hold(h.pid))
        .collect();
    // What the arena costs the machine, whoever maps it: for a memfd or a named segment its
    // allocated pages, in memory (or swap) as long as anyone holds it.
    let medium = match named.locator() {
        Locator::File { .. } => "disk",
        _ => "memory",
    };
    if json {
        let rows: Vec<_> = holders
            .iter()
            .map(|h| {
                json!({
                    "pid": h.pid,
                    "command": h.command,
                    "cmdline": h.cmdline,
                    "mapped": h.mapped,
                    "fds": h.fds,
                    "pss_bytes": h.memory.map(|m| m.pss),
                    "touched_bytes": h.memory.map(|m| m.touched),
                    "mapped_bytes": h.memory.map(|m| m.mapped),
                    "anonymous_bytes": h.memory.and_then(|m| m.anonymous),
                    "arena_allocated_bytes": usage.allocated,
                    "arena_allocated_in": medium,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
        return Ok(0);
    }
    let pss: u64 = holders.iter().filter_map(|h| h.memory).map(|m| m.pss).sum();
    writeln!(
        out,
        "{arg}: {} bytes, {} of {medium} allocated (every page written, whether anyone maps \
         it or not); the processes below map {} of it (the sum of their PSS)\n",
        usage.size,
        output::size(usage.allocated),
        output::size(pss),
    )?;
    if holders.is_empty() {
        writeln!(out, "no process maps or holds {arg}")?;
        return Ok(0);
    }
    let mut t = Table::new(&[
        ">PID", "COMMAND", "MAPPED", "FDS", ">PSS", ">TOUCHED", ">ANON", "CMDLINE",
    ]);
    let opt = |v: Option<u64>| v.map_or("-".into(), output::size);
    for h in holders {
        let fds: Vec<String> = h.fds.iter().map(i32::to_string).collect();
        t.row(vec![
            h.pid.to_string(),
            h.command.clone(),
            if h.mapped { "yes" } else { "no" }.into(),
            if fds.is_empty() {
                "-".into()
            } else {
                fds.join(",")
            },
            opt(h.memory.map(|m| m.pss)),
            opt(h.memory.map(|m| m.touched)),
            opt(h.memory.and_then(|m| m.anonymous)),
            h.cmdline.clone(),
        ]);
    }
    t.print(out)?;
    writeln!(
        out,
        "\nPSS: the process's share of the arena pages it maps that are resident (each page \
         divided among the processes mapping it). The pages nobody maps are not in any PSS, but \
         stay allocated while any process holds the arena: see the first line.\n\
         TOUCHED: arena pages it has touched; shared with every other reader, not its own memory.\n\
         ANON: the whole process's own anonymous memory (heap, stacks, copies)."
    )?;
    Ok(0)
}
