//! `arena-serve`: publishes arena image files by name for processes that have no long-lived
//! parent to hand them an arena.
//!
//! Each `NAME=PATH` is loaded into a sealed memfd (checked once: header, table of contents and
//! payload checksums), published as `NAME` with `shmarena::service`, and watched: when a new
//! image is renamed over `PATH`, it is loaded and published as the next generation. A failed
//! load leaves the served generation in place, and the log line says why (the whole cause
//! chain). SIGTERM or SIGINT stop it cleanly; readers keep what they mapped.
//!
//! Replaced images are noticed with inotify on each image's directory (`watch.rs`), at once;
//! every `--poll-ms` the daemon also compares each PATH's inode, size and mtime, which catches
//! what inotify cannot see (a directory on the way to PATH that is a symlink switched to
//! another directory, as Kubernetes updates a mounted ConfigMap; network filesystems) and is all
//! it has if inotify cannot be set up. All OS access goes through `shmarena`, `signal-hook`
//! and rustix's safe inotify calls; this binary parses arguments, calls the library and prints.
//! Run `arena-serve --help`.

#![forbid(unsafe_code)]

mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Parser;
use shmarena::service::{PublishOptions, Publisher};
use shmarena::{error_chain, Arena};

const AFTER_HELP: &str = "\
Each NAME=PATH publishes the arena image at PATH as NAME (readers call
shmarena::connect(\"NAME\") or shmarena::subscribe(\"NAME\")). Replace an image by
writing the new one beside it and renaming it over PATH (Arena::save does this):
arena-serve then publishes it as the next generation. An image that fails its
checks is reported, with the cause, and the current generation stays.

Replacements are noticed at once through inotify on each PATH's directory (a
rename onto PATH, or PATH closed after writing). Every --poll-ms the daemon also
compares each PATH's inode, size and modification time: that catches what
inotify does not see (a directory on the way to PATH that is a symlink switched
to another directory, as Kubernetes updates a mounted ConfigMap; network
filesystems), and is the only check with --no-inotify or if inotify cannot be set up (then it
says so at start). PATH itself must not be a symlink.

Lines on standard output:
  published NAME generation G from PATH (N bytes, E entries)
  ready                      (after the first generation of every name)
  stopped                    (after SIGTERM or SIGINT)
Errors go to standard error. Exit status: 0 after a signal; 1 if an image cannot
be loaded or a name cannot be published at start.

Example:
  arena-serve lexicon=/srv/data/lexicon.arena model=/srv/data/model.arena";

/// Publish arena image files by name, and publish a new generation when an image is replaced.
#[derive(Parser, Debug)]
#[command(name = "arena-serve", version, after_help = AFTER_HELP)]
struct Cli {
    /// NAME=PATH pairs: publish the image at PATH as NAME.
    #[arg(required = true, value_name = "NAME=PATH")]
    serve: Vec<String>,
    /// How often to check each PATH for a replaced image, in milliseconds, besides inotify
    /// (which notices a rename onto PATH at once).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    poll_ms: u64,
    /// Do not use inotify: notice replaced images by the check every --poll-ms only.
    #[arg(long)]
    no_inotify: bool,
    /// Also serve clients running as this uid (repeatable).
    #[arg(long, value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Also serve clients whose primary or supplementary gid is this gid (repeatable).
    #[arg(long, value_name = "GID")]
    allow_gid: Vec<u32>,
}

/// What identifies one version of an image file: a rename over the path changes the inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

/// Prints a line to standard output; a closed output (a gone log reader) does not stop serving.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.modified().ok(),
    })
}

struct Served {
    name: String,
    path: PathBuf,
    publisher: Publisher,
    /// The file version last loaded, or last tried (so a bad image is reported once).
    seen: Option<Stamp>,
}

fn parse_pair(s: &str) -> Result<(String, PathBuf)> {
    let Some((name, path)) = s.split_once('=') else {
        bail!("{s:?} is not NAME=PATH");
    };
    shmarena::validate_segment_name(name).with_context(|| format!("in {s:?}"))?;
    if path.is_empty() {
        bail!("{s:?} has an empty PATH");
    }
    Ok((name.to_owned(), PathBuf::from(path)))
}

fn describe(arena: &Arena) -> String {
    format!(
        "{} bytes, {} entries",
        arena.byte_len(),
        arena.layout().entries.len()
    )
}

fn run(cli: Cli) -> Result<()> {
    let mut opts = PublishOptions::new();
    for uid in &cli.allow_uid {
        opts = opts.allow_uid(*uid);
    }
    for gid in &cli.allow_gid {
        opts = opts.allow_gid(*gid);
    }
    // Signals first, so a SIGTERM during a long load still ends us cleanly.
    let (tx, rx) = mpsc::channel::<watch::Wake>();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("installing the SIGTERM and SIGINT handlers")?;
    let sig_handle = signals.handle();
    let sig_tx = tx.clone();
    let sig_thread = std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = sig_tx.send(watch::Wake::Signal);
        }
    });

    let pairs = cli
        .serve
        .iter()
        .map(|p| parse_pair(p))
        .collect::<Result<Vec<_>>>()?;
    // Watches first, then each stamp and load: a replacement after the stamp is noticed.
    let paths: Vec<PathBuf> = pairs.iter().map(|(_, p)| p.clone()).collect();
    if cli.no_inotify {
        drop(tx);
    } else if let Err(e) = watch::spawn(&paths, tx) {
        eprintln!(
            "arena-serve: inotify unavailable ({e}); checking for replaced images every {} ms",
            cli.poll_ms
        );
    }

    let mut served = Vec::new();
    for (name, path) in pairs {
        let seen = stamp(&path);
        let arena = Arena::load_file(&path)
            .with_context(|| format!("loading {} for {name:?}", path.display()))?;
        let what = describe(&arena);
        let publisher = opts
            .clone()
            .publish(&name, arena)
            .with_context(|| format!("publishing {name:?}"))?;
        say!(
            "published {name} generation 1 from {} ({what})",
            path.display()
        );
        served.push(Served {
            name,
            path,
            publisher,
            seen,
        });
    }
    say!("ready");

    let poll = Duration::from_millis(cli.poll_ms.max(1));
    loop {
        match rx.recv_timeout(poll) {
            Ok(watch::Wake::Signal) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(watch::Wake::Changed) | Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        for s in &mut served {
            let now = stamp(&s.path);
            if now.is_none() || now == s.seen {
                continue;
            }
            s.seen = now;
            match Arena::load_file(&s.path) {
                Ok(arena) => {
                    let what = describe(&arena);
                    match s.publisher.publish(arena) {
                        Ok(g) => say!(
                            "published {} generation {g} from {} ({what})",
                            s.name,
                            s.path.display()
                        ),
                        Err(e) => {
                            eprintln!("arena-serve: publishing {}: {}", s.name, error_chain(&e))
                        }
                    }
                }
                // The whole cause chain: "cannot read file X" alone does not say why.
                Err(e) => eprintln!(
                    "arena-serve: keeping generation {} of {}: {}: {}",
                    s.publisher.generation(),
                    s.name,
                    s.path.display(),
                    error_chain(&e)
                ),
            }
        }
    }
    drop(served); // every name disappears here
    sig_handle.close();
    let _ = sig_thread.join();
    say!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arena-serve: {}", error_chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}
