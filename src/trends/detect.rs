//! Regression detection on one series and one metric (duration, peak memory, output
//! size), oldest value first.
//!
//! The recent window is the last [`Params::recent`] values, the baseline the up to
//! [`Params::max_baseline`] values before it. A regression is flagged when all hold:
//!
//! 1. a one-sided exact Mann-Whitney U test says the recent values are larger
//!    (p ≤ [`Params::alpha`]);
//! 2. the recent median is at least [`Params::min_ratio`] times the baseline median: a
//!    significant +3 % is no regression worth a CI failure;
//! 3. the medians differ by at least the metric's absolute floor: a 3 ms build that
//!    takes 6 ms on a loaded machine is +100 % and means nothing.
//!
//! Medians make one slow build (a cold cache) in either window harmless; ranks make the
//! verdict independent of the noise's scale and shape, and the exact distribution
//! handles tied values (identical output sizes): an unchanged constant never alarms.
//! Measured detection and false-alarm rates are in docs/trends.md.

use serde::Serialize;

use super::stats::{mann_whitney_greater, quantile_sorted, sorted};

/// The detector's settings; [`Params::for_metric`] gives those docs/trends.md measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Params {
    /// The recent window: the last this many values.
    pub recent: usize,
    /// With fewer baseline values than this there is no verdict.
    pub min_baseline: usize,
    /// At most this many values before the recent window form the baseline.
    pub max_baseline: usize,
    /// Significance level of the rank test.
    pub alpha: f64,
    /// Recent median ÷ baseline median must be at least this.
    pub min_ratio: f64,
    /// Recent median − baseline median must be at least this, in the metric's unit.
    pub min_abs_delta: f64,
}

/// What is measured of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Build time, in milliseconds.
    Duration,
    /// Peak resident memory of the build's processes, in bytes.
    PeakRss,
    /// Total NAR size of its outputs, in bytes.
    OutputSize,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Duration, Metric::PeakRss, Metric::OutputSize];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Duration => "duration",
            Metric::PeakRss => "peak_rss",
            Metric::OutputSize => "output_size",
        }
    }

    /// How people read it: "duration", "peak memory", "output size".
    pub fn label(self) -> &'static str {
        match self {
            Metric::Duration => "duration",
            Metric::PeakRss => "peak memory",
            Metric::OutputSize => "output size",
        }
    }
}

impl Params {
    /// The settings for `metric`: the last 5 builds against up to 30 before them (at
    /// least 8), α = 0.005, +15 %, and at least 500 ms, 16 MiB or 4 KiB more.
    pub fn for_metric(metric: Metric) -> Params {
        Params {
            recent: 5,
            min_baseline: 8,
            max_baseline: 30,
            alpha: 0.005,
            min_ratio: 1.15,
            min_abs_delta: match metric {
                Metric::Duration => 500.0,
                Metric::PeakRss => 16.0 * 1024.0 * 1024.0,
                Metric::OutputSize => 4096.0,
            },
        }
    }

    /// How many values a verdict needs.
    pub fn min_values(&self) -> usize {
        self.recent + self.min_baseline
    }
}

/// The detector's conclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Fewer values than a verdict needs.
    TooFewBuilds,
    Unchanged,
    Regressed,
}

/// What [`assess`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    pub verdict: Verdict,
    pub baseline_n: usize,
    pub recent_n: usize,
    pub baseline_median: Option<f64>,
    pub recent_median: Option<f64>,
    /// recent median ÷ baseline median (`None` when the baseline median is 0 or there
    /// is no verdict).
    pub ratio: Option<f64>,
    /// The rank test's p-value; `None` when the floors alone ruled a regression out
    /// (the test is not run then: most series of a report).
    pub p_value: Option<f64>,
    /// How many recent values exceed every baseline value: 1 or 2 is what a change one
    /// or two builds ago looks like, before it is flagged.
    pub recent_above_baseline_max: usize,
}

/// Tests the end of `values` (oldest first, no NaN) for an increase.
pub fn assess(values: &[f64], p: &Params) -> Assessment {
    let k = p.recent.max(1);
    let recent_n = k.min(values.len());
    let (before, recent) = values.split_at(values.len() - recent_n);
    let baseline = &before[before.len().saturating_sub(p.max_baseline)..];
    let (bs, rs) = (sorted(baseline), sorted(recent));
    let baseline_max = bs.last().copied();
    let mut a = Assessment {
        verdict: Verdict::TooFewBuilds,
        baseline_n: bs.len(),
        recent_n,
        baseline_median: quantile_sorted(&bs, 0.5),
        recent_median: quantile_sorted(&rs, 0.5),
        ratio: None,
        p_value: None,
        recent_above_baseline_max: baseline_max
            .map_or(0, |max| rs.iter().filter(|&&v| v > max).count()),
    };
    let (Some(bm), Some(rm)) = (a.baseline_median, a.recent_median) else {
        return a;
    };
    if recent_n < k || bs.len() < p.min_baseline {
        return a;
    }
    a.ratio = (bm > 0.0).then(|| rm / bm);
    a.verdict = Verdict::Unchanged;
    let big_enough = match a.ratio {
        Some(ratio) => ratio >= p.min_ratio,
        None => rm > 0.0,
    } && rm - bm >= p.min_abs_delta;
    if !big_enough {
        return a;
    }
    if let Some(test) = mann_whitney_greater(baseline, recent) {
        a.p_value = Some(test.p_value);
        if test.p_value <= p.alpha {
            a.verdict = Verdict::Regressed;
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_needs_eight_plus_five_values() {
        let p = Params::for_metric(Metric::Duration);
        let few = vec![1000.0; p.min_values() - 1];
        assert_eq!(assess(&few, &p).verdict, Verdict::TooFewBuilds);
        let enough = vec![1000.0; p.min_values()];
        assert_eq!(assess(&enough, &p).verdict, Verdict::Unchanged);
    }

    #[test]
    fn a_constant_never_alarms_and_a_constant_step_always_does() {
        let p = Params::for_metric(Metric::OutputSize);
        for n in 8..=40 {
            let mut s = vec![123_456.0; n + 5];
            assert_eq!(assess(&s, &p).verdict, Verdict::Unchanged, "n={n}");
            s[n..].fill(185_184.0);
            let a = assess(&s, &p);
            assert_eq!(a.verdict, Verdict::Regressed, "n={n} {a:?}");
            assert_eq!(a.ratio, Some(1.5));
            assert_eq!(a.baseline_n, n.min(30));
        }
    }

    #[test]
    fn a_tiny_significant_shift_and_a_small_absolute_one_are_not_flagged() {
        let sizes = Params::for_metric(Metric::OutputSize);
        let mut s = vec![1_000_000.0; 30];
        s.extend([1_000_200.0; 5]);
        assert_eq!(assess(&s, &sizes).verdict, Verdict::Unchanged);
        let durations = Params::for_metric(Metric::Duration);
        let mut d: Vec<f64> = (0..30).map(|i| 40.0 + f64::from(i % 5)).collect();
        d.extend([90.0, 91.0, 92.0, 93.0, 94.0]);
        assert_eq!(assess(&d, &durations).verdict, Verdict::Unchanged);
    }

    #[test]
    fn one_slow_build_in_the_recent_window_is_harmless() {
        let p = Params::for_metric(Metric::Duration);
        let mut s: Vec<f64> = (0..35)
            .map(|i| 60_000.0 + f64::from(i % 7) * 1000.0)
            .collect();
        s[33] = 130_000.0;
        let a = assess(&s, &p);
        assert_eq!(a.verdict, Verdict::Unchanged);
        assert_eq!(a.recent_above_baseline_max, 1);
    }
}
