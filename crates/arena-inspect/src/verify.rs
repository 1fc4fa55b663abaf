//! `verify`: the header, every bound of the table of contents and every payload checksum.
//!
//! Its output and exit statuses are what the conformance run compares against: 0 ok, 1 corrupt,
//! 2 cannot open.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;
use serde_json::json;
use shmarena::inspect;
use shmarena::{error_chain, OpenOptions};

use crate::arena::{check_handle, is_building, is_corruption, open_error, problem_code, target};
use crate::output::{self, Table};

#[derive(Serialize)]
struct VerifyEntry {
    name: String,
    offset: u64,
    len: u64,
    ok: bool,
    error: Option<String>,
}

pub(crate) fn verify(arg: &str, json: bool, out: &mut dyn Write) -> Result<i32> {
    let target = target(arg)?;
    let loc = target.locator();
    let arena = match OpenOptions::new().allow_foreign_owner(true).open(loc) {
        Ok(a) => a,
        Err(e) if is_corruption(&e) => {
            let mut msg = error_chain(&e);
            if is_building(&e) {
                if let Some(o) = inspect::status(loc).ok().and_then(|s| s.owner) {
                    let state = if o.alive { "is alive" } else { "is dead" };
                    msg = format!("{msg}; its writer (pid {}) {state}", o.pid);
                }
            }
            if json {
                let v = json!({
                    "arena": arg,
                    "ok": false,
                    "problem": problem_code(&e),
                    "error": msg,
                    "entries": null,
                });
                serde_json::to_writer_pretty(&mut *out, &v)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{arg}: CORRUPT: {msg}")?;
            }
            return Ok(1);
        }
        Err(e) => return Err(open_error(e, loc, arg)),
    };
    let arena = check_handle(arena, &target)?;
    let bytes = arena.as_bytes();
    let results: Vec<VerifyEntry> = arena
        .layout()
        .entries
        .iter()
        .map(|e| {
            let r = shmarena::format::verify_payload(bytes, e);
            VerifyEntry {
                name: e.name.clone(),
                offset: e.offset,
                len: e.len,
                ok: r.is_ok(),
                error: r.err().map(|err| err.to_string()),
            }
        })
        .collect();
    let bad = results.iter().filter(|r| !r.ok).count();
    if json {
        let v = json!({
            "arena": arg,
            "ok": bad == 0,
            "problem": (bad > 0).then_some("checksum"),
            "error": (bad > 0).then(|| format!("{bad} of {} entries fail their checksum", results.len())),
            "entries": results,
        });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
    } else {
        let mut t = Table::new(&["ENTRY", ">OFFSET", ">LEN", "RESULT"]);
        for r in &results {
            t.row(vec![
                r.name.clone(),
                r.offset.to_string(),
                r.len.to_string(),
                r.error.clone().unwrap_or_else(|| "ok".into()),
            ]);
        }
        if !t.is_empty() {
            t.print(out)?;
        }
        if bad == 0 {
            writeln!(
                out,
                "{arg}: ok: header, table of contents and {} entries ({}) verified",
                results.len(),
                output::size(arena.byte_len())
            )?;
        } else {
            writeln!(
                out,
                "{arg}: CORRUPT: {bad} of {} entries fail their checksum",
                results.len()
            )?;
        }
    }
    Ok(if bad == 0 { 0 } else { 1 })
}
