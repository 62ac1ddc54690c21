//! `nix-ledger rebuilds [--since DURATION]`: the wasted rebuilds of a period. A recorded
//! build is a rebuild when the ledger has an earlier build of a different .drv of the same
//! name; it is listed when it was a no-op (its outputs equal the earlier build's) or
//! avoidable (every root cause between the two .drv files is an avoidable source change),
//! with the time it took.

use serde::Serialize;

use super::diff::Loader;
use super::verdict::{self, VerdictKind};
use super::{previous_build, report, Context};
use crate::ledger::{now_ms, Ledger};
use crate::timefmt::rfc3339_ms;
use crate::{Error, Result};

/// One wasted rebuild.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildEntry {
    pub build_id: i64,
    pub drv_path: String,
    pub name: String,
    pub previous_drv: String,
    pub finished_at: String,
    pub duration_ms: Option<i64>,
    pub kind: VerdictKind,
    /// Avoidable: the files that caused it; no-op: what changed in vain.
    pub detail: String,
}

/// The answer of `rebuilds`.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildsReport {
    pub since: String,
    pub entries: Vec<RebuildEntry>,
    pub avoidable: usize,
    pub no_op: usize,
    /// The summed recorded durations of the listed rebuilds.
    pub wasted_ms: i64,
    /// Listed rebuilds without a recorded duration (not in `wasted_ms`).
    pub unknown_durations: usize,
}

/// Parses `7d`, `24h`, `90m`, `2 weeks`… (jiff's friendly spans; a day is 24 hours)
/// into milliseconds.
pub fn parse_duration(input: &str) -> Result<i64> {
    let bad = || Error::BadDuration {
        input: input.to_string(),
    };
    let span: jiff::Span = input.trim().parse().map_err(|_| bad())?;
    let ms = span
        .total(jiff::SpanTotal::from(jiff::Unit::Millisecond).days_are_24_hours())
        .map_err(|_| bad())?;
    if !ms.is_finite() || ms < 0.0 {
        return Err(bad());
    }
    Ok(ms as i64)
}

/// The avoidable and no-op rebuilds recorded since `since_ms`, oldest first.
pub fn rebuilds(ledger: &Ledger, since_ms: i64) -> Result<RebuildsReport> {
    let candidates: Vec<(i64, String, String, i64, Option<i64>)> = {
        let mut stmt = ledger
            .conn()
            .prepare(
                "SELECT b.id, b.drv_path, d.name, b.finished_ms, b.duration_ms
                 FROM builds b JOIN derivations d USING (drv_path)
                 WHERE b.status = 'built' AND b.finished_ms >= ?1
                 ORDER BY b.finished_ms, b.id",
            )
            .map_err(|e| ledger.err(e))?;
        let rows = stmt
            .query_map([since_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(|e| ledger.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| ledger.err(e))?
    };
    let context = Context::new(ledger);
    let source = context.source();
    let mut loader = Loader::new(&source);
    let mut entries = Vec::new();
    for (id, drv, name, finished, duration) in candidates {
        let Some((old, at)) = previous_build(ledger, &name, &drv, Some(finished))? else {
            continue;
        };
        let conn = ledger.conn();
        let new_outputs = verdict::outputs_of_build(conn, id).map_err(|e| ledger.err(e))?;
        let old_outputs = verdict::latest_outputs(conn, &old).map_err(|e| ledger.err(e))?;
        let identical = verdict::outputs_identical(conn, &new_outputs, &old_outputs)
            .map_err(|e| ledger.err(e))?;
        // Avoidable first, as `why` judges: it comes with advice on what to filter.
        let mut avoidable_files: Option<Vec<String>> = None;
        if loader.get(&drv)?.is_some() && loader.get(&old)?.is_some() {
            let why = report(ledger, &mut loader, &drv, &old, name.clone(), Some(at))?;
            let all_avoidable = !why.root_causes.is_empty()
                && why
                    .root_causes
                    .iter()
                    .all(|c| c.verdict.kind == VerdictKind::Avoidable);
            if all_avoidable {
                avoidable_files = Some(
                    why.root_causes
                        .iter()
                        .map(|c| format!("{}: {}", c.name, c.verdict.files.join(", ")))
                        .collect(),
                );
            }
        }
        let (kind, detail) = match avoidable_files {
            Some(files) => (VerdictKind::Avoidable, files.join("; ")),
            None if identical == Some(true) => (
                VerdictKind::NoOp,
                String::from("outputs identical to the previous build's"),
            ),
            None => continue,
        };
        entries.push(RebuildEntry {
            build_id: id,
            drv_path: drv,
            name,
            previous_drv: old,
            finished_at: rfc3339_ms(finished),
            duration_ms: duration,
            kind,
            detail,
        });
    }
    Ok(RebuildsReport {
        since: rfc3339_ms(since_ms),
        avoidable: entries
            .iter()
            .filter(|e| e.kind == VerdictKind::Avoidable)
            .count(),
        no_op: entries
            .iter()
            .filter(|e| e.kind == VerdictKind::NoOp)
            .count(),
        wasted_ms: entries.iter().filter_map(|e| e.duration_ms).sum(),
        unknown_durations: entries.iter().filter(|e| e.duration_ms.is_none()).count(),
        entries,
    })
}

/// `since` as a start time: now minus the duration, or everything when `None`.
pub fn since_ms(since: Option<&str>) -> Result<i64> {
    match since {
        Some(s) => Ok(now_ms() - parse_duration(s)?),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn friendly_durations_parse_and_bad_ones_name_the_input() {
        assert_eq!(parse_duration("7d").unwrap(), 7 * 86_400_000);
        assert_eq!(parse_duration("24h").unwrap(), 86_400_000);
        assert_eq!(parse_duration("90m").unwrap(), 5_400_000);
        assert_eq!(parse_duration("2 weeks").unwrap(), 14 * 86_400_000);
        let err = parse_duration("soon").unwrap_err().to_string();
        assert!(err.starts_with("soon: not a duration"), "{err}");
        assert!(parse_duration("-3h").is_err());
    }
}
