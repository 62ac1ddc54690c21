//! Reports over the ledger: `history`, `show`, `builders`, read-only `query`, and
//! `report`, the report of everything over a period. Each report is a serialisable value
//! (what `--json` prints) with renderings for people.
//!
//! - [`full`]: `report`'s one computation; [`sessions`]: its sessions over time;
//!   [`retention`]: its garbage collections and the retention policy's advice;
//!   [`advice`]: the tuner's advice.
//! - [`text`], [`markdown`], [`html`] (with [`charts`]): its renderings.
//! - [`query`]: the user's SQL, streamed.

pub mod advice;
pub mod charts;
pub mod full;
pub mod html;
pub mod markdown;
pub mod query;
pub mod retention;
pub mod sessions;
pub mod text;

use crate::ledger::Ledger;
use crate::size::human_bytes;
use crate::time::human_duration_ms;
use crate::Result;

pub use crate::ledger::builders::BuilderStats;
pub use crate::ledger::queries::{BuildEntry, HistoryFilter, Output, ShowReport, StorePathEntry};
use crate::nix::machines::label;

/// Where a build ran, as people read it: `on <builder>`, `by <fleet machine>`, both, or
/// nothing for this machine's own local builds.
fn whereabouts(b: &BuildEntry) -> String {
    let mut text = String::new();
    if let Some(m) = &b.machine {
        text.push_str(&format!("  on {}", label(m)));
    }
    if let Some(by) = &b.recorded_by {
        text.push_str(&format!("  (recorded by {by})"));
    }
    text
}

/// Recent builds, newest first.
pub fn history(ledger: &Ledger, filter: &HistoryFilter) -> Result<Vec<BuildEntry>> {
    ledger.history(filter)
}

/// Plain-text rendering of a history: one build per line. `name` is the filter the
/// builds were chosen by, if any.
pub fn render_history(builds: &[BuildEntry], name: Option<&str>) -> String {
    let mut out = String::new();
    if builds.is_empty() {
        match name {
            Some(name) => out.push_str(&format!(
                "no builds recorded of a name containing {name:?}\n"
            )),
            None => out.push_str("no builds recorded yet\n"),
        }
        return out;
    }
    out.push_str(&format!(
        "{:<20}  {:>8}  {:<11}  {:<7}  {}\n",
        "FINISHED (UTC)", "DURATION", "STATUS", "SOURCE", "NAME"
    ));
    for b in builds {
        let finished = b
            .finished_at
            .get(..19)
            .unwrap_or(&b.finished_at)
            .replace('T', " ");
        let duration = b
            .duration_ms
            .map(human_duration_ms)
            .unwrap_or_else(|| "?".into());
        out.push_str(&format!(
            "{finished:<20}  {duration:>8}  {:<11}  {:<7}  {}{}\n",
            b.status,
            b.source,
            b.name,
            whereabouts(b)
        ));
    }
    out
}

/// Everything known of one .drv or output path.
pub fn show(ledger: &Ledger, path: &str) -> Result<ShowReport> {
    ledger.show(path)
}

/// Plain-text rendering of [`show`].
pub fn render_show(report: &ShowReport) -> String {
    let mut out = format!(
        "{}\n  derivation  {}\n  system      {}\n  first seen  {}\n",
        report.name,
        report.drv_path,
        report.system.as_deref().unwrap_or("?"),
        report.first_seen_at
    );
    if let Some(latest) = report.builds.first() {
        out.push_str("  outputs\n");
        for o in &latest.outputs {
            let size = report
                .store_paths
                .iter()
                .find(|s| s.path == o.path)
                .and_then(|s| s.nar_size)
                .map(|n| format!("  ({})", human_bytes(n)))
                .unwrap_or_default();
            out.push_str(&format!("    {:<8} {}{size}\n", o.name, o.path));
        }
    }
    out.push_str(&format!("  builds ({})\n", report.builds.len()));
    for b in &report.builds {
        let duration = b
            .duration_ms
            .map(human_duration_ms)
            .unwrap_or_else(|| "?".into());
        let rss = b
            .peak_rss_bytes
            .map(|n| format!("  peak {}", human_bytes(n)))
            .unwrap_or_default();
        let copies = match (b.upload_ms, b.download_ms) {
            (Some(up), Some(down)) => format!("  copies {}", human_duration_ms(up + down)),
            _ => String::new(),
        };
        out.push_str(&format!(
            "    {}  {:>8}  {:<11} {}{rss}{copies}{}\n",
            b.finished_at,
            duration,
            b.status,
            b.source,
            whereabouts(b)
        ));
    }
    if !report.gc_deletions.is_empty() {
        out.push_str(
            "  garbage collections
",
        );
        for d in &report.gc_deletions {
            let cost = d
                .unit_cost_ms
                .map(|ms| format!("{} ({})", human_duration_ms(ms), d.cost_basis))
                .unwrap_or_else(|| "unknown".into());
            out.push_str(&format!(
                "    run #{} {} {}  cost to get back {cost}\n      {}\n",
                d.run_id,
                d.at.as_deref().unwrap_or("?"),
                d.state,
                d.path
            ));
        }
    }
    out
}

/// Per-builder numbers of this ledger's builds (see [`BuilderStats`]).
pub fn builders(ledger: &Ledger, since_ms: i64) -> Result<BuildersReport> {
    Ok(BuildersReport {
        machine: crate::machine::this_machine(),
        builders: ledger.builder_stats(since_ms)?,
    })
}

/// What `nix-ledger builders` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildersReport {
    /// This machine's fleet name (the builder whose `machine` is null).
    pub machine: String,
    pub builders: Vec<BuilderStats>,
}

/// The cells of one builder's line: name, builds, failed, total, median, overhead per
/// build, speed against this machine. Shared by `builders` and the report.
pub fn builder_cells(report: &BuildersReport, b: &BuilderStats) -> [String; 7] {
    let name = match &b.machine {
        Some(m) => label(m).to_string(),
        None => format!("{} (here)", report.machine),
    };
    let ms = |v: Option<i64>| v.map(human_duration_ms).unwrap_or_else(|| "-".into());
    let speed = match (&b.machine, b.speed_vs_local) {
        (None, _) => "1.00x".to_string(),
        (Some(_), Some(s)) => format!("{s:.2}x"),
        (Some(_), None) => "?".to_string(),
    };
    [
        name,
        b.builds.to_string(),
        b.failed.to_string(),
        human_duration_ms(b.total_ms),
        ms(b.median_ms),
        ms(b.overhead_per_build_ms),
        speed,
    ]
}

/// Plain-text rendering of [`builders`]: one line per builder.
pub fn render_builders(report: &BuildersReport) -> String {
    let mut out = format!(
        "{:<24}  {:>6}  {:>6}  {:>9}  {:>8}  {:>9}  {:>7}\n",
        "BUILDER", "BUILDS", "FAILED", "TOTAL", "MEDIAN", "OVERHEAD", "SPEED"
    );
    for b in &report.builders {
        let [name, builds, failed, total, median, overhead, speed] = builder_cells(report, b);
        out.push_str(&format!(
            "{name:<24}  {builds:>6}  {failed:>6}  {total:>9}  {median:>8}  {overhead:>9}  {speed:>7}\n",
        ));
    }
    if report.builders.is_empty() {
        out.push_str("no builds recorded yet\n");
    }
    out
}
