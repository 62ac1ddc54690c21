//! Per builder: how many builds each remote builder (and this machine) ran, their time,
//! what moving paths to and from it cost, and how fast it builds compared with this
//! machine. What `nix-ledger builders` prints and what reports and tuning read; and
//! for `tune` with builders, the remote builds of given names and how many builds each
//! builder ran at once.
//!
//! Only this ledger's own builds count (pulled rows of other machines are theirs to
//! judge): "relative to this machine" means the builds this machine ran itself.

use std::collections::{BTreeMap, HashMap};

use rusqlite::params;
use serde::Serialize;

use super::model::BuildStatus;
use super::Ledger;
use crate::Result;

/// What is known of one builder.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BuilderStats {
    /// The builder's store URI as Nix names it (the builders line's first field); `None`
    /// for this machine.
    pub machine: Option<String>,
    /// Successful builds with a known duration, and failed ones.
    pub builds: u64,
    pub failed: u64,
    /// The builds' own time on the builder: total and median.
    pub total_ms: i64,
    pub median_ms: Option<i64>,
    /// Copying inputs to it and outputs back, and opening connections: totals and the
    /// mean per build (what a remote build costs beyond building).
    pub upload_ms: i64,
    pub download_ms: i64,
    pub connect_ms: i64,
    pub overhead_per_build_ms: Option<i64>,
    /// This machine's median time over the builder's, for derivation names built both
    /// here and there: the median of those ratios (2.0: twice as fast). `None` for this
    /// machine and when no name was built in both places.
    pub speed_vs_local: Option<f64>,
    /// How many names that comparison rests on.
    pub compared_names: u64,
}

/// A successful build on a remote builder, as `tune` reads it for a derivation never
/// measured here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDuration {
    pub name: String,
    pub machine: String,
    /// Its own time on the builder.
    pub duration_ms: i64,
}

/// One successful build, as the statistics read it.
struct Row {
    machine: Option<String>,
    name: String,
    duration_ms: i64,
    transfer: [i64; 3],
}

impl Ledger {
    /// Whether this ledger's own builds finished since `since_ms` include a remote one
    /// (successful or failed). SQLite reads whichever is smaller, the remote builds
    /// (the partial index `builds_by_machine`: nothing on a machine without builders) or
    /// the period's builds, and stops at the first it finds.
    pub fn has_remote_builds_since(&self, since_ms: i64) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM builds
                                WHERE machine IS NOT NULL AND machine != ''
                                  AND origin IS NULL AND finished_ms >= ?1
                                  AND status IN (?2, ?3))",
                params![
                    since_ms,
                    BuildStatus::Built.as_str(),
                    BuildStatus::Failed.as_str()
                ],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Per-builder statistics of this ledger's builds finished since `since_ms`: this
    /// machine first, then each remote builder by its number of builds.
    pub fn builder_stats(&self, since_ms: i64) -> Result<Vec<BuilderStats>> {
        let rows: Vec<Row> = self
            .conn
            .prepare(
                "SELECT NULLIF(b.machine, ''), d.name, b.duration_ms, b.upload_ms,
                        b.download_ms, b.connect_ms
                 FROM builds b JOIN derivations d USING (drv_path)
                 WHERE b.origin IS NULL AND b.status = ?1 AND b.finished_ms >= ?2
                   AND b.duration_ms IS NOT NULL",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![BuildStatus::Built.as_str(), since_ms], |r| {
                    Ok(Row {
                        machine: r.get(0)?,
                        name: r.get(1)?,
                        duration_ms: r.get(2)?,
                        transfer: [
                            r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                            r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                            r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                        ],
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))?;
        let failed: Vec<(Option<String>, u64)> = self
            .conn
            .prepare(
                "SELECT NULLIF(machine, ''), count(*) FROM builds
                 WHERE origin IS NULL AND status = ?1 AND finished_ms >= ?2
                 GROUP BY NULLIF(machine, '')",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![BuildStatus::Failed.as_str(), since_ms], |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                })?
                .collect()
            })
            .map_err(|e| self.err(e))?;
        Ok(stats(rows, &failed))
    }
}

impl Ledger {
    /// The successful remote builds of the derivations named `names`, the newest
    /// `per_name` derivations of each: what a derivation only ever built remotely is
    /// known by.
    pub fn remote_durations_named(
        &self,
        names: &[&str],
        per_name: usize,
    ) -> Result<Vec<RemoteDuration>> {
        let mut out = Vec::new();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT d.name, b.machine, b.duration_ms
                 FROM (SELECT drv_path, name FROM derivations WHERE name = ?1
                         -- Only derivations built remotely count towards the limit.
                         AND EXISTS (SELECT 1 FROM builds x WHERE x.drv_path = derivations.drv_path
                                     AND x.origin IS NULL AND x.status = ?3
                                     AND x.duration_ms IS NOT NULL
                                     AND x.machine IS NOT NULL AND x.machine != '')
                       ORDER BY first_seen_ms DESC LIMIT ?2) d
                 JOIN builds b USING (drv_path)
                 WHERE b.origin IS NULL AND b.status = ?3 AND b.duration_ms IS NOT NULL
                   AND b.machine IS NOT NULL AND b.machine != ''
                 ORDER BY b.finished_ms DESC, b.id DESC",
            )
            .map_err(|e| self.err(e))?;
        for name in names {
            let rows = stmt
                .query_map(
                    params![name, per_name as i64, BuildStatus::Built.as_str()],
                    |r| {
                        Ok(RemoteDuration {
                            name: r.get(0)?,
                            machine: r.get(1)?,
                            duration_ms: r.get(2)?,
                        })
                    },
                )
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| self.err(e))?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Per remote builder: the most of this ledger's builds it ran at once (their spans
    /// on it overlapping), evidence of how many it takes without `tune` knowing its cores.
    pub fn builder_peak_concurrency(&self) -> Result<BTreeMap<String, u32>> {
        let spans: Vec<(String, i64, i64)> = self
            .conn
            .prepare(
                "SELECT machine, started_ms, finished_ms FROM builds
                 WHERE origin IS NULL AND machine IS NOT NULL AND machine != ''
                   AND started_ms IS NOT NULL AND finished_ms IS NOT NULL",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(|e| self.err(e))?;
        Ok(peak_concurrency(spans))
    }
}

/// Per machine, the most spans `(machine, start, end)` open at one moment; a span that
/// ends as another starts does not overlap it.
fn peak_concurrency(spans: Vec<(String, i64, i64)>) -> BTreeMap<String, u32> {
    let mut events: BTreeMap<String, Vec<(i64, i32)>> = BTreeMap::new();
    for (machine, start, end) in spans {
        let e = events.entry(machine).or_default();
        e.push((start, 1));
        e.push((end.max(start), -1));
    }
    events
        .into_iter()
        .map(|(machine, mut e)| {
            // Ends before starts at the same instant.
            e.sort();
            let (mut now, mut peak) = (0i32, 0i32);
            for (_, d) in e {
                now += d;
                peak = peak.max(now);
            }
            (machine, peak.max(0) as u32)
        })
        .collect()
}

/// The median of `values` (sorted in place); the lower middle of an even count.
fn median<T: Copy + PartialOrd>(values: &mut [T]) -> Option<T> {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values.get(values.len().saturating_sub(1) / 2).copied()
}

fn stats(rows: Vec<Row>, failed: &[(Option<String>, u64)]) -> Vec<BuilderStats> {
    // machine → name → durations
    let mut by_machine: BTreeMap<Option<String>, HashMap<String, Vec<i64>>> = BTreeMap::new();
    let mut transfer: HashMap<Option<String>, [i64; 3]> = HashMap::new();
    for row in rows {
        let t = transfer.entry(row.machine.clone()).or_default();
        for (sum, v) in t.iter_mut().zip(row.transfer) {
            *sum += v;
        }
        by_machine
            .entry(row.machine)
            .or_default()
            .entry(row.name)
            .or_default()
            .push(row.duration_ms);
    }
    for (machine, _) in failed {
        by_machine.entry(machine.clone()).or_default();
    }
    let mut local_medians: HashMap<String, i64> = HashMap::new();
    if let Some(local) = by_machine.get(&None) {
        for (name, durations) in local {
            let mut d = durations.clone();
            if let Some(m) = median(&mut d) {
                local_medians.insert(name.clone(), m);
            }
        }
    }
    let mut out: Vec<BuilderStats> = by_machine
        .into_iter()
        .map(|(machine, names)| {
            let mut all: Vec<i64> = names.values().flatten().copied().collect();
            let builds = all.len() as u64;
            let total_ms = all.iter().sum();
            let median_ms = median(&mut all);
            let mut ratios: Vec<f64> = Vec::new();
            if machine.is_some() {
                for (name, durations) in &names {
                    let mut d = durations.clone();
                    if let (Some(here), Some(there)) = (local_medians.get(name), median(&mut d)) {
                        if there > 0 {
                            ratios.push(*here as f64 / there as f64);
                        }
                    }
                }
            }
            let [upload_ms, download_ms, connect_ms] =
                transfer.get(&machine).copied().unwrap_or_default();
            BuilderStats {
                failed: failed
                    .iter()
                    .find(|(m, _)| *m == machine)
                    .map_or(0, |(_, n)| *n),
                overhead_per_build_ms: (machine.is_some() && builds > 0)
                    .then(|| (upload_ms + download_ms + connect_ms) / builds as i64),
                machine,
                builds,
                total_ms,
                median_ms,
                upload_ms,
                download_ms,
                connect_ms,
                compared_names: ratios.len() as u64,
                speed_vs_local: median(&mut ratios).map(|r| (r * 100.0).round() / 100.0),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (a.machine.is_some(), std::cmp::Reverse(a.builds), &a.machine).cmp(&(
            b.machine.is_some(),
            std::cmp::Reverse(b.builds),
            &b.machine,
        ))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(machine: Option<&str>, name: &str, ms: i64, up: i64) -> Row {
        Row {
            machine: machine.map(str::to_string),
            name: name.into(),
            duration_ms: ms,
            transfer: [up, 10, 5],
        }
    }

    #[test]
    fn peak_concurrency_counts_overlapping_spans_per_machine() {
        let span = |m: &str, a: i64, b: i64| (m.to_string(), a, b);
        let peaks = peak_concurrency(vec![
            span("ssh://a", 0, 10),
            span("ssh://a", 5, 15),
            span("ssh://a", 6, 7),
            span("ssh://a", 15, 20),
            span("ssh://b", 0, 10),
            span("ssh://b", 10, 20),
        ]);
        assert_eq!(peaks.get("ssh://a"), Some(&3));
        assert_eq!(
            peaks.get("ssh://b"),
            Some(&1),
            "back to back is one at a time"
        );
    }

    #[test]
    fn remote_durations_and_concurrency_come_from_the_ledger() {
        use crate::ledger::record::{BuildRecord, Source};
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let drv =
            |c: char, name: &str| format!("/nix/store/{}-{name}.drv", c.to_string().repeat(32));
        let rec = |c: char, name: &str, machine: Option<&str>, start: i64, ms: i64| {
            let mut r = BuildRecord::new(
                &drv(c, name),
                Source::Wrapper,
                BuildStatus::Built,
                start + ms,
            );
            r.started_ms = Some(start);
            r.machine = machine.map(str::to_string);
            r
        };
        let records = [
            rec('a', "gcc-13", Some("ssh://b"), 0, 4_000),
            rec('b', "gcc-13", Some("ssh://b"), 1_000, 5_000),
            rec('c', "gcc-13", None, 0, 9_000),
            rec('d', "zlib-1", Some("ssh://c"), 0, 500),
        ];
        ledger.record_session_builds(&records).unwrap();
        let mut got = ledger
            .remote_durations_named(&["gcc-13", "nothing"], 10)
            .unwrap();
        got.sort_by_key(|d| d.duration_ms);
        let ms: Vec<(&str, i64)> = got
            .iter()
            .map(|d| (d.machine.as_str(), d.duration_ms))
            .collect();
        assert_eq!(
            ms,
            [("ssh://b", 4_000), ("ssh://b", 5_000)],
            "remote builds only"
        );
        let peaks = ledger.builder_peak_concurrency().unwrap();
        assert_eq!(peaks.get("ssh://b"), Some(&2));
        assert_eq!(peaks.get("ssh://c"), Some(&1));
    }

    #[test]
    fn a_builder_is_compared_with_this_machine_on_the_names_both_built() {
        let b = Some("ssh-ng://fast");
        let rows = vec![
            row(None, "gcc", 4_000, 0),
            row(None, "gcc", 6_000, 0),
            row(None, "zlib", 1_000, 0),
            row(None, "only-here", 9_000, 0),
            row(b, "gcc", 2_000, 100),
            row(b, "zlib", 250, 100),
            row(b, "only-there", 7_000, 100),
        ];
        let out = stats(rows, &[(b.map(str::to_string), 2)]);
        assert_eq!(out.len(), 2);
        let (local, remote) = (&out[0], &out[1]);
        assert_eq!(local.machine, None);
        assert_eq!(
            (local.builds, local.total_ms, local.median_ms),
            (4, 20_000, Some(4_000))
        );
        assert_eq!(local.speed_vs_local, None);
        assert_eq!(remote.machine.as_deref(), Some("ssh-ng://fast"));
        assert_eq!(
            (remote.builds, remote.failed, remote.median_ms),
            (3, 2, Some(2_000))
        );
        // gcc: median here 4,000 (lower middle) / 2,000 = 2; zlib: 1,000 / 250 = 4.
        assert_eq!(
            (remote.speed_vs_local, remote.compared_names),
            (Some(2.0), 2)
        );
        assert_eq!(
            (remote.upload_ms, remote.download_ms, remote.connect_ms),
            (300, 30, 15)
        );
        assert_eq!(remote.overhead_per_build_ms, Some(115));
    }

    #[test]
    fn a_period_has_remote_builds_when_one_of_its_builds_ran_on_a_builder() {
        use crate::ledger::record::{BuildRecord, Source};
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let build = |c: char, machine: Option<&str>, status, finished| {
            let drv = format!("/nix/store/{}-x.drv", c.to_string().repeat(32));
            let mut rec = BuildRecord::new(&drv, Source::Wrapper, status, finished);
            rec.started_ms = Some(finished - 10);
            rec.machine = machine.map(str::to_string);
            rec
        };
        ledger
            .record_session_builds(&[
                build('a', None, BuildStatus::Built, 5_000),
                build('b', Some(""), BuildStatus::Built, 5_000),
                build('c', Some("ssh-ng://far"), BuildStatus::Failed, 2_000),
                build('d', Some("ssh-ng://far"), BuildStatus::Substituted, 4_000),
            ])
            .unwrap();
        assert!(ledger.has_remote_builds_since(0).unwrap());
        // A remote substitution is no remote build; local ones and '' are not remote.
        assert!(!ledger.has_remote_builds_since(3_000).unwrap());
        assert_eq!(ledger.builder_stats(3_000).unwrap().len(), 1);
    }
}
