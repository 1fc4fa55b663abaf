//! Turns criterion's JSON output into the tables of docs/BENCHMARKS.md.
//!
//! ```text
//! bench-report [--criterion DIR] [--ab FILE] [--service FILE] [--write FILE]
//! ```
//!
//! Without `--write`, prints the machine and the tables. With it, replaces the text between the
//! `<!-- BEGIN GENERATED: machine -->`, `ab`, `service` and `tables` markers of FILE, and
//! writes the charts to `charts/` beside FILE. The service section comes from criterion's
//! `service/*` results and the `service` bench's `target/service/results.json`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use shmarena_bench::report;

fn run() -> Result<()> {
    let mut dir = PathBuf::from("target/criterion");
    let mut write: Option<PathBuf> = None;
    let mut ab = PathBuf::from("target/ab/results.json");
    let mut service = PathBuf::from("target/service/results.json");
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--criterion") => {
                dir = args.next().context("--criterion needs a directory")?.into()
            }
            Some("--ab") => ab = args.next().context("--ab needs a file")?.into(),
            Some("--service") => service = args.next().context("--service needs a file")?.into(),
            Some("--write") => write = Some(args.next().context("--write needs a file")?.into()),
            Some("-h" | "--help") => {
                println!(
                    "usage: bench-report [--criterion DIR] [--ab FILE] [--service FILE] [--write FILE]"
                );
                return Ok(());
            }
            _ => bail!("unexpected argument {arg:?} (try --help)"),
        }
    }
    let measurements = report::read_dir(&dir)?;
    if measurements.is_empty() {
        bail!(
            "no criterion results under {}: run `cargo bench -p shmarena-bench` first",
            dir.display()
        );
    }
    let tables = report::tables(&measurements);
    let machine = report::machine();
    let ab_table = report::ab_table_from(&ab)?.unwrap_or_else(|| {
        format!(
            "(no {} yet: run `cargo bench -p shmarena-bench --bench ab`)\n",
            ab.display()
        )
    });
    let service_section =
        report::service_section_from(&measurements, &service)?.unwrap_or_else(|| {
            format!(
                "(no service results yet: run `cargo bench -p shmarena-bench --bench service`, \
                 which also writes {})\n",
                service.display()
            )
        });
    match write {
        None => {
            let mut out = std::io::stdout().lock();
            write!(out, "{machine}\n{ab_table}\n{service_section}\n{tables}")?;
        }
        Some(file) => {
            let doc = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let doc = report::splice(&doc, "machine", &machine)?;
            let doc = report::splice(&doc, "tables", &tables)?;
            let doc = report::splice(&doc, "ab", &ab_table)?;
            let doc = report::splice(&doc, "service", &service_section)?;
            std::fs::write(&file, doc).with_context(|| format!("writing {}", file.display()))?;
            if let Some(svg) = report::attach_chart(&measurements) {
                let charts = file.with_file_name("charts");
                std::fs::create_dir_all(&charts)
                    .with_context(|| format!("creating {}", charts.display()))?;
                let path = charts.join("attach.svg");
                std::fs::write(&path, svg)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            eprintln!(
                "wrote {} benchmarks into {}",
                measurements.len(),
                file.display()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("bench-report: {e:#}");
            ExitCode::FAILURE
        }
    }
}
