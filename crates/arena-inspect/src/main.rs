//! `arena-inspect`: the debugging CLI for shmarena arenas.
//!
//! It lists the arenas on this machine, shows an arena's header and table of contents, verifies
//! checksums, dumps entries, names the processes that use an arena and what it costs each,
//! lists the names published with `Arena::publish` or `arena-serve`, and removes orphaned named
//! segments. All OS access goes through `shmarena` (`shmarena::inspect` for the scans); this
//! binary parses arguments, calls the library and prints. Run `arena-inspect --help`.

#![forbid(unsafe_code)]

mod dump;
mod output;

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::json;

use shmarena::format::{Entry, FormatError, Header};
use shmarena::inspect::{self, ArenaStatus, GcOptions, Target};
use shmarena::{Arena, Locator, OpenOptions};

use output::Table;

const AFTER_HELP: &str = "\
Naming an arena (ARENA):
  lexicon, /lexicon       a named segment in /dev/shm
  812:5                   the memfd that process 812 holds as descriptor 5 (see `list`)
  ./lex.arena, /data/x    a file: anything with a '/' after the first character,
                          or starting with '.'
  shm:NAME, file:PATH, memfd:PID:FD
                          say the backing explicitly (the form `list` prints)
  shmarena1:...           a handle string (Handle::to_string); `dump` then needs
                          no ENTRY, and a handle to a replaced arena is refused

Exit status: 0 ok; 1 the arena is corrupt, truncated, not an arena or (verify) not
sealed; 2 incompatible (a format version, byte order, rkyv generation or pointer
width this build does not read), usage error, not found, permission denied or
another error.
A closed pipe (`| head`) is not an error.

Examples:
  arena-inspect list                      every arena this user can see
  arena-inspect list --json | jq '.[] | select(.state == \"building\")'
  arena-inspect info lexicon              header and table of contents
  arena-inspect verify /data/lex.arena    check every bound and checksum
  arena-inspect dump lexicon weights --range 100..110
  arena-inspect dump lexicon weights --range .. --format csv > weights.csv
  arena-inspect dump 812:5 records        hex dump, rkyv root marked
  arena-inspect dump lexicon blob --raw > blob.bin
  arena-inspect dump \"$HANDLE\"            the entry a handle string names
  arena-inspect who lexicon               which processes map it, and what it costs each
  arena-inspect published                 names published with Arena::publish or arena-serve
  arena-inspect gc --dry-run              what gc would remove, and why it keeps the rest
  arena-inspect gc --prefix myjob-        remove orphans whose names start with myjob-
  arena-inspect gc --include-persisted    also remove orphans their builder persisted";

/// Inspect shmarena arenas: list them, show and verify their contents, find who uses them, and
/// remove orphaned named segments.
#[derive(Parser, Debug)]
#[command(name = "arena-inspect", version, after_help = AFTER_HELP)]
struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List every arena this user can see: named segments in /dev/shm that carry the arena
    /// magic, and memfd arenas held by live processes.
    List,
    /// Show an arena's header and table of contents (works on a segment still being built).
    Info {
        /// The arena (see "Naming an arena" below).
        arena: String,
    },
    /// Check the header, every bound in the table of contents and every payload checksum.
    /// Exit 0 ok; 1 corrupted, truncated, not an arena or still building (--json: `problem`
    /// says which, `checksum` for a payload); 2 incompatible (a version, byte order, rkyv
    /// generation or pointer width this build does not read) or cannot open.
    Verify {
        /// The arena.
        arena: String,
    },
    /// Print an entry: the elements of a POD entry of a primitive type, else a hex dump with
    /// the rkyv root marked.
    Dump(dump::DumpArgs),
    /// List the processes that map an arena or hold a descriptor to it, with what it costs
    /// each in memory: PSS (its share of the arena's resident pages), TOUCHED (arena pages it
    /// has touched: shared, not its own memory) and ANON (the process's own anonymous memory).
    Who {
        /// The arena.
        arena: String,
    },
    /// List the names published on this machine (Arena::publish, arena-serve): publisher pid,
    /// generation, size and the processes reading the generation being served.
    Published,
    /// Remove named segments of this user whose creator is dead and that no process maps or
    /// holds open; report what was removed, the bytes freed, and why anything else was kept.
    Gc {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Only consider segments whose names start with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Also remove orphans their builder persisted (kept by default).
        #[arg(long)]
        include_persisted: bool,
    },
}

/// The process exit status for an error: 1 if the arena itself is bad, 2 for anything else.
fn exit_code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<shmarena::Error>() {
            return if is_corruption(e) { 1 } else { 2 };
        }
    }
    2
}

/// Errors that say the arena's bytes are bad, as opposed to "cannot get at them".
fn is_corruption(e: &shmarena::Error) -> bool {
    matches!(
        e.format_error(),
        Some(
            FormatError::Corrupted { .. }
                | FormatError::Truncated { .. }
                | FormatError::BadMagic
                | FormatError::StillBuilding
        )
    )
}

/// Whether the arena is still being built (or its builder died).
fn is_building(e: &shmarena::Error) -> bool {
    matches!(e.format_error(), Some(FormatError::StillBuilding))
}

/// A short word for machine output naming what is wrong with an arena.
fn problem_code(e: &shmarena::Error) -> &'static str {
    match e.format_error() {
        Some(FormatError::Corrupted { .. }) => "corrupted",
        Some(FormatError::Truncated { .. }) => "truncated",
        Some(FormatError::BadMagic) => "not-an-arena",
        Some(FormatError::StillBuilding) => "still-building",
        _ => "other",
    }
}

/// An error and its causes, joined with `: ` (what `{:#}` prints for an `anyhow::Error`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = run(&cli, &mut out).and_then(|code| {
        out.flush().context("writing to stdout")?;
        Ok(code)
    });
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Whatever was printed before the error goes out first; a failure here changes
            // nothing about the exit status.
            let _ = out.flush();
            eprintln!("arena-inspect: {e:#}");
            ExitCode::from(exit_code_for(&e))
        }
    }
}

fn run(cli: &Cli, out: &mut dyn Write) -> Result<ExitCode> {
    match &cli.command {
        Command::List => list(cli.json, out),
        Command::Info { arena } => info(arena, cli.json, out),
        Command::Verify { arena } => verify(arena, cli.json, out),
        Command::Dump(args) => dump::dump(args, cli.json, out),
        Command::Who { arena } => who(arena, cli.json, out),
        Command::Published => published(cli.json, out),
        Command::Gc {
            dry_run,
            prefix,
            include_persisted,
        } => gc(
            *dry_run,
            prefix.as_deref(),
            *include_persisted,
            cli.json,
            out,
        ),
    }
}

/// Parses an ARENA argument once: a locator or a handle string (see [`inspect::Target`]).
pub(crate) fn target(arg: &str) -> Result<Target> {
    arg.parse()
        .with_context(|| format!("bad arena name {arg:?}"))
}

/// A handle names an arena id as well as a place: refuse a newer arena at the same place (the
/// library's stale-handle rule, [`shmarena::expect_id`]).
pub(crate) fn check_handle(arena: Arena, target: &Target) -> Result<Arena> {
    match target.handle() {
        Some(h) => Ok(shmarena::expect_id(arena, h.arena_id())?),
        None => Ok(arena),
    }
}

fn backing(loc: &Locator) -> &'static str {
    match loc {
        Locator::Shm { .. } => "shm",
        Locator::Memfd { .. } => "memfd",
        Locator::File { .. } => "file",
        _ => "other",
    }
}

/// Opens an arena for reading. Other users' arenas are accepted: the tool only reads, and never
/// dereferences archived data.
pub(crate) fn open(loc: &Locator, arg: &str) -> Result<Arena> {
    OpenOptions::new()
        .allow_foreign_owner(true)
        .open(loc)
        .map_err(|e| open_error(e, loc, arg))
}

/// An open error with the argument as given, and a hint when a bare name was meant as a file.
fn open_error(e: shmarena::Error, loc: &Locator, arg: &str) -> anyhow::Error {
    let hint = match (&e, loc) {
        (shmarena::Error::NotFound { .. }, Locator::Shm { name })
            if std::path::Path::new(name).is_file() =>
        {
            format!(" (there is a file {name:?} here; write ./{name} to inspect the file)")
        }
        _ => String::new(),
    };
    anyhow::Error::new(e).context(format!("cannot open {arg}{hint}"))
}

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
        error: s.header_error().map(|e| chain(&e)),
        owner_pid: s.owner.map(|o| o.pid),
        owner_alive: s.owner.map(|o| o.alive),
        age_secs: s.age().map(|d| d.as_secs_f64()),
        users: s.holders.len(),
        uid: s.uid,
        mode: format!("{:o}", s.mode),
    }
}

fn owner_cell(s: &ArenaStatus) -> String {
    match s.owner {
        Some(o) if o.alive => format!("{} alive", o.pid),
        Some(o) => format!("{} dead", o.pid),
        None => "?".into(),
    }
}

fn list(json: bool, out: &mut dyn Write) -> Result<ExitCode> {
    let arenas = inspect::list()?;
    if json {
        let rows: Vec<ListRow> = arenas.iter().map(list_row).collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if arenas.is_empty() {
        writeln!(out, "no arenas found")?;
        return Ok(ExitCode::SUCCESS);
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
            s.header
                .as_ref()
                .err()
                .map_or(String::new(), |e| e.to_string()),
        ]);
    }
    t.print(out)?;
    Ok(ExitCode::SUCCESS)
}

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

fn info(arg: &str, json: bool, out: &mut dyn Write) -> Result<ExitCode> {
    let target = target(arg)?;
    let loc = target.locator();
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
            return info_unopened(arg, loc, e, json, out);
        }
        Err(e) => return Err(open_error(e, loc, arg)),
    };
    let arena = check_handle(arena, &target)?;
    let layout = arena.layout();
    let header = header_json(&layout.header);
    let entries: Vec<EntryJson> = layout.entries.iter().map(entry_json).collect();
    if json {
        let v = json!({
            "arena": arg,
            "locator": arena.locator().to_string(),
            "backing": backing(arena.locator()),
            "kernel_sealed": arena.is_kernel_sealed(),
            "size": status.as_ref().map(|s| s.size),
            "uid": status.as_ref().map(|s| s.uid),
            "mode": status.as_ref().map(|s| format!("{:o}", s.mode)),
            "users": status.as_ref().map(|s| s.holders.len()),
            "header": header,
            "entries": entries,
            "error": null,
        });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_header(out, arg, &header)?;
    writeln!(
        out,
        "kernel-sealed:  {}",
        if arena.is_kernel_sealed() {
            "yes (sealed memfd: its bytes cannot change)"
        } else {
            "no (its bytes may change while mapped)"
        }
    )?;
    if let Some(s) = &status {
        writeln!(
            out,
            "segment:        uid {}, mode {:o}, {} bytes",
            s.uid, s.mode, s.size
        )?;
        writeln!(
            out,
            "users:          {} processes map or hold it",
            s.holders.len()
        )?;
    }
    writeln!(out)?;
    if entries.is_empty() {
        writeln!(out, "no entries")?;
        return Ok(ExitCode::SUCCESS);
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
    Ok(ExitCode::SUCCESS)
}

/// `info` for an arena that does not open: the header if it parses, and the error.
fn info_unopened(
    arg: &str,
    loc: &Locator,
    err: shmarena::Error,
    json: bool,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let building = is_building(&err);
    let status = inspect::status(loc).with_context(|| format!("cannot open {arg}"))?;
    let header = status.header.as_ref().ok().map(header_json);
    let code = if building {
        ExitCode::SUCCESS
    } else if is_corruption(&err) {
        ExitCode::from(1)
    } else {
        ExitCode::from(2)
    };
    if json {
        let v = json!({
            "arena": arg,
            "locator": loc.to_string(),
            "backing": backing(loc),
            "size": status.size,
            "uid": status.uid,
            "mode": format!("{:o}", status.mode),
            "users": status.holders.len(),
            "header": header,
            "entries": null,
            "error": chain(&err),
        });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(code);
    }
    match &header {
        Some(h) => print_header(out, arg, h)?,
        None => writeln!(out, "arena:          {arg}")?,
    }
    writeln!(
        out,
        "segment:        uid {}, mode {:o}, {} bytes",
        status.uid, status.mode, status.size
    )?;
    writeln!(
        out,
        "users:          {} processes map or hold it",
        status.holders.len()
    )?;
    writeln!(out)?;
    if building {
        writeln!(out, "no table of contents yet: {}", chain(&err))?;
    } else {
        writeln!(out, "error: {}", chain(&err))?;
    }
    Ok(code)
}

#[derive(Serialize)]
struct VerifyEntry {
    name: String,
    offset: u64,
    len: u64,
    ok: bool,
    error: Option<String>,
}

fn verify(arg: &str, json: bool, out: &mut dyn Write) -> Result<ExitCode> {
    let target = target(arg)?;
    let loc = target.locator();
    let arena = match OpenOptions::new().allow_foreign_owner(true).open(loc) {
        Ok(a) => a,
        Err(e) if is_corruption(&e) => {
            let mut msg = chain(&e);
            if is_building(&e) {
                if let Some(o) = inspect::status(loc).ok().and_then(|s| s.owner) {
                    let state = if o.alive { "is alive" } else { "is dead" };
                    msg = format!("{msg}; its builder (pid {}) {state}", o.pid);
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
            return Ok(ExitCode::from(1));
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
    Ok(ExitCode::from(if bad == 0 { 0 } else { 1 }))
}

fn who(arg: &str, json: bool, out: &mut dyn Write) -> Result<ExitCode> {
    let target = target(arg)?;
    let holders =
        inspect::who(target.locator()).with_context(|| format!("cannot inspect {arg}"))?;
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
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if holders.is_empty() {
        writeln!(out, "no process maps or holds {arg}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        ">PID", "COMMAND", "MAPPED", "FDS", ">PSS", ">TOUCHED", ">ANON", "CMDLINE",
    ]);
    let opt = |v: Option<u64>| v.map_or("-".into(), output::size);
    for h in &holders {
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
        "\nPSS: the process's share of the arena's resident pages (each page divided among the \
         processes mapping it; the PSS column adds up to the arena's resident size).\n\
         TOUCHED: arena pages it has touched; shared with every other reader, not its own memory.\n\
         ANON: the whole process's own anonymous memory (heap, stacks, copies)."
    )?;
    Ok(ExitCode::SUCCESS)
}

fn published(json: bool, out: &mut dyn Write) -> Result<ExitCode> {
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
        return Ok(ExitCode::SUCCESS);
    }
    if names.is_empty() {
        writeln!(out, "no published names found")?;
        return Ok(ExitCode::SUCCESS);
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
    Ok(ExitCode::SUCCESS)
}

fn gc(
    dry_run: bool,
    prefix: Option<&str>,
    include_persisted: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<ExitCode> {
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
        return Ok(ExitCode::SUCCESS);
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
    Ok(ExitCode::SUCCESS)
}
