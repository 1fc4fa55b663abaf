//! `gc`: removes named segments whose creator is dead and that nobody uses.

use std::io::Write;

use anyhow::Result;
use serde_json::json;
use shmarena::inspect::{self, GcOptions};

use crate::output::{self, Table};

pub(crate) fn gc(
    dry_run: bool,
    prefix: Option<&str>,
    include_persisted: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32> {
    let mut opts = GcOptions::new()
        .dry_run(dry_run)
        .include_persisted(include_persisted);
    if let Some(p) = prefix {
        opts = opts.prefix(p);
    }
    let report = inspect::gc(&opts)?;
    if json {
        let removed: Vec<_> = report
            .removed
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "size": r.size,
                    "allocated": r.allocated,
                    "state": r.state,
                    "owner_pid": r.owner.pid,
                })
            })
            .collect();
        let skipped: Vec<_> = report
            .skipped
            .iter()
            .map(|s| json!({"name": s.name, "reason": s.reason.code(), "detail": s.reason.to_string()}))
            .collect();
        let v = json!({
            "dry_run": report.dry_run,
            "removed": removed,
            "skipped": skipped,
            "bytes_freed": report.bytes_freed(),
        });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(0);
    }
    let action = if dry_run { "would remove" } else { "removed" };
    let mut t = Table::new(&["ACTION", "SEGMENT", ">SIZE", "DETAIL"]);
    for r in &report.removed {
        t.row(vec![
            action.into(),
            format!("/{}", r.name),
            output::size(r.allocated),
            format!("{}, creator pid {} is dead, unused", r.state, r.owner.pid),
        ]);
    }
    for s in &report.skipped {
        t.row(vec![
            "kept".into(),
            format!("/{}", s.name),
            String::new(),
            s.reason.to_string(),
        ]);
    }
    if !t.is_empty() {
        t.print(out)?;
    }
    let n = report.removed.len();
    writeln!(
        out,
        "{}{} {n} segment{}, {} {}",
        if dry_run { "dry run: " } else { "" },
        action,
        if n == 1 { "" } else { "s" },
        if dry_run { "would free" } else { "freed" },
        output::size(report.bytes_freed())
    )?;
    Ok(0)
}
