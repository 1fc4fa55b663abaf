//! `info`: an arena's header and table of contents, also for one still being built.

use std::io::{self, Write};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use shmarena::format::{Entry, FormatError, Header};
use shmarena::inspect::{self, ArenaStatus};
use shmarena::{error_chain, Locator, OpenOptions};

use crate::arena::{backing, check_handle, is_building, is_corruption, open_error, target, Named};
use crate::output::{self, Table};

#[derive(Serialize)]
struct HeaderJson {
    id: String,
    state: &'static str,
    format_version: u32,
    pointer_width_bits: u32,
    total_len: u64,
    entry_count: u32,
    toc_offset: u64,
    toc_len: u64,
    toc_checksum: String,
    creator_pid: u32,
    creator_start: u64,
    creator_alive: bool,
    created_unix_ns: u64,
}

fn header_json(h: &Header) -> HeaderJson {
    HeaderJson {
        id: shmarena::ArenaId::from_bytes(h.arena_id).to_string(),
        state: h.state_name(),
        format_version: h.version,
        pointer_width_bits: u32::from(h.pointer_width) * 8,
        total_len: h.total_len,
        entry_count: h.entry_count,
        toc_offset: h.toc_offset,
        toc_len: h.toc_len,
        toc_checksum: format!("{:016x}", h.toc_checksum),
        creator_pid: h.creator_pid,
        creator_start: h.creator_start,
        creator_alive: inspect::process_alive(h.creator_pid, h.creator_start),
        created_unix_ns: h.created_ns,
    }
}

#[derive(Serialize)]
struct EntryJson {
    name: String,
    kind: &'static str,
    type_name: String,
    primitive: &'static str,
    dtype: String,
    shape: Option<Vec<u64>>,
    fingerprint: String,
    offset: u64,
    len: u64,
    count: u64,
    elem_size: u64,
    align: u32,
    root_pos: Option<u64>,
    checksum: String,
    validated_at_build: bool,
}

fn entry_json(e: &Entry) -> EntryJson {
    let archived = e.kind == shmarena::format::Kind::Archived;
    EntryJson {
        name: e.name.clone(),
        kind: e.kind.as_str(),
        type_name: e.type_name.clone(),
        primitive: e.prim.as_str(),
        dtype: e.dtype_name(),
        shape: (e.kind != shmarena::format::Kind::Archived).then(|| e.dims()),
        fingerprint: e.fingerprint(),
        offset: e.offset,
        len: e.len,
        count: e.count,
        elem_size: e.elem_size,
        align: e.align,
        root_pos: archived.then_some(e.root_pos),
        checksum: format!("{:016x}", e.checksum),
        validated_at_build: e.validated_at_build(),
    }
}

fn print_header(out: &mut dyn Write, arg: &str, h: &HeaderJson) -> io::Result<()> {
    let alive = if h.creator_alive { "alive" } else { "dead" };
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|now| now.checked_sub(std::time::Duration::from_nanos(h.created_unix_ns)))
        .map_or("?".into(), output::age);
    writeln!(out, "arena:          {arg}")?;
    writeln!(out, "id:             {}", h.id)?;
    writeln!(out, "state:          {}", h.state)?;
    writeln!(
        out,
        "length:         {} ({} bytes)",
        output::size(h.total_len),
        h.total_len
    )?;
    writeln!(
        out,
        "format:         version {}, {}-bit rkyv pointers",
        h.format_version, h.pointer_width_bits
    )?;
    writeln!(
        out,
        "creator:        pid {} ({alive}), created {age} ago",
        h.creator_pid
    )?;
    writeln!(
        out,
        "toc:            {} entries, {} bytes at {}",
        h.entry_count, h.toc_len, h.toc_offset
    )?;
    Ok(())
}

/// What the thing inspected is, as opposed to the private copy this process may read: its
/// seals, size, owner, memory and users (this process left out when it holds the arena only
/// for `pub:NAME`), and for `pub:NAME` what the publisher said.
struct Facts {
    /// Where the arena lives: the publisher's descriptor for `pub:NAME` (if found).
    locator: Locator,
    status: Option<ArenaStatus>,
    published: Option<serde_json::Value>,
}

impl Facts {
    fn new(named: &Named, status: Option<ArenaStatus>) -> Facts {
        let mut status = status;
        if let Some(s) = &mut status {
            s.holders.retain(|h| !named.is_own_hold(h.pid));
        }
        let served = named.served();
        Facts {
            locator: served
                .and_then(|s| s.publisher_locator.clone())
                .unwrap_or_else(|| named.locator().clone()),
            status,
            published: served.map(|s| {
                json!({
                    "name": s.name,
                    "publisher_pid": s.publisher,
                    "generation": s.generation,
                    "id": s.arena_id.to_string(),
                    "serving": s.publisher_locator.as_ref().map(|l| l.to_string()),
                })
            }),
        }
    }

    /// The fields every `info --json` object has.
    fn json(&self, arg: &str) -> serde_json::Map<String, serde_json::Value> {
        let s = self.status.as_ref();
        let v = json!({
            "arena": arg,
            "locator": self.locator.to_string(),
            "backing": backing(&self.locator),
            "kernel_sealed": s.map(|s| s.kernel_sealed),
            "copy": s.map(|s| s.copy),
            "size": s.map(|s| s.size),
            "allocated": s.map(|s| s.allocated),
            "uid": s.map(|s| s.uid),
            "mode": s.map(|s| format!("{:o}", s.mode)),
            "users": s.map(|s| s.holders.len()),
            "published": self.published,
        });
        match v {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("json! of an object literal"),
        }
    }

    fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        if let Some(p) = &self.published {
            writeln!(
                out,
                "published:      as {} by pid {}, generation {}{}",
                p["name"].as_str().unwrap_or("?"),
                p["publisher_pid"],
                p["generation"],
                p["serving"]
                    .as_str()
                    .map_or(String::new(), |l| format!(", served from {l}"))
            )?;
        }
        let Some(s) = &self.status else {
            return Ok(());
        };
        let (what, medium) = match &self.locator {
            Locator::Shm { .. } => ("named segment", "memory"),
            Locator::File { .. } => ("file", "disk"),
            _ => ("memfd", "memory"),
        };
        let sealed = match (&self.locator, s.kernel_sealed) {
            (_, true) => "yes (a sealed memfd: its bytes cannot change)".to_owned(),
            (Locator::Memfd { .. }, false) => {
                "no (a memfd without the write, grow and shrink seals: its bytes may change)"
                    .to_owned()
            }
            (_, false) => format!(
                "no (a {what}: a process that may write it can change its bytes; what is \
                 shown here was read from a sealed private copy)"
            ),
        };
        writeln!(out, "kernel-sealed:  {sealed}")?;
        if s.copy {
            writeln!(
                out,
                "copy:           yes (a sealed copy of the arena, made by loading a file or a \
                 named segment; the creator above built the arena, not this memfd)"
            )?;
        }
        writeln!(
            out,
            "{:<16}uid {}, mode {:o}, {} bytes",
            format!("{what}:"),
            s.uid,
            s.mode,
            s.size
        )?;
        let note = match medium {
            "disk" => "the file's blocks",
            _ => "every page written, whether anyone maps it or not",
        };
        writeln!(
            out,
            "allocated:      {} of {medium} ({note})",
            output::size(s.allocated)
        )?;
        writeln!(
            out,
            "users:          {} processes map or hold it",
            s.holders.len()
        )
    }
}

pub(crate) fn info(arg: &str, json: bool, out: &mut dyn Write) -> Result<i32> {
    let named = target(arg)?;
    let loc = named.locator();
    // Before opening, so this process is not counted among the users.
    let status = inspect::status(loc).ok();
    let opened = OpenOptions::new().allow_foreign_owner(true).open(loc);
    let arena = match opened {
        Ok(a) => a,
        // Not sealed, or its table of contents is bad: show what the header says.
        Err(e)
            if is_corruption(&e)
                || matches!(e.format_error(), Some(FormatError::Incompatible { .. })) =>
        {
            return info_unopened(arg, &named, e, json, out);
        }
        Err(e) => return Err(open_error(e, loc, arg)),
    };
    let arena = check_handle(arena, &named)?;
    let facts = Facts::new(&named, status);
    let layout = arena.layout();
    let header = header_json(&layout.header);
    let entries: Vec<EntryJson> = layout.entries.iter().map(entry_json).collect();
    if json {
        let mut v = facts.json(arg);
        v.insert("header".into(), serde_json::to_value(&header)?);
        v.insert("entries".into(), serde_json::to_value(&entries)?);
        v.insert("error".into(), serde_json::Value::Null);
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(0);
    }
    print_header(out, arg, &header)?;
    facts.print(out)?;
    writeln!(out)?;
    if entries.is_empty() {
        writeln!(out, "no entries")?;
        return Ok(0);
    }
    let mut t = Table::new(&[
        "NAME",
        "KIND",
        "TYPE",
        "DTYPE",
        "SHAPE",
        "FINGERPRINT",
        ">OFFSET",
        ">LEN",
        ">COUNT",
        ">ALIGN",
    ]);
    for e in &entries {
        t.row(vec![
            e.name.clone(),
            e.kind.into(),
            e.type_name.clone(),
            e.dtype.clone(),
            e.shape.as_ref().map_or("-".into(), |s| format!("{s:?}")),
            e.fingerprint.clone(),
            e.offset.to_string(),
            e.len.to_string(),
            e.count.to_string(),
            e.align.to_string(),
        ]);
    }
    t.print(out)?;
    Ok(0)
}

/// `info` for an arena that does not open: the header if it parses, and the error.
fn info_unopened(
    arg: &str,
    named: &Named,
    err: shmarena::Error,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32> {
    let building = is_building(&err);
    let status = inspect::status(named.locator()).with_context(|| format!("cannot open {arg}"))?;
    let header = status.header.as_ref().ok().map(header_json);
    let facts = Facts::new(named, Some(status));
    let code = if building {
        0
    } else if is_corruption(&err) {
        1
    } else {
        2
    };
    if json {
        let mut v = facts.json(arg);
        v.insert("header".into(), serde_json::to_value(&header)?);
        v.insert("entries".into(), serde_json::Value::Null);
        v.insert("error".into(), error_chain(&err).into());
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(code);
    }
    match &header {
        Some(h) => print_header(out, arg, h)?,
        None => writeln!(out, "arena:          {arg}")?,
    }
    facts.print(out)?;
    writeln!(out)?;
    if building {
        writeln!(out, "no table of contents yet: {}", error_chain(&err))?;
    } else {
        writeln!(out, "error: {}", error_chain(&err))?;
    }
    Ok(code)
}
