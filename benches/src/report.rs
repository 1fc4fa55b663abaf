//! Tables for docs/BENCHMARKS.md, read from criterion's JSON output so they never drift from
//! what was run.
//!
//! Criterion writes `<dir>/<group>/<function>/<value>/new/benchmark.json` (the ids and the
//! throughput) and `estimates.json` (the statistics, in nanoseconds) for every benchmark. In a
//! group, the functions whose id starts with `baseline` are the baselines: every other function
//! is compared with the baseline of the same group and value.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// One benchmark's result.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Criterion group id, e.g. `attach/named`.
    pub group: String,
    /// Function id, e.g. `shmarena` or `baseline: shm_open+mmap+touch`.
    pub function: String,
    /// Parameter, e.g. `64MiB` (empty if none).
    pub value: String,
    /// Median time per iteration, in nanoseconds.
    pub median_ns: f64,
    /// Median absolute deviation, in nanoseconds.
    pub mad_ns: f64,
    /// Bytes or elements per iteration, if the benchmark declared a throughput.
    pub throughput: Option<Throughput>,
}

/// What one iteration processes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Throughput {
    /// Bytes per iteration.
    Bytes(u64),
    /// Elements per iteration.
    Elements(u64),
}

impl Measurement {
    /// Whether this is a baseline (its function id starts with `baseline`).
    pub fn is_baseline(&self) -> bool {
        self.function.starts_with("baseline")
    }
}

/// Reads every `new/benchmark.json` + `new/estimates.json` pair under `dir`.
pub fn read_dir(dir: &Path) -> Result<Vec<Measurement>> {
    let mut found = Vec::new();
    collect(dir, &mut found)
        .with_context(|| format!("reading criterion results under {}", dir.display()))?;
    let mut out = Vec::new();
    for bench_dir in found {
        out.push(
            read_one(&bench_dir)
                .with_context(|| format!("reading results in {}", bench_dir.display()))?,
        );
    }
    out.sort_by(|a, b| {
        (&a.group, value_key(&a.value), !a.is_baseline(), &a.function).cmp(&(
            &b.group,
            value_key(&b.value),
            !b.is_baseline(),
            &b.function,
        ))
    });
    Ok(out)
}

/// Sorts `1MiB` before `64MiB` before `1GiB`, and plain numbers by value.
fn value_key(v: &str) -> (u64, String) {
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().unwrap_or(0);
    let unit = &v[digits.len()..];
    let scale = match unit {
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => 1,
    };
    (n.saturating_mul(scale), v.to_owned())
}

fn collect(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if path.join("benchmark.json").is_file() && path.join("estimates.json").is_file() {
                found.push(path);
            }
        } else if path
            .file_name()
            .is_some_and(|n| n != "base" && n != "report")
        {
            collect(&path, found)?;
        }
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn read_one(dir: &Path) -> Result<Measurement> {
    let bench = read_json(&dir.join("benchmark.json"))?;
    let est = read_json(&dir.join("estimates.json"))?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let point = |k: &str| {
        est.get(k)
            .and_then(|e| e.get("point_estimate"))
            .and_then(Value::as_f64)
            .with_context(|| format!("estimates.json has no {k}.point_estimate"))
    };
    let throughput = bench.get("throughput").and_then(|t| {
        if let Some(b) = t.get("Bytes").and_then(Value::as_u64) {
            Some(Throughput::Bytes(b))
        } else {
            t.get("Elements")
                .and_then(Value::as_u64)
                .map(Throughput::Elements)
        }
    });
    Ok(Measurement {
        group: text(&bench, "group_id"),
        function: text(&bench, "function_id"),
        value: text(&bench, "value_str"),
        median_ns: point("median")?,
        mad_ns: point("median_abs_dev")?,
        throughput,
    })
}

/// A time in the unit that suits it: `812 ns`, `27.4 µs`, `55.1 ms`, `1.20 s`.
pub fn fmt_time(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn fmt_rate(t: Throughput, ns: f64) -> String {
    match t {
        Throughput::Bytes(b) => format!("{:.2} GB/s", b as f64 / ns),
        Throughput::Elements(e) => {
            let per_s = e as f64 / ns * 1e9;
            if per_s >= 1e6 {
                format!("{:.1} M/s", per_s / 1e6)
            } else {
                format!("{:.0} k/s", per_s / 1e3)
            }
        }
    }
}

/// Markdown tables, one per criterion group: each function's median, its spread (median
/// absolute deviation as a share of the median), its throughput if declared, and its time
/// divided by the baseline's of the same value.
pub fn tables(measurements: &[Measurement]) -> String {
    let mut groups: BTreeMap<&str, Vec<&Measurement>> = BTreeMap::new();
    for m in measurements {
        groups.entry(&m.group).or_default().push(m);
    }
    let mut out = String::new();
    for (group, rows) in groups {
        let _ = writeln!(out, "### `{group}`\n");
        let _ = writeln!(
            out,
            "| size | variant | median | spread (MAD) | throughput | time ÷ baseline |"
        );
        let _ = writeln!(out, "|---|---|--:|--:|--:|--:|");
        for m in &rows {
            let baseline = rows.iter().find(|b| b.is_baseline() && b.value == m.value);
            let ratio = match baseline {
                Some(b) if !m.is_baseline() => format!("{:.2}×", m.median_ns / b.median_ns),
                Some(_) => "1 (baseline)".to_owned(),
                None => "–".to_owned(),
            };
            let rate = m
                .throughput
                .map(|t| fmt_rate(t, m.median_ns))
                .unwrap_or_else(|| "–".to_owned());
            let value = if m.value.is_empty() { "–" } else { &m.value };
            let _ = writeln!(
                out,
                "| {value} | {} | {} | {:.1}% | {rate} | {ratio} |",
                m.function,
                fmt_time(m.median_ns),
                100.0 * m.mad_ns / m.median_ns,
            );
        }
        out.push('\n');
    }
    out
}

/// A markdown table of the interleaved A/B results that the `ab` bench writes to
/// `target/ab/results.json`: for each pair, both medians, the median of the per-round ratios
/// B ÷ A (time) and their range.
pub fn ab_table(json: &Value) -> Result<String> {
    let rows = json.as_array().context("ab results: not a JSON array")?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| comparison | A (baseline) | median A | B (shmarena) | median B | B ÷ A (time), median | range over rounds | B throughput |"
    );
    let _ = writeln!(out, "|---|---|--:|---|--:|--:|--:|--:|");
    for r in rows {
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
        let f = |k: &str| r.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let rate = r
            .get("per_iter")
            .filter(|p| !p.is_null())
            .and_then(|p| {
                let n = p.get("count")?.as_u64()?;
                match p.get("unit")?.as_str()? {
                    "bytes" => Some(fmt_rate(Throughput::Bytes(n), f("b_ns"))),
                    _ => Some(fmt_rate(Throughput::Elements(n), f("b_ns"))),
                }
            })
            .unwrap_or_else(|| "–".to_owned());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | **{:.2}×** | {:.2}–{:.2} ({} rounds) | {rate} |",
            s("name"),
            s("a"),
            fmt_time(f("a_ns")),
            s("b"),
            fmt_time(f("b_ns")),
            f("ratio"),
            f("ratio_min"),
            f("ratio_max"),
            r.get("rounds").and_then(Value::as_u64).unwrap_or(0),
        );
    }
    Ok(out)
}

/// Reads `path` (the `ab` bench's results) into [`ab_table`]'s table, or `None` if it does not
/// exist.
pub fn ab_table_from(path: &Path) -> Result<Option<String>> {
    if !path.is_file() {
        return Ok(None);
    }
    ab_table(&read_json(path)?).map(Some)
}

/// The issue-12 targets of the arena service, in the order the service section lists them:
/// (criterion group, measured function, same-run floor, what it is, target in ns).
const SERVICE_TARGETS: [(&str, &str, &str, &str, f64); 3] = [
    (
        "service/connect",
        "connect + first value",
        "baseline: Arena::open_memfd + first value",
        "connect by name + first value",
        100_000.0,
    ),
    (
        "service/current",
        "Subscription::current (no change)",
        "baseline: relaxed load + compare",
        "`Subscription::current()`, no change",
        20.0,
    ),
    (
        "service/publish-to-visible",
        "publish + current + first value",
        "baseline: Arena::open_memfd + first value",
        "publish → visible in a reader (+ first value)",
        1_000_000.0,
    ),
];

fn find<'m>(
    measurements: &'m [Measurement],
    group: &str,
    function: &str,
) -> Option<&'m Measurement> {
    measurements
        .iter()
        .find(|m| m.group == group && m.function == function)
}

fn bytes_text(b: f64) -> String {
    if b.abs() >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

/// The service section of docs/BENCHMARKS.md: the issue-12 targets from criterion's `service/*`
/// groups, each with its same-run floor; the swap cycle side by side with mmap-sync, with the
/// bytes each keeps resident; and `Shmem` as generations come and go. `memory` is the `service`
/// bench's `target/service/results.json`, if there is one.
pub fn service_section(measurements: &[Measurement], memory: Option<&Value>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| measure | median | same-run floor | median ÷ floor | target (median) | within target |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|---|");
    for (group, function, floor, what, target) in SERVICE_TARGETS {
        let Some(m) = find(measurements, group, function) else {
            let _ = writeln!(out, "| {what} | (not run) | | | {} | |", fmt_time(target));
            continue;
        };
        let (floor_text, ratio) = match find(measurements, group, floor) {
            Some(f) => (
                format!(
                    "{} ({})",
                    fmt_time(f.median_ns),
                    floor.trim_start_matches("baseline: ")
                ),
                format!("{:.1}×", m.median_ns / f.median_ns),
            ),
            None => ("–".to_owned(), "–".to_owned()),
        };
        let _ = writeln!(
            out,
            "| {what} | **{}** | {floor_text} | {ratio} | ≤ {} | {} |",
            fmt_time(m.median_ns),
            fmt_time(target),
            if m.median_ns <= target {
                "yes"
            } else {
                "**no**"
            },
        );
    }
    out.push('\n');

    let get = |path: &[&str]| -> Option<f64> {
        let mut v = memory?;
        for k in path {
            v = v.get(*k)?;
        }
        v.as_f64()
    };
    let swap: Vec<&Measurement> = measurements
        .iter()
        .filter(|m| m.group == "service/swap-cycle")
        .collect();
    let base = swap.iter().find(|m| m.is_baseline());
    if !swap.is_empty() {
        let _ = writeln!(
            out,
            "Swap cycle on the same `HashMap<String, u32>` ({}): new data written where readers \
             find it, then read by a reader with one lookup.\n",
            swap[0].value
        );
        let _ = writeln!(
            out,
            "| variant | median | time ÷ mmap-sync | bytes kept resident | what stays resident |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|---|");
        for m in &swap {
            let (resident, what) = if m.is_baseline() {
                (
                    get(&["mmap_sync", "resident_bytes"]),
                    "state file + two full data files (the one readers are on, the one written next)",
                )
            } else {
                (
                    get(&["shmarena", "resident_bytes"]),
                    "the current generation's sealed memfd + the 4 KiB generation page",
                )
            };
            let ratio = match base {
                Some(b) if !m.is_baseline() => format!("{:.2}×", m.median_ns / b.median_ns),
                Some(_) => "1 (baseline)".to_owned(),
                None => "–".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {ratio} | {} | {what} |",
                m.function.trim_start_matches("baseline: "),
                fmt_time(m.median_ns),
                resident.map_or("–".to_owned(), bytes_text),
            );
        }
        out.push('\n');
    }
    if let Some(size) = get(&["shmem", "arena_bytes"]) {
        let _ = writeln!(
            out,
            "`Shmem` of /proc/meminfo against its value before publishing, with {} arenas \
             (median of 3 rounds; machine-wide, so other processes add noise):\n",
            bytes_text(size)
        );
        let _ = writeln!(out, "| moment | Shmem − before | in arenas |");
        let _ = writeln!(out, "|---|--:|--:|");
        for (key, what) in [
            (
                "two_generations_delta",
                "new generation published, reader still on the old one",
            ),
            (
                "following_delta",
                "reader moved to the new one (old one's last reader let go)",
            ),
            ("released_delta", "publisher and reader let go"),
        ] {
            if let Some(d) = get(&["shmem", key]) {
                let _ = writeln!(out, "| {what} | {} | {:.2} |", bytes_text(d), d / size);
            }
        }
        out.push('\n');
    }
    out
}

/// Reads `path` (the `service` bench's memory results, if it exists) and returns
/// [`service_section`]'s text, or `None` if neither criterion nor that file has service results.
pub fn service_section_from(measurements: &[Measurement], path: &Path) -> Result<Option<String>> {
    let memory = if path.is_file() {
        Some(read_json(path)?)
    } else {
        None
    };
    let any = measurements.iter().any(|m| m.group.starts_with("service/"));
    if !any && memory.is_none() {
        return Ok(None);
    }
    Ok(Some(service_section(measurements, memory.as_ref())))
}

/// One line of a chart: a label and its (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

/// How a chart's x axis places and labels its values.
#[derive(Clone, Copy, Debug)]
pub enum XAxis<'a> {
    /// Sizes in bytes on a log-2 scale, ticks in KiB, MiB or GiB, labelled "arena size".
    Bytes,
    /// Plain numbers (a count of workers, say) on a linear scale, with this axis label.
    Linear(&'a str),
}

impl XAxis<'_> {
    fn scale(self, x: f64) -> f64 {
        match self {
            XAxis::Bytes => x.log2(),
            XAxis::Linear(_) => x,
        }
    }

    fn tick(self, x: f64) -> String {
        match self {
            XAxis::Bytes => size_text(x),
            XAxis::Linear(_) => trim_float(x),
        }
    }

    fn label(self) -> String {
        match self {
            XAxis::Bytes => "arena size (log scale)".to_owned(),
            XAxis::Linear(l) => xml(l),
        }
    }
}

/// A small line chart as a standalone SVG document: x (a size in bytes) on a log-2 axis, y
/// linear from 0, one coloured line with points per series, and a
/// legend. Hand-written so the report needs no plotting dependency.
pub fn svg_line_chart(title: &str, y_label: &str, series: &[Series]) -> String {
    svg_chart(title, XAxis::Bytes, y_label, series)
}

/// [`svg_line_chart`] with any [`XAxis`]: one tick per x value present, y linear from 0.
pub fn svg_chart(title: &str, x_axis: XAxis<'_>, y_label: &str, series: &[Series]) -> String {
    let plot = Plot::new(x_axis, series);
    let (w, h) = (Plot::W, Plot::H);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        (Plot::L + Plot::W - Plot::R) / 2.0,
        xml(title)
    );
    plot.axes(&mut out, y_label, series);
    plot.lines(&mut out, series);
    out.push_str("</svg>\n");
    out
}

/// A chart's geometry: the plot area inside the margins, and the ranges it shows.
struct Plot<'a> {
    x_axis: XAxis<'a>,
    /// The scaled x range.
    x0: f64,
    x1: f64,
    /// The top of the y axis (y starts at 0).
    y1: f64,
}

impl<'a> Plot<'a> {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const L: f64 = 70.0;
    const R: f64 = 230.0;
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    const COLORS: [&'static str; 8] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
    ];

    fn new(x_axis: XAxis<'a>, series: &[Series]) -> Plot<'a> {
        let points = series.iter().flat_map(|(_, p)| p.iter());
        let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
        for &(x, y) in points {
            x0 = x0.min(x_axis.scale(x));
            x1 = x1.max(x_axis.scale(x));
            y1 = y1.max(y);
        }
        if !x0.is_finite() || x1 <= x0 {
            x0 = 0.0;
            x1 = 1.0;
        }
        Plot {
            x_axis,
            x0,
            x1,
            y1: nice_ceiling(y1.max(1e-9)),
        }
    }

    fn px(&self, x: f64) -> f64 {
        Self::L
            + (self.x_axis.scale(x) - self.x0) / (self.x1 - self.x0) * (Self::W - Self::L - Self::R)
    }

    fn py(&self, y: f64) -> f64 {
        Self::H - Self::B - y / self.y1 * (Self::H - Self::T - Self::B)
    }

    /// Axes, grid, ticks and axis labels.
    fn axes(&self, out: &mut String, y_label: &str, series: &[Series]) {
        let (w, h, l, r, t, b) = (Self::W, Self::H, Self::L, Self::R, Self::T, Self::B);
        for i in 0..=5 {
            let y = self.y1 * f64::from(i) / 5.0;
            let _ = writeln!(
                out,
                r##"<line x1="{l}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                w - r,
                self.py(y),
                self.py(y),
                l - 6.0,
                self.py(y) + 4.0,
                trim_float(y)
            );
        }
        let mut xs: Vec<f64> = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
            .collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        for x in xs {
            let _ = writeln!(
                out,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{t}" y2="{}" stroke="#eee"/><text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
                self.px(x),
                self.px(x),
                h - b,
                self.px(x),
                h - b + 16.0,
                self.x_axis.tick(x)
            );
        }
        let _ = writeln!(
            out,
            r##"<line x1="{l}" x2="{l}" y1="{t}" y2="{}" stroke="#333"/><line x1="{l}" x2="{}" y1="{}" y2="{}" stroke="#333"/>"##,
            h - b,
            w - r,
            h - b,
            h - b
        );
        let _ = writeln!(
            out,
            r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (t + h - b) / 2.0,
            xml(y_label)
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            (l + w - r) / 2.0,
            h - 10.0,
            self.x_axis.label()
        );
    }

    /// One line with points per series, and the legend.
    fn lines(&self, out: &mut String, series: &[Series]) {
        let (w, r, t) = (Self::W, Self::R, Self::T);
        for (i, (label, pts)) in series.iter().enumerate() {
            let color = Self::COLORS[i % Self::COLORS.len()];
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for &(x, y) in pts {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    self.px(x),
                    self.py(y)
                );
            }
            let ly = t + 10.0 + 20.0 * i as f64;
            let _ = writeln!(
                out,
                r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
                w - r + 12.0,
                w - r + 32.0,
                w - r + 38.0,
                ly + 4.0,
                xml(label)
            );
        }
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn size_text(bytes: f64) -> String {
    let b = bytes as u64;
    if b >= 1 << 30 {
        format!("{} GiB", b >> 30)
    } else if b >= 1 << 20 {
        format!("{} MiB", b >> 20)
    } else {
        format!("{} KiB", b >> 10)
    }
}

/// The smallest of 1, 2, 2.5, 5 × 10^k at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

/// The attach chart of docs/BENCHMARKS.md: median attach time (µs) against arena size, one line
/// per criterion `attach/*` function. `None` if there are no attach results.
pub fn attach_chart(measurements: &[Measurement]) -> Option<String> {
    let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for m in measurements
        .iter()
        .filter(|m| m.group.starts_with("attach/"))
    {
        let (bytes, _) = value_key(&m.value);
        if bytes == 0 {
            continue;
        }
        let backing = m.group.trim_start_matches("attach/");
        let label = if m.is_baseline() {
            format!("{backing}: raw floor")
        } else {
            m.function.clone()
        };
        lines
            .entry(label)
            .or_default()
            .push((bytes as f64, m.median_ns / 1e3));
    }
    if lines.is_empty() {
        return None;
    }
    let series: Vec<Series> = lines
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            (k, v)
        })
        .collect();
    Some(svg_line_chart(
        "Attach: open + first value (criterion medians)",
        "µs",
        &series,
    ))
}

/// The machine, as docs/BENCHMARKS.md reports it: cores, CPU model, kernel, memory.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let shmem_thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "- cores (`nproc`): {cores}\n- CPU (`/proc/cpuinfo` model name): {model}\n\
         - kernel (`uname -r`): {kernel}\n- memory: {:.1} GiB\n\
         - shmem transparent huge pages: `{shmem_thp}`\n",
        mem_kib as f64 / (1 << 20) as f64
    )
}

/// Replaces the text between `<!-- BEGIN GENERATED: {tag} -->` and `<!-- END GENERATED: {tag} -->`
/// in `doc` with `body`. Fails if the markers are missing.
pub fn splice(doc: &str, tag: &str, body: &str) -> Result<String> {
    let begin = format!("<!-- BEGIN GENERATED: {tag} -->");
    let end = format!("<!-- END GENERATED: {tag} -->");
    let b = doc
        .find(&begin)
        .with_context(|| format!("marker {begin:?} not found"))?;
    let e = doc
        .find(&end)
        .with_context(|| format!("marker {end:?} not found"))?;
    anyhow::ensure!(e > b, "marker {end:?} comes before {begin:?}");
    Ok(format!(
        "{}{begin}\n{}{}",
        &doc[..b],
        body.trim_end().to_owned() + "\n",
        &doc[e..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_between_markers() {
        let doc = "a\n<!-- BEGIN GENERATED: t -->\nold\n<!-- END GENERATED: t -->\nz\n";
        let new = splice(doc, "t", "new").unwrap();
        assert_eq!(
            new,
            "a\n<!-- BEGIN GENERATED: t -->\nnew\n<!-- END GENERATED: t -->\nz\n"
        );
        assert!(splice(doc, "other", "x").is_err());
    }

    #[test]
    fn charts_are_svg() {
        let svg = svg_line_chart(
            "t <1>",
            "µs",
            &[("a".into(), vec![(1048576.0, 5.0), (1073741824.0, 9.0)])],
        );
        assert!(
            svg.starts_with("<svg") && svg.ends_with("</svg>\n"),
            "{svg}"
        );
        assert!(
            svg.contains("t &lt;1&gt;") && svg.contains("1 GiB"),
            "{svg}"
        );
        let svg = svg_chart(
            "t",
            XAxis::Linear("workers"),
            "MiB",
            &[("a".into(), vec![(1.0, 80.0), (2.0, 85.0)])],
        );
        assert!(
            svg.contains(">workers</text>")
                && svg.contains(">2</text>")
                && svg.contains(">100</text>"),
            "{svg}"
        );
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(0.21), 0.25);
    }

    #[test]
    fn sizes_sort_by_bytes() {
        let mut v = vec!["1GiB", "64MiB", "1MiB"];
        v.sort_by_key(|s| value_key(s));
        assert_eq!(v, ["1MiB", "64MiB", "1GiB"]);
    }

    #[test]
    fn service_section_checks_the_targets() {
        let m = |g: &str, f: &str, ns: f64| Measurement {
            group: g.into(),
            function: f.into(),
            value: String::new(),
            median_ns: ns,
            mad_ns: 1.0,
            throughput: None,
        };
        let ms = [
            m(
                "service/connect",
                "baseline: Arena::open_memfd + first value",
                20_000.0,
            ),
            m("service/connect", "connect + first value", 40_000.0),
            m("service/current", "Subscription::current (no change)", 25.0),
        ];
        let memory = serde_json::json!({
            "mmap_sync": {"resident_bytes": 2097152},
            "shmarena": {"resident_bytes": 1052672},
            "shmem": {"arena_bytes": 1048576, "two_generations_delta": 2097152,
                      "following_delta": 1048576, "released_delta": 0},
        });
        let s = service_section(&ms, Some(&memory));
        assert!(s.contains("| connect by name + first value | **40.0 µs** | 20.0 µs (Arena::open_memfd + first value) | 2.0× | ≤ 100.0 µs | yes |"), "{s}");
        assert!(s.contains("≤ 20.0 ns | **no** |"), "{s}");
        assert!(s.contains("(not run)"), "{s}");
        assert!(
            s.contains(
                "| reader moved to the new one (old one's last reader let go) | 1.0 MiB | 1.00 |"
            ),
            "{s}"
        );
    }

    #[test]
    fn tables_compare_with_the_baseline() {
        let m = |f: &str, ns: f64| Measurement {
            group: "g".into(),
            function: f.into(),
            value: "1MiB".into(),
            median_ns: ns,
            mad_ns: 1.0,
            throughput: None,
        };
        let t = tables(&[m("baseline: raw", 10.0), m("ours", 15.0)]);
        assert!(
            t.contains("| 1MiB | ours | 15.0 ns | 6.7% | – | 1.50× |"),
            "{t}"
        );
    }
}
