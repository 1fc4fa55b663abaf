//! `published`: the names published on this machine (`Arena::publish`, `arena-serve`).

use std::io::Write;

use anyhow::Result;
use serde_json::json;
use shmarena::inspect;

use crate::arena::PUBLISHED_PREFIX;
use crate::output::{self, Table};

pub(crate) fn published(json: bool, out: &mut dyn Write) -> Result<i32> {
    let names = inspect::published();
    if json {
        let rows: Vec<_> = names
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "arena": (Some(p.uid) == own_uid()).then(|| arena_arg(p)),
                    "serving": p.serving.as_ref().map(|l| l.to_string()),
                    "uid": p.uid,
                    "publisher_pid": p.publisher,
                    "command": p.command,
                    "generation": p.generation,
                    "size": p.size,
                    "id": p.arena_id.map(|id| id.to_string()),
                    "readers": p.readers.iter().map(|h| json!({
                        "pid": h.pid,
                        "command": h.command,
                        "mapped": h.mapped,
                        "fds": h.fds,
                    })).collect::<Vec<_>>(),
                    "error": p.error,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
        return Ok(0);
    }
    if names.is_empty() {
        writeln!(out, "no published names found")?;
        return Ok(0);
    }
    let mut t = Table::new(&[
        "ARENA", ">UID", ">PID", "COMMAND", ">GEN", ">SIZE", "SERVING", ">READERS", "NOTE",
    ]);
    for p in &names {
        let readers: Vec<String> = p.readers.iter().map(|h| h.pid.to_string()).collect();
        t.row(vec![
            arena_arg(p),
            p.uid.to_string(),
            p.publisher.map_or("?".into(), |pid| pid.to_string()),
            if p.command.is_empty() {
                "-".into()
            } else {
                p.command.clone()
            },
            p.generation.map_or("?".into(), |g| g.to_string()),
            p.size.map_or("?".into(), output::size),
            p.serving.as_ref().map_or("-".into(), |l| l.to_string()),
            if readers.is_empty() {
                "0".into()
            } else {
                format!("{} ({})", readers.len(), readers.join(","))
            },
            p.error.clone().unwrap_or_default(),
        ]);
    }
    t.print(out)?;
    writeln!(
        out,
        "\nARENA: what to give info, verify, dump or who; it names the generation served at the \
         time (for this user's names; another user's name is shown bare).\n\
         SERVING: the publisher's descriptor of the generation served now; it names nothing, or \
         another arena, after the next publish."
    )?;
    Ok(0)
}

/// This process's effective uid (the owner of `/proc/self`).
fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// How to name a published arena on the command line: `pub:NAME` for this user's names (the
/// namespace `pub:` looks in), the bare name for another user's.
fn arena_arg(p: &inspect::Published) -> String {
    if Some(p.uid) == own_uid() {
        format!("{PUBLISHED_PREFIX}{}", p.name)
    } else {
        p.name.clone()
    }
}
