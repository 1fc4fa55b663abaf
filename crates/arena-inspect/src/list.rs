//! `list`: every arena this user can see, named segments and memfds held by live processes.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;
use shmarena::error_chain;
use shmarena::inspect::{self, ArenaStatus};

use crate::arena::backing;
use crate::output::{self, Table};

#[derive(Serialize)]
struct ListRow {
    arena: String,
    backing: &'static str,
    id: Option<String>,
    size: u64,
    allocated: u64,
    entries: Option<u32>,
    state: &'static str,
    error: Option<String>,
    owner_pid: Option<u32>,
    owner_alive: Option<bool>,
    age_secs: Option<f64>,
    users: usize,
    uid: u32,
    mode: String,
    /// A sealed copy (a loaded file or segment, arena-serve's image), not the memfd it was
    /// built in: its owner is the arena's writer.
    copy: bool,
}

fn list_row(s: &ArenaStatus) -> ListRow {
    let header = s.header.as_ref().ok();
    ListRow {
        arena: s.locator.to_string(),
        backing: backing(&s.locator),
        id: header.map(|h| shmarena::ArenaId::from_bytes(h.arena_id).to_string()),
        size: s.size,
        allocated: s.allocated,
        entries: s.entry_count(),
        state: s.state(),
        error: s.header_error().map(|e| error_chain(&e)),
        owner_pid: s.owner.map(|o| o.pid),
        owner_alive: s.owner.map(|o| o.alive),
        age_secs: s.age().map(|d| d.as_secs_f64()),
        users: s.holders.len(),
        uid: s.uid,
        mode: format!("{:o}", s.mode),
        copy: s.copy,
    }
}

fn owner_cell(s: &ArenaStatus) -> String {
    match s.owner {
        Some(o) if o.alive => format!("{} alive", o.pid),
        Some(o) => format!("{} dead", o.pid),
        None => "?".into(),
    }
}

pub(crate) fn list(json: bool, out: &mut dyn Write) -> Result<i32> {
    let arenas = inspect::list()?;
    if json {
        let rows: Vec<ListRow> = arenas.iter().map(list_row).collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
        return Ok(0);
    }
    if arenas.is_empty() {
        writeln!(out, "no arenas found")?;
        return Ok(0);
    }
    let mut t = Table::new(&[
        "ARENA", ">SIZE", ">ENTRIES", "STATE", "OWNER", ">AGE", ">USERS", "NOTE",
    ]);
    for s in &arenas {
        t.row(vec![
            s.locator.to_string(),
            output::size(s.size),
            s.entry_count().map_or("-".into(), |n| n.to_string()),
            s.state().into(),
            owner_cell(s),
            s.age().map_or("-".into(), output::age),
            s.holders.len().to_string(),
            match (&s.header, s.copy) {
                (Err(e), _) => e.to_string(),
                (Ok(_), true) => "a copy: OWNER built the arena, not this memfd".into(),
                (Ok(_), false) => String::new(),
            },
        ]);
    }
    t.print(out)?;
    Ok(0)
}
