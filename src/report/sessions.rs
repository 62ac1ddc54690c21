//! Sessions over time, for the report: wall and evaluation time, built against
//! substituted (the cache hit ratio), bytes downloaded, and the memory builds used
//! against the machine's RAM; per session, per day and over the period.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ledger::model::Scope;
use crate::ledger::trends::{BuildMemory, SessionRow};
use crate::ledger::Ledger;
use crate::time::rfc3339_ms;
use crate::trends::stats::{quantile_sorted, sorted};
use crate::Result;

/// Sessions listed one by one (the latest), for the evaluation-time chart.
const LISTED: usize = 60;
const DAY_MS: i64 = 86_400_000;

/// The median, p90 and sum of a set of durations in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    pub count: usize,
    pub median: Option<f64>,
    pub p90: Option<f64>,
    pub total: i64,
}

impl Spread {
    fn of(values: impl Iterator<Item = i64>) -> Spread {
        let values: Vec<i64> = values.collect();
        let as_f64: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        let s = sorted(&as_f64);
        Spread {
            count: values.len(),
            median: quantile_sorted(&s, 0.5),
            p90: quantile_sorted(&s, 0.9),
            total: values.iter().sum(),
        }
    }
}

/// Sessions of the period.
#[derive(Debug, Clone, Serialize)]
pub struct Sessions {
    pub count: usize,
    /// Sessions that failed or were interrupted.
    pub failed: usize,
    pub wall_ms: Spread,
    /// Over the sessions whose evaluation time was recorded.
    pub eval_ms: Spread,
    /// Of the evaluation time, in import-from-derivation builds.
    pub ifd_ms: i64,
    pub built: i64,
    pub substituted: i64,
    /// substituted ÷ (built + substituted) of what the sessions needed (paths already
    /// valid are not counted: Nix does not report them); `None` with nothing realised.
    pub cache_hit_ratio: Option<f64>,
    pub downloaded_bytes: i64,
    /// The session whose builds used the most memory at once.
    pub peak_memory: Option<PeakMemory>,
    pub by_day: Vec<Day>,
    /// The latest sessions, oldest first.
    pub latest: Vec<SessionPoint>,
}

/// The most memory a session's builds used at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PeakMemory {
    pub session_id: i64,
    /// The sum of the peaks of builds that ran at the same time: an upper bound of what
    /// they used together (each build's peak is measured, not when it happened).
    pub bytes: i64,
    pub host_memory_bytes: Option<i64>,
    /// `bytes` ÷ the machine's RAM.
    pub share_of_ram: Option<f64>,
}

/// The sessions of one day (UTC).
#[derive(Debug, Clone, Serialize)]
pub struct Day {
    pub day: String,
    pub sessions: usize,
    pub wall_ms: i64,
    pub eval_ms_median: Option<f64>,
    pub built: i64,
    pub substituted: i64,
    pub cache_hit_ratio: Option<f64>,
    pub downloaded_bytes: i64,
}

/// One session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionPoint {
    pub id: i64,
    pub started_at: String,
    pub status: String,
    pub wall_ms: i64,
    pub eval_ms: Option<i64>,
    pub ifd_ms: Option<i64>,
    pub built: i64,
    pub substituted: i64,
    pub cache_hit_ratio: Option<f64>,
    pub downloaded_bytes: i64,
    pub peak_memory_bytes: Option<i64>,
    pub host_memory_bytes: Option<i64>,
}

fn hit_ratio(built: i64, substituted: i64) -> Option<f64> {
    let needed = built + substituted;
    (needed > 0).then(|| substituted as f64 / needed as f64)
}

/// The sessions that started at or after `since_ms`.
pub fn sessions(ledger: &Ledger, scope: Scope<'_>, since_ms: i64) -> Result<Sessions> {
    let rows = ledger.sessions_since(scope, since_ms)?;
    let memory = match (
        rows.iter().map(|s| s.id).min(),
        rows.iter().map(|s| s.id).max(),
    ) {
        (Some(first), Some(last)) => concurrent_peaks(&ledger.session_build_memory(first, last)?),
        _ => BTreeMap::new(),
    };
    let wall = |s: &SessionRow| (s.finished_ms - s.started_ms).max(0);
    let built: i64 = rows.iter().map(|s| s.built).sum();
    let substituted: i64 = rows.iter().map(|s| s.substituted).sum();
    let peak_memory = rows
        .iter()
        .filter_map(|s| memory.get(&s.id).map(|&bytes| (s, bytes)))
        .max_by_key(|(s, bytes)| (*bytes, s.id))
        .map(|(s, bytes)| PeakMemory {
            session_id: s.id,
            bytes,
            host_memory_bytes: s.host_memory_bytes,
            share_of_ram: s
                .host_memory_bytes
                .filter(|&ram| ram > 0)
                .map(|ram| bytes as f64 / ram as f64),
        });
    let mut days: BTreeMap<i64, Vec<&SessionRow>> = BTreeMap::new();
    for s in &rows {
        days.entry(s.started_ms.div_euclid(DAY_MS))
            .or_default()
            .push(s);
    }
    let by_day = days
        .into_iter()
        .map(|(day, list)| {
            let built: i64 = list.iter().map(|s| s.built).sum();
            let substituted: i64 = list.iter().map(|s| s.substituted).sum();
            Day {
                day: rfc3339_ms(day * DAY_MS)[..10].to_string(),
                sessions: list.len(),
                wall_ms: list.iter().map(|s| wall(s)).sum(),
                eval_ms_median: Spread::of(list.iter().filter_map(|s| s.eval_ms)).median,
                built,
                substituted,
                cache_hit_ratio: hit_ratio(built, substituted),
                downloaded_bytes: list.iter().filter_map(|s| s.downloaded_bytes).sum(),
            }
        })
        .collect();
    let latest = rows[rows.len().saturating_sub(LISTED)..]
        .iter()
        .map(|s| SessionPoint {
            id: s.id,
            started_at: rfc3339_ms(s.started_ms),
            status: s.status.clone(),
            wall_ms: wall(s),
            eval_ms: s.eval_ms,
            ifd_ms: s.ifd_ms,
            built: s.built,
            substituted: s.substituted,
            cache_hit_ratio: hit_ratio(s.built, s.substituted),
            downloaded_bytes: s.downloaded_bytes.unwrap_or(0),
            peak_memory_bytes: memory.get(&s.id).copied(),
            host_memory_bytes: s.host_memory_bytes,
        })
        .collect();
    Ok(Sessions {
        count: rows.len(),
        failed: rows.iter().filter(|s| s.status != "succeeded").count(),
        wall_ms: Spread::of(rows.iter().map(wall)),
        eval_ms: Spread::of(rows.iter().filter_map(|s| s.eval_ms)),
        ifd_ms: rows.iter().filter_map(|s| s.ifd_ms).sum(),
        built,
        substituted,
        cache_hit_ratio: hit_ratio(built, substituted),
        downloaded_bytes: rows.iter().filter_map(|s| s.downloaded_bytes).sum(),
        peak_memory,
        by_day,
        latest,
    })
}

/// Per session, the most memory its builds held at once: a sweep over their start and
/// end times, adding each build's peak while it runs.
fn concurrent_peaks(builds: &[BuildMemory]) -> BTreeMap<i64, i64> {
    let mut events: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for b in builds {
        let list = events.entry(b.session_id).or_default();
        // An end sorts before a start at the same instant: one build follows the other.
        list.push((b.started_ms, b.peak_rss_bytes));
        list.push((b.finished_ms.max(b.started_ms), -b.peak_rss_bytes));
    }
    events
        .into_iter()
        .map(|(session, mut list)| {
            list.sort_unstable();
            let (mut now, mut peak) = (0i64, 0i64);
            for (_, delta) in list {
                now += delta;
                peak = peak.max(now);
            }
            (session, peak)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_at_the_same_time_add_up_and_one_after_another_do_not() {
        let b = |session_id, started_ms, finished_ms, peak_rss_bytes| BuildMemory {
            session_id,
            started_ms,
            finished_ms,
            peak_rss_bytes,
        };
        let peaks = concurrent_peaks(&[
            b(1, 0, 100, 10),
            b(1, 50, 150, 20),
            b(1, 150, 200, 25),
            b(2, 0, 10, 5),
            b(2, 10, 20, 5),
        ]);
        assert_eq!(peaks[&1], 30);
        assert_eq!(peaks[&2], 5);
    }
}
