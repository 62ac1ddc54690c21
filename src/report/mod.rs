//! Reports over the ledger: `history`, `show`, read-only `query`, and `report`, the
//! report of everything over a period. Each report is a serialisable value (what
//! `--json` prints) with renderings for people.
//!
//! - [`full`]: `report`'s one computation; [`sessions`]: its sessions over time.
//! - [`text`], [`markdown`], [`html`] (with [`charts`]): its renderings.
//! - [`query`]: the user's SQL, streamed.

pub mod charts;
pub mod full;
pub mod html;
pub mod markdown;
pub mod query;
pub mod sessions;
pub mod text;

use crate::ledger::Ledger;
use crate::size::human_bytes;
use crate::time::human_duration_ms;
use crate::Result;

pub use crate::ledger::queries::{BuildEntry, HistoryFilter, Output, ShowReport, StorePathEntry};

/// Recent builds, newest first.
pub fn history(ledger: &Ledger, filter: &HistoryFilter) -> Result<Vec<BuildEntry>> {
    ledger.history(filter)
}

/// Plain-text rendering of a history: one build per line.
pub fn render_history(builds: &[BuildEntry]) -> String {
    let mut out = String::new();
    if builds.is_empty() {
        out.push_str("no builds recorded yet\n");
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
            "{finished:<20}  {duration:>8}  {:<11}  {:<7}  {}\n",
            b.status, b.source, b.name
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
        out.push_str(&format!(
            "    {}  {:>8}  {:<11} {}{rss}\n",
            b.finished_at, duration, b.status, b.source
        ));
    }
    out
}
