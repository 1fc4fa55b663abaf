//! `published`: the names published on this machine (`Arena::publish`, `arena-serve`).

use std::io::Write;

use anyhow::Result;
use serde_json::json;
use shmarena::inspect;

use crate::output::{self, Table};

pub(crate) fn published(json: bool, out: &mut dyn Write) -> Result<i32> {
    let names = inspect::published();
    if json {
        let rows: Vec<_> = names
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
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
        "NAME", ">UID", ">PID", "COMMAND", ">GEN", ">SIZE", ">READERS", "NOTE",
    ]);
    for p in &names {
        let readers: Vec<String> = p.readers.iter().map(|h| h.pid.to_string()).collect();
        t.row(vec![
            p.name.clone(),
            p.uid.to_string(),
            p.publisher.map_or("?".into(), |pid| pid.to_string()),
            if p.command.is_empty() {
                "-".into()
            } else {
                p.command.clone()
            },
            p.generation.map_or("?".into(), |g| g.to_string()),
            p.size.map_or("?".into(), output::size),
            if readers.is_empty() {
                "0".into()
            } else {
                format!("{} ({})", readers.len(), readers.join(","))
            },
            p.error.clone().unwrap_or_default(),
        ]);
    }
    t.print(out)?;
    Ok(0)
}
