//! The text of `nix-ledger trends`: the regressions, then one line per series (the ones
//! that took the most build time first; every series with `--json`).

use super::detect::{Metric, Verdict};
use super::{MetricTrend, Regression, SeriesTrend, Trends};
use crate::size::human_bytes;
use crate::time::human_duration_ms;

/// Series listed in text unless names were asked for.
pub const SHOWN_SERIES: usize = 25;

/// A value of `metric` as people read it.
pub fn human(metric: Metric, value: f64) -> String {
    match metric {
        Metric::Duration => human_duration_ms(value.round() as i64),
        Metric::PeakRss | Metric::OutputSize => human_bytes(value.round() as i64),
    }
}

/// `2.12 → 2.13` when the versions of a regression's windows differ, else empty.
pub fn version_change(r: &Regression) -> String {
    if !r.version_changed {
        return String::new();
    }
    let last = |v: &[String]| v.last().map_or("?", String::as_str).to_string();
    format!(
        "{} → {}",
        display_version(&last(&r.baseline_versions)),
        display_version(&last(&r.recent_versions))
    )
}

fn display_version(v: &str) -> &str {
    if v.is_empty() {
        "(none)"
    } else {
        v
    }
}

/// One regression on one line: `victim  duration  1.0s → 1.5s  ×1.50`.
pub fn regression_line(r: &Regression) -> String {
    let ratio = r
        .ratio
        .map(|x| format!("×{x:.2}"))
        .unwrap_or_else(|| "from 0".into());
    let versions = version_change(r);
    let versions = if versions.is_empty() {
        String::new()
    } else {
        format!(", with {versions}")
    };
    format!(
        "{}  {}  {} → {}  {ratio}  (p = {:.1e}; last {} builds against {} before{versions})",
        r.name,
        r.metric.label(),
        human(r.metric, r.baseline),
        human(r.metric, r.recent),
        r.p_value,
        r.recent_n,
        r.baseline_n
    )
}

/// `p50 / p90` of a metric over the period, or `-`.
pub fn spread(metric: Metric, t: &MetricTrend) -> String {
    match (t.median, t.p90) {
        (Some(m), Some(p)) => format!("{} / {}", human(metric, m), human(metric, p)),
        _ => "-".into(),
    }
}

/// The versions of a series in the period: `2.12 → 2.13`.
pub fn versions(s: &SeriesTrend) -> String {
    let shown: Vec<&str> = s
        .versions
        .iter()
        .map(|v| display_version(&v.version))
        .collect();
    let mut distinct: Vec<&str> = Vec::new();
    for v in shown {
        if distinct.last() != Some(&v) {
            distinct.push(v);
        }
    }
    distinct.join(" → ")
}

/// What the detector said of a series, briefly: `duration +50 %`, `ok`, `too few builds`.
pub fn verdict(s: &SeriesTrend) -> String {
    let metrics = [
        (Metric::Duration, &s.duration),
        (Metric::PeakRss, &s.peak_rss),
        (Metric::OutputSize, &s.output_size),
    ];
    let flagged: Vec<String> = metrics
        .iter()
        .filter(|(_, t)| t.assessment.verdict == Verdict::Regressed)
        .map(|(m, t)| match t.assessment.ratio {
            Some(r) => format!("{} +{:.0} %", m.label(), (r - 1.0) * 100.0),
            None => format!("{} up from 0", m.label()),
        })
        .collect();
    if !flagged.is_empty() {
        return format!("REGRESSED: {}", flagged.join(", "));
    }
    if metrics
        .iter()
        .all(|(_, t)| t.assessment.verdict == Verdict::TooFewBuilds)
    {
        "too few builds".into()
    } else {
        "ok".into()
    }
}

/// The text of `trends`; `all` lists every series, else the first [`SHOWN_SERIES`].
pub fn render(t: &Trends, all: bool) -> String {
    let mut out = String::new();
    if let Some(m) = &t.machine {
        out.push_str(&format!(
            "builds of fleet machine {m} (pulled by nb sync)\n"
        ));
    }
    if t.series.is_empty() {
        out.push_str("no successful local builds recorded in this period\n");
        return out;
    }
    if t.regressions.is_empty() {
        out.push_str(&format!(
            "no regressions ({} tests over {} series)\n",
            t.tested, t.series_count
        ));
    } else {
        out.push_str(&format!("regressions ({}):\n", t.regressions.len()));
        for r in &t.regressions {
            out.push_str(&format!("  {}\n", regression_line(r)));
        }
    }
    if let Some(warning) = &t.warning {
        out.push_str(&format!("note: {warning}\n"));
    }
    out.push('\n');
    let shown = if all {
        t.series.len()
    } else {
        SHOWN_SERIES.min(t.series.len())
    };
    let rows: Vec<[String; 7]> = t.series[..shown]
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.builds.to_string(),
                versions(s),
                spread(Metric::Duration, &s.duration),
                spread(Metric::PeakRss, &s.peak_rss),
                spread(Metric::OutputSize, &s.output_size),
                verdict(s),
            ]
        })
        .collect();
    let head = [
        "SERIES",
        "BUILDS",
        "VERSIONS",
        "DURATION p50 / p90",
        "PEAK MEMORY p50 / p90",
        "OUTPUT p50 / p90",
        "VERDICT",
    ];
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = w - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.push('\n');
        text
    };
    out.push_str(&line(head.to_vec()));
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    if shown < t.series.len() {
        out.push_str(&format!(
            "… and {} more series (name them, or --json lists all)\n",
            t.series.len() - shown
        ));
    }
    out
}
