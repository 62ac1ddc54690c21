//! `nix-ledger trends [NAME…]`: every derivation name's builds over time (its series:
//! the name without its version, so `hello-2.12` and `hello-2.13` are one, the version
//! change marked), with the median and p90 of duration, peak memory and output size, and
//! regressions of each: the recent builds against a baseline of earlier ones
//! ([`detect`]). `report` shows the same value.
//!
//! - [`stats`]: quantiles and the exact rank test.
//! - [`detect`]: one series, one metric: regressed or not.
//! - [`render`]: the text people read (`--json` prints [`Trends`] itself).

pub mod detect;
pub mod render;
pub mod stats;

use std::collections::HashMap;

use serde::Serialize;

use crate::ledger::model::Scope;
use crate::ledger::trends::{Point, SeriesRows};
use crate::ledger::Ledger;
use crate::nix::name::series_of;
use crate::time::rfc3339_ms;
use crate::{Error, Result};
use detect::{assess, Assessment, Metric, Params, Verdict};
use stats::{quantile_sorted, sorted};

/// Which series `trends` looks at.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Series keys or derivation names (`hello` or `hello-2.12`); empty: every series.
    pub names: Vec<String>,
    /// The period shown: series built since then, their statistics over it. The
    /// baseline of the regression test reaches further back when it needs to.
    pub since_ms: i64,
    /// Only the series built in this session (CI: the run's own `nb build`).
    pub session: Option<i64>,
    /// Another fleet machine's builds (pulled by `sync`) instead of this machine's.
    pub machine: Option<String>,
}

/// The answer of `trends`.
#[derive(Debug, Clone, Serialize)]
pub struct Trends {
    /// The start of the period (RFC 3339), `None` for all history.
    pub since: Option<String>,
    pub session: Option<i64>,
    /// The fleet machine whose builds these are; `None`: this machine's.
    pub machine: Option<String>,
    pub params: ParamsByMetric,
    /// Series with a build in the period.
    pub series_count: usize,
    /// Tests made (series × metric with enough builds for a verdict).
    pub tested: usize,
    pub regressions: Vec<Regression>,
    /// Set when so many series regressed at once that the machine (load, another host)
    /// is a likelier cause than the code.
    pub warning: Option<String>,
    /// Every series, the one that took the most build time in the period first.
    pub series: Vec<SeriesTrend>,
}

/// The detector's settings of each metric.
#[derive(Debug, Clone, Serialize)]
pub struct ParamsByMetric {
    pub duration: Params,
    pub peak_rss: Params,
    pub output_size: Params,
}

/// A flagged regression. Values are in the metric's unit: milliseconds or bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Regression {
    pub name: String,
    pub metric: Metric,
    /// The medians of the baseline and of the recent window.
    pub baseline: f64,
    pub recent: f64,
    pub ratio: Option<f64>,
    pub p_value: f64,
    pub baseline_n: usize,
    pub recent_n: usize,
    pub baseline_versions: Vec<String>,
    pub recent_versions: Vec<String>,
    /// The recent builds have a version the baseline has not: the regression came with
    /// a version change (or the change of version is the cause).
    pub version_changed: bool,
    /// When the first build of the recent window finished.
    pub recent_since: String,
}

/// One series over the period.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesTrend {
    pub name: String,
    /// Successful local builds in the period.
    pub builds: usize,
    pub first_at: Option<String>,
    pub last_at: Option<String>,
    /// Runs of builds of one version in the period, oldest first (the last 10).
    pub versions: Vec<VersionSpan>,
    /// Summed build time in the period.
    pub total_duration_ms: i64,
    pub duration: MetricTrend,
    pub peak_rss: MetricTrend,
    pub output_size: MetricTrend,
    #[serde(skip)]
    pub series_id: i64,
}

/// Builds of one version, one after the other.
#[derive(Debug, Clone, Serialize)]
pub struct VersionSpan {
    pub version: String,
    pub first_at: String,
    pub builds: usize,
}

/// One metric of one series: its spread over the period, and the detector's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct MetricTrend {
    /// Builds in the period that measured it.
    pub measured: usize,
    pub median: Option<f64>,
    pub p90: Option<f64>,
    #[serde(flatten)]
    pub assessment: Assessment,
}

/// How many spans of versions a series lists.
const SHOWN_VERSIONS: usize = 10;

/// Flagging more than this share of the tested series at once (and at least
/// [`MACHINE_MIN`]) is more likely the machine than the code.
const MACHINE_SHARE: f64 = 0.2;
const MACHINE_MIN: usize = 3;

/// Computes the trends of `req`.
pub fn compute(ledger: &Ledger, req: &Request) -> Result<Trends> {
    let here = crate::machine::this_machine();
    let scope = match req.machine.as_deref() {
        Some(m) if m != here => Scope::Fleet(m),
        _ => Scope::Here,
    };
    if let Scope::Fleet(m) = scope {
        if !ledger.fleet_machine_has_builds(m)? {
            let known = ledger.fleet_machines()?;
            return Err(Error::NotFound(format!(
                "fleet machine `{m}` (this is `{here}`; pulled by `nb sync`: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    let keys = ledger.series_keys()?;
    let mut only: Option<Vec<i64>> = None;
    if !req.names.is_empty() {
        let by_key: HashMap<&str, i64> = keys.iter().map(|(id, k)| (k.as_str(), *id)).collect();
        let mut ids = Vec::new();
        for name in &req.names {
            let id = by_key
                .get(name.as_str())
                .or_else(|| by_key.get(series_of(name).key.as_str()))
                .ok_or_else(|| Error::NotFound(name.clone()))?;
            ids.push(*id);
        }
        ids.sort_unstable();
        ids.dedup();
        only = Some(ids);
    }
    if let Some(session) = req.session {
        let built = ledger.series_of_session(session)?;
        only = Some(match only {
            Some(ids) => ids.into_iter().filter(|id| built.contains(id)).collect(),
            None => built,
        });
    }
    let named = !req.names.is_empty();
    let mut series = Vec::new();
    let mut regressions = Vec::new();
    let mut tested = 0;
    ledger.scan_series_of(scope, only.as_deref(), |rows| {
        let key = keys.get(&rows.series_id).map_or("?", String::as_str);
        if let Some(found) = series_trend(rows, key, req.since_ms, named) {
            tested += found.tested;
            regressions.extend(found.regressions);
            series.push(found.trend);
        }
        Ok(())
    })?;
    series.sort_by(|a, b| {
        b.total_duration_ms
            .cmp(&a.total_duration_ms)
            .then_with(|| a.name.cmp(&b.name))
    });
    regressions.sort_by(|a, b| {
        b.ratio
            .unwrap_or(f64::INFINITY)
            .total_cmp(&a.ratio.unwrap_or(f64::INFINITY))
            .then_with(|| a.name.cmp(&b.name))
    });
    let flagged_series = {
        let mut names: Vec<&str> = regressions.iter().map(|r| r.name.as_str()).collect();
        names.dedup();
        names.len()
    };
    let warning = (flagged_series >= MACHINE_MIN
        && flagged_series as f64 > MACHINE_SHARE * series.len() as f64)
        .then(|| {
            format!(
                "{flagged_series} of {} series regressed at once: a busy or different machine \
                 is a likelier cause than {flagged_series} changes",
                series.len()
            )
        });
    Ok(Trends {
        since: (req.since_ms > 0).then(|| rfc3339_ms(req.since_ms)),
        session: req.session,
        machine: match scope {
            Scope::Fleet(m) => Some(m.to_string()),
            Scope::Here => None,
        },
        params: ParamsByMetric {
            duration: Params::for_metric(Metric::Duration),
            peak_rss: Params::for_metric(Metric::PeakRss),
            output_size: Params::for_metric(Metric::OutputSize),
        },
        series_count: series.len(),
        tested,
        regressions,
        warning,
        series,
    })
}

/// One series' trend and what it flagged.
struct Found {
    trend: SeriesTrend,
    regressions: Vec<Regression>,
    tested: usize,
}

fn value(p: &Point, metric: Metric) -> Option<f64> {
    match metric {
        Metric::Duration => p.duration_ms,
        Metric::PeakRss => p.peak_rss_bytes,
        Metric::OutputSize => p.output_bytes,
    }
    .map(|v| v as f64)
}

/// The trend of one series; `None` when it has no build in the period (and was not
/// asked for by name).
fn series_trend(rows: &SeriesRows, key: &str, since_ms: i64, named: bool) -> Option<Found> {
    let points = &rows.points;
    let start = points.partition_point(|p| p.finished_ms < since_ms);
    let period = &points[start..];
    if period.is_empty() && !named {
        return None;
    }
    let mut found = Found {
        trend: SeriesTrend {
            name: key.to_string(),
            builds: period.len(),
            first_at: period.first().map(|p| rfc3339_ms(p.finished_ms)),
            last_at: period.last().map(|p| rfc3339_ms(p.finished_ms)),
            versions: version_spans(rows, period),
            total_duration_ms: period.iter().filter_map(|p| p.duration_ms).sum(),
            duration: MetricTrend::empty(),
            peak_rss: MetricTrend::empty(),
            output_size: MetricTrend::empty(),
            series_id: rows.series_id,
        },
        regressions: Vec::new(),
        tested: 0,
    };
    for metric in Metric::ALL {
        let params = Params::for_metric(metric);
        // Only the tail is tested: the recent window and the baseline before it.
        let tail = params.recent + params.max_baseline;
        let measured: Vec<(usize, f64)> = points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| value(p, metric).map(|v| (i, v)))
            .collect();
        let in_period: Vec<f64> = measured
            .iter()
            .filter(|(i, _)| *i >= start)
            .map(|(_, v)| *v)
            .collect();
        let tested = &measured[measured.len().saturating_sub(tail)..];
        let values: Vec<f64> = tested.iter().map(|(_, v)| *v).collect();
        let assessment = assess(&values, &params);
        if assessment.verdict != Verdict::TooFewBuilds {
            found.tested += 1;
        }
        if assessment.verdict == Verdict::Regressed {
            let split = tested.len() - assessment.recent_n;
            let versions_of = |part: &[(usize, f64)]| -> Vec<String> {
                let mut seen: Vec<String> = Vec::new();
                for (i, _) in part {
                    let v = &rows.versions[points[*i].version];
                    if !seen.contains(v) {
                        seen.push(v.clone());
                    }
                }
                seen
            };
            let baseline_versions = versions_of(&tested[..split]);
            let recent_versions = versions_of(&tested[split..]);
            found.regressions.push(Regression {
                name: key.to_string(),
                metric,
                baseline: assessment.baseline_median.unwrap_or(0.0),
                recent: assessment.recent_median.unwrap_or(0.0),
                ratio: assessment.ratio,
                p_value: assessment.p_value.unwrap_or(1.0),
                baseline_n: assessment.baseline_n,
                recent_n: assessment.recent_n,
                version_changed: recent_versions
                    .iter()
                    .any(|v| !baseline_versions.contains(v)),
                baseline_versions,
                recent_versions,
                recent_since: rfc3339_ms(points[tested[split].0].finished_ms),
            });
        }
        let spread = sorted(&in_period);
        let trend = MetricTrend {
            measured: spread.len(),
            median: quantile_sorted(&spread, 0.5),
            p90: quantile_sorted(&spread, 0.9),
            assessment,
        };
        match metric {
            Metric::Duration => found.trend.duration = trend,
            Metric::PeakRss => found.trend.peak_rss = trend,
            Metric::OutputSize => found.trend.output_size = trend,
        }
    }
    Some(found)
}

impl MetricTrend {
    fn empty() -> MetricTrend {
        MetricTrend {
            measured: 0,
            median: None,
            p90: None,
            assessment: assess(&[], &Params::for_metric(Metric::Duration)),
        }
    }
}

/// The runs of one version among `period`'s builds, the last [`SHOWN_VERSIONS`].
fn version_spans(rows: &SeriesRows, period: &[Point]) -> Vec<VersionSpan> {
    let mut spans: Vec<VersionSpan> = Vec::new();
    let mut last: Option<usize> = None;
    for p in period {
        match spans.last_mut() {
            Some(span) if last == Some(p.version) => span.builds += 1,
            _ => spans.push(VersionSpan {
                version: rows.versions[p.version].clone(),
                first_at: rfc3339_ms(p.finished_ms),
                builds: 1,
            }),
        }
        last = Some(p.version);
    }
    let cut = spans.len().saturating_sub(SHOWN_VERSIONS);
    spans.split_off(cut)
}
