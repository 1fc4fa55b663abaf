//! Interleaved A/B measurement: on a machine shared with other work, load drifts within
//! seconds, so two criterion runs one after the other can differ by more than the effect being
//! measured. Here A and B alternate in short rounds (A B, B A, A B, …), each round gives one
//! ratio B ÷ A measured under the same load, and the result is the median of those ratios, with
//! their spread.

use std::time::{Duration, Instant};

use serde_json::json;

/// A measured routine: given an iteration count, runs that many iterations and returns the
/// time of the measured part (like criterion's `iter_custom`), so per-iteration setup and
/// freeing can stay outside the timing.
pub type Routine<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// One comparison.
#[derive(Clone, Debug)]
pub struct AbResult {
    /// What is compared, e.g. `attach, named segment, 64MiB`.
    pub name: String,
    /// The baseline's label.
    pub a: String,
    /// The measured variant's label.
    pub b: String,
    /// Rounds run.
    pub rounds: usize,
    /// Median time per iteration of A over the rounds, in nanoseconds.
    pub a_ns: f64,
    /// Median time per iteration of B over the rounds, in nanoseconds.
    pub b_ns: f64,
    /// Median of the per-round ratios B ÷ A.
    pub ratio: f64,
    /// Smallest and largest per-round ratio.
    pub ratio_range: (f64, f64),
    /// Bytes or elements per iteration, and which (`"bytes"` or `"elements"`), if meaningful.
    pub per_iter: Option<(u64, &'static str)>,
}

impl AbResult {
    /// As JSON, for `target/ab/results.json`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "name": self.name,
            "a": self.a,
            "b": self.b,
            "rounds": self.rounds,
            "a_ns": self.a_ns,
            "b_ns": self.b_ns,
            "ratio": self.ratio,
            "ratio_min": self.ratio_range.0,
            "ratio_max": self.ratio_range.1,
            "per_iter": self.per_iter.map(|(n, unit)| json!({"count": n, "unit": unit})),
        })
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// How many iterations make a round of about `round` for `f`, from a short trial.
fn calibrate(f: &mut Routine<'_>, round: Duration) -> u64 {
    let mut iters = 1u64;
    loop {
        let t = f(iters);
        if t >= round / 8 || iters >= 1 << 30 {
            let per = t.as_secs_f64() / iters as f64;
            return ((round.as_secs_f64() / per.max(1e-9)) as u64).clamp(1, 1 << 32);
        }
        iters *= 4;
    }
}

/// Runs A and B alternately for `rounds` rounds of about `round` each side, after a calibration
/// and `rounds / 4` unrecorded warm-up rounds, and returns the median per-round ratio B ÷ A.
pub fn compare(
    name: &str,
    (a_label, mut a): (&str, Routine<'_>),
    (b_label, mut b): (&str, Routine<'_>),
    rounds: usize,
    round: Duration,
) -> AbResult {
    let a_iters = calibrate(&mut a, round);
    let b_iters = calibrate(&mut b, round);
    // Warm-up rounds, not recorded: the first rounds in a process ran measurably off in trials
    // (caches, page tables and the allocator settling), in either direction.
    for _ in 0..(rounds / 4).max(1) {
        a(a_iters);
        b(b_iters);
    }
    let mut a_times = Vec::with_capacity(rounds);
    let mut b_times = Vec::with_capacity(rounds);
    let mut ratios = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let (ta, tb) = if r % 2 == 0 {
            let ta = a(a_iters);
            (ta, b(b_iters))
        } else {
            let tb = b(b_iters);
            (a(a_iters), tb)
        };
        let pa = ta.as_nanos() as f64 / a_iters as f64;
        let pb = tb.as_nanos() as f64 / b_iters as f64;
        a_times.push(pa);
        b_times.push(pb);
        ratios.push(pb / pa);
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    AbResult {
        name: name.to_owned(),
        a: a_label.to_owned(),
        b: b_label.to_owned(),
        rounds,
        a_ns: median(&mut a_times),
        b_ns: median(&mut b_times),
        ratio: median(&mut ratios),
        ratio_range: (lo, hi),
        per_iter: None,
    }
}

/// A routine from a closure that does one iteration, all of it timed.
pub fn each<'a>(mut f: impl FnMut() + 'a) -> Routine<'a> {
    Box::new(move |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        start.elapsed()
    })
}

/// A routine from a setup (untimed), a timed step that consumes its output, and an untimed
/// drop of what the step returns.
pub fn batched<'a, S, O>(
    mut setup: impl FnMut() -> S + 'a,
    mut step: impl FnMut(S) -> O + 'a,
) -> Routine<'a> {
    Box::new(move |iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let input = setup();
            let start = Instant::now();
            let out = step(input);
            total += start.elapsed();
            drop(out);
        }
        total
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn compares_a_slower_b() {
        let spin = |n: u64| {
            let mut x = 0u64;
            for i in 0..n {
                x = black_box(x.wrapping_add(i));
            }
            x
        };
        let r = compare(
            "t",
            (
                "a",
                each(move || {
                    black_box(spin(100));
                }),
            ),
            (
                "b",
                each(move || {
                    black_box(spin(400));
                }),
            ),
            5,
            Duration::from_millis(2),
        );
        assert!(r.ratio > 1.0, "{r:?}");
    }
}
