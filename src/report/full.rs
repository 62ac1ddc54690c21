//! `nix-ledger report`: one computation of everything the ledger can tell about a period
//! (regressions, the slowest derivations, sessions over time, the time lost to wasted
//! rebuilds, remote builders, garbage collections, advice), as one serialisable
//! [`Report`]. Text, Markdown, HTML and JSON are all renderings of that one value, so
//! they cannot disagree.

use serde::Serialize;

pub use super::advice::Advice;
use super::retention::{self, GcRuns};
use super::sessions::{self, Sessions};
use super::BuildersReport;
use crate::ledger::model::Scope;
use crate::ledger::Ledger;
use crate::nix::config::NixSettings;
use crate::time::{now_ms, rfc3339_ms};
use crate::trends::{self, Regression, SeriesTrend};
use crate::why::rebuilds::{self, RebuildEntry};
use crate::why::verdict::VerdictKind;
use crate::Result;

/// The slowest derivations listed.
const SLOWEST: usize = 10;
/// Series whose build times are drawn (the ones that took the most time).
const CHARTED: usize = 6;
/// Wasted rebuilds listed one by one (the costliest).
const REBUILDS_LISTED: usize = 5;

/// What to report on.
#[derive(Debug, Clone)]
pub struct Request {
    pub since_ms: i64,
    /// How the period was given (`30d`), for the title.
    pub period: String,
    /// Nix's settings in effect (`nix show-config`), which the tuner's advice compares
    /// with; unknown settings get no such advice.
    pub settings: NixSettings,
    /// Another fleet machine's report, from what `sync` pulled of it.
    pub machine: Option<String>,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at: String,
    pub since: String,
    pub period: String,
    pub version: String,
    /// The fleet machine reported on (`--machine`); `None`: this machine.
    pub machine: Option<String>,
    /// Successful local builds in the period, how many series, their summed time.
    pub builds: usize,
    pub series: usize,
    pub build_time_ms: i64,
    pub regressions: Vec<Regression>,
    /// Tests the detector made (series × metric with enough builds).
    pub regression_tests: usize,
    pub regression_warning: Option<String>,
    pub slowest: Vec<Slowest>,
    pub sessions: Sessions,
    /// `None` for a fleet machine: judging rebuilds needs its .drv files, which stay there.
    pub rebuilds: Option<Rebuilds>,
    pub charts: Charts,
    /// Per builder (this machine first), when the period has remote builds; else `None`.
    pub builders: Option<BuildersReport>,
    /// The garbage collections nix-ledger ran in the period.
    pub gc_runs: GcRuns,
    /// Where the tuner or the retention policy would change what is in effect, each with
    /// its numbers; empty when neither would.
    pub advice: Vec<Advice>,
}

/// One of the derivations that took the most build time in the period.
#[derive(Debug, Clone, Serialize)]
pub struct Slowest {
    pub name: String,
    pub builds: usize,
    pub median_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub total_ms: i64,
    pub version: Option<String>,
}

/// The avoidable and no-op rebuilds of the period (see `nix-ledger rebuilds`).
#[derive(Debug, Clone, Serialize)]
pub struct Rebuilds {
    pub avoidable: usize,
    pub no_op: usize,
    /// Their summed build time.
    pub wasted_ms: i64,
    pub unknown_durations: usize,
    /// The derivations whose wasted rebuilds cost the most.
    pub costliest: Vec<WastedBy>,
}

/// The wasted rebuilds of one derivation name, of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct WastedBy {
    pub name: String,
    pub kind: VerdictKind,
    pub rebuilds: usize,
    pub wasted_ms: i64,
    /// The cause of the latest one.
    pub detail: String,
}

/// What the HTML draws, as numbers (so JSON has them too).
#[derive(Debug, Clone, Serialize)]
pub struct Charts {
    /// The build times of the series that took the most time, build by build.
    pub durations: Vec<DurationSeries>,
}

/// One series' build times in the period.
#[derive(Debug, Clone, Serialize)]
pub struct DurationSeries {
    pub name: String,
    /// (finished, unix ms; duration, ms), oldest first.
    pub points: Vec<(i64, i64)>,
    /// The builds where the version changed: (finished, new version).
    pub version_changes: Vec<(i64, String)>,
    pub regressed: bool,
}

/// Computes the report of `req`.
pub fn compute(ledger: &mut Ledger, req: &Request) -> Result<Report> {
    // trends checks that a fleet machine has builds here, and names the known ones.
    let found = trends::compute(
        ledger,
        &trends::Request {
            since_ms: req.since_ms,
            machine: req.machine.clone(),
            ..trends::Request::default()
        },
    )?;
    let scope = match found.machine.as_deref() {
        Some(m) => Scope::Fleet(m),
        None => Scope::Here,
    };
    let sessions = sessions::sessions(ledger, scope, req.since_ms)?;
    let charts = Charts {
        durations: duration_series(
            ledger,
            scope,
            &found.series[..CHARTED.min(found.series.len())],
            &found.regressions,
            req.since_ms,
        )?,
    };
    // What only this machine knows: its rebuilds' causes (the .drv files), its remote
    // builders, its GC runs and store.
    let here = scope == Scope::Here;
    let rebuilds = if here {
        let wasted = rebuilds::remembered(ledger, req.since_ms)?;
        Some(Rebuilds {
            avoidable: wasted.avoidable,
            no_op: wasted.no_op,
            wasted_ms: wasted.wasted_ms,
            unknown_durations: wasted.unknown_durations,
            costliest: costliest(&wasted.entries),
        })
    } else {
        None
    };
    // Only a period with remote builds reads the per-builder numbers: a look at the
    // remote builds alone tells.
    let builders = if here && ledger.has_remote_builds_since(req.since_ms)? {
        Some(super::builders(ledger, req.since_ms)?)
    } else {
        None
    };
    let mut advice = vec![super::advice::tune(
        ledger,
        &req.settings,
        scope,
        req.since_ms,
    )?];
    if here {
        advice.push(retention::advice(ledger, req.since_ms)?);
    }
    let advice: Vec<Advice> = advice.into_iter().flatten().collect();
    let gc_runs = if here {
        retention::gc_runs(ledger, req.since_ms)?
    } else {
        GcRuns::default()
    };
    Ok(Report {
        generated_at: rfc3339_ms(now_ms()),
        since: rfc3339_ms(req.since_ms),
        period: req.period.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        machine: found.machine.clone(),
        builds: found.series.iter().map(|s| s.builds).sum(),
        series: found.series_count,
        build_time_ms: found.series.iter().map(|s| s.total_duration_ms).sum(),
        regression_tests: found.tested,
        regression_warning: found.warning,
        slowest: found.series.iter().take(SLOWEST).map(slowest).collect(),
        regressions: found.regressions,
        sessions,
        rebuilds,
        charts,
        builders,
        gc_runs,
        advice,
    })
}

/// The wasted rebuilds grouped by name and kind, the costliest first.
fn costliest(entries: &[RebuildEntry]) -> Vec<WastedBy> {
    let mut by: Vec<WastedBy> = Vec::new();
    for e in entries {
        match by.iter_mut().find(|w| w.name == e.name && w.kind == e.kind) {
            Some(w) => {
                w.rebuilds += 1;
                w.wasted_ms += e.duration_ms.unwrap_or(0);
                w.detail.clone_from(&e.detail);
            }
            None => by.push(WastedBy {
                name: e.name.clone(),
                kind: e.kind,
                rebuilds: 1,
                wasted_ms: e.duration_ms.unwrap_or(0),
                detail: e.detail.clone(),
            }),
        }
    }
    by.sort_by(|a, b| {
        b.wasted_ms
            .cmp(&a.wasted_ms)
            .then_with(|| a.name.cmp(&b.name))
    });
    by.truncate(REBUILDS_LISTED);
    by
}

fn slowest(s: &SeriesTrend) -> Slowest {
    Slowest {
        name: s.name.clone(),
        builds: s.builds,
        median_ms: s.duration.median,
        p90_ms: s.duration.p90,
        total_ms: s.total_duration_ms,
        version: s.versions.last().map(|v| v.version.clone()),
    }
}

/// The build times of `series` in the period, read again (a few series only).
fn duration_series(
    ledger: &Ledger,
    scope: Scope<'_>,
    series: &[SeriesTrend],
    regressions: &[Regression],
    since_ms: i64,
) -> Result<Vec<DurationSeries>> {
    let mut ids: Vec<i64> = series.iter().map(|s| s.series_id).collect();
    ids.sort_unstable();
    let mut found: Vec<DurationSeries> = Vec::new();
    ledger.scan_series_of(scope, Some(&ids), |rows| {
        let Some(s) = series.iter().find(|s| s.series_id == rows.series_id) else {
            return Ok(());
        };
        let mut version_changes = Vec::new();
        let mut last_version = None;
        let mut points = Vec::new();
        for p in rows.points.iter().filter(|p| p.finished_ms >= since_ms) {
            if last_version.is_some_and(|v| v != p.version) {
                version_changes.push((p.finished_ms, rows.versions[p.version].clone()));
            }
            last_version = Some(p.version);
            if let Some(d) = p.duration_ms {
                points.push((p.finished_ms, d));
            }
        }
        found.push(DurationSeries {
            name: s.name.clone(),
            points,
            version_changes,
            regressed: regressions.iter().any(|r| r.name == s.name),
        });
        Ok(())
    })?;
    // In the order of `series`: the most build time first.
    found.sort_by_key(|d| series.iter().position(|s| s.name == d.name));
    Ok(found)
}
