//! `arena-inspect`: the debugging CLI for shmarena arenas, as a library.
//!
//! The `arena-inspect` binary is [`run`] called with the process's arguments; other programs
//! (the Python package's `python -m shmarena`) call [`run`] the same way and get the same
//! output on this process's standard output and error, and the same exit status as a return
//! value.
//!
//! It lists the arenas on this machine, shows an arena's header and table of contents, verifies
//! checksums, dumps entries, names the processes that use an arena and what it costs each,
//! lists the names published with `Arena::publish` or `arena-serve`, and removes orphaned named
//! segments. All OS access goes through `shmarena` (`shmarena::inspect` for the scans); this
//! binary parses arguments, calls the library and prints. Run `arena-inspect --help`.

//! One file per command (`list.rs`, `info.rs`, `verify.rs`, `dump.rs`, `who.rs`,
//! `published.rs`, `gc.rs`), each importing only the two shared rooms: `arena.rs` (naming and
//! opening the arena a command is given, sorting its errors) and `output.rs` (tables, sizes,
//! ages). This file holds the command line and [`run`].

#![forbid(unsafe_code)]

mod arena;
mod output;

mod dump;
mod gc;
mod info;
mod list;
mod published;
mod verify;
mod who;

use std::io::{self, BufWriter, Write};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use arena::is_corruption;

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
  pub:NAME                the generation published as NAME (Arena::publish,
                          arena-serve) when the command runs: asked of its
                          publisher as a client would (see `published`)

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
  arena-inspect info pub:lexicon          the generation served as lexicon now
  arena-inspect gc --dry-run              what gc would remove, and why it keeps the rest
  arena-inspect gc --prefix myjob-        remove orphans whose names start with myjob-
  arena-inspect gc --include-persisted    also remove orphans their writer persisted";

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
    /// magic, and memfd arenas held by live processes (built in a memfd, or sealed copies:
    /// loaded files and segments, arena-serve's images).
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
    /// each in memory: PSS (its share of the arena's resident pages it maps), TOUCHED (arena
    /// pages it has touched: shared, not its own memory) and ANON (the process's own anonymous
    /// memory), under what the arena costs the machine (its allocated pages, mapped or not).
    Who {
        /// The arena.
        arena: String,
    },
    /// List the names published on this machine (Arena::publish, arena-serve): the argument
    /// that names each (`pub:NAME`), publisher pid, generation, size, the publisher's
    /// descriptor of the generation served, and the processes reading it.
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
        /// Also remove orphans their writer persisted (kept by default).
        #[arg(long)]
        include_persisted: bool,
    },
}

/// The process exit status for an error: 1 if the arena itself is bad, 2 for anything else.
fn exit_code_for(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<shmarena::Error>() {
            return if is_corruption(e) { 1 } else { 2 };
        }
    }
    2
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Runs `arena-inspect` with these arguments (the first is the program name, as in
/// [`std::env::args_os`]) and returns its exit status: 0 ok; 1 the arena is corrupt, truncated,
/// not an arena or (verify) not sealed; 2 usage error, not found, permission denied or another
/// error. `--help` and `--version` return 0.
///
/// Output goes to this process's standard output, errors to its standard error, exactly as
/// the binary prints them (the binary is this call); a closed standard output is not an error.
/// It never exits the process. [`run_with_output`] writes somewhere else.
///
/// ```
/// // `--version` prints "arena-inspect X.Y.Z" and returns 0.
/// assert_eq!(arena_inspect::run(["arena-inspect", "--version"]), 0);
/// // An unknown command is a usage error: clap's message on stderr, status 2.
/// assert_eq!(arena_inspect::run(["arena-inspect", "no-such-command"]), 2);
/// ```
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    // `print` styles clap's text when the stream is a terminal.
    let cli = match parse(args, |e| {
        let _ = e.print();
    }) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    execute(&cli, &mut out, &mut io::stderr())
}

/// [`run`], printing to `out` and `err` instead of this process's standard output and error
/// (clap's usage and help text unstyled). For callers that capture the output (tests, or a
/// Python `sys.stdout` that is not file descriptor 1).
///
/// ```
/// let (mut out, mut err) = (Vec::new(), Vec::new());
/// let code = arena_inspect::run_with_output(
///     ["arena-inspect", "info", "no-such-arena-here"],
///     &mut out,
///     &mut err,
/// );
/// assert_eq!(code, 2);
/// let err = String::from_utf8(err).unwrap();
/// assert!(err.starts_with("arena-inspect: cannot open no-such-arena-here"), "{err}");
/// ```
pub fn run_with_output<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let rendered = |e: &clap::Error| {
        let text = e.render().to_string();
        let _ = if e.use_stderr() {
            err.write_all(text.as_bytes())
        } else {
            out.write_all(text.as_bytes())
        };
    };
    match parse(args, rendered) {
        Ok(cli) => execute(&cli, out, err),
        Err(code) => code,
    }
}

/// Parses the command line. A clap error (a usage error, or `--help` and `--version`, which
/// end here too with status 0 and text for stdout) goes to `report`, and its exit status is
/// returned as the error.
fn parse<I, T>(args: I, report: impl FnOnce(&clap::Error)) -> std::result::Result<Cli, i32>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args).map_err(|e| {
        report(&e);
        e.exit_code()
    })
}

/// Runs a parsed command line: the command's output to `out`, an error to `err`.
fn execute(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let result = run_command(cli, out).and_then(|code| {
        out.flush().context("writing to stdout")?;
        Ok(code)
    });
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            // Whatever was printed before the error goes out first; a failure here changes
            // nothing about the exit status.
            let _ = out.flush();
            let _ = writeln!(err, "arena-inspect: {}", shmarena::error_chain(e.as_ref()));
            exit_code_for(&e)
        }
    }
}

fn run_command(cli: &Cli, out: &mut dyn Write) -> Result<i32> {
    match &cli.command {
        Command::List => list::list(cli.json, out),
        Command::Info { arena } => info::info(arena, cli.json, out),
        Command::Verify { arena } => verify::verify(arena, cli.json, out),
        Command::Dump(args) => dump::dump(args, cli.json, out),
        Command::Who { arena } => who::who(arena, cli.json, out),
        Command::Published => published::published(cli.json, out),
        Command::Gc {
            dry_run,
            prefix,
            include_persisted,
        } => gc::gc(
            *dry_run,
            prefix.as_deref(),
            *include_persisted,
            cli.json,
            out,
        ),
    }
}
