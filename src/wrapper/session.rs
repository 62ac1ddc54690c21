//! What the wrapper saw, as the ledger's records: each finished build and substitution
//! of a session becomes a [`BuildRecord`] (merged with the hook's record of the same
//! build by the ledger), written through the ledger's session methods.

use super::state::FinishedBuild;
use crate::ledger::model::TimingSource;
use crate::ledger::record::{BuildRecord, BuildStatus, Source};
use crate::ledger::sessions::{Restatement, SessionClosing};
use crate::ledger::tune::Contention;
use crate::ledger::Ledger;
use crate::Result;

/// A substitution whose deriver is known.
#[derive(Debug, Clone)]
pub struct SubstitutedDrv {
    pub drv_path: String,
    pub started_ms: i64,
    pub finished_ms: i64,
}

/// The record of one build the wrapper watched.
pub(crate) fn build_record(session_id: i64, b: &FinishedBuild) -> BuildRecord {
    let mut rec = BuildRecord::new(&b.drv_path, Source::Wrapper, b.status, b.finished_ms);
    rec.session_id = Some(session_id);
    rec.started_ms = Some(b.started_ms);
    rec.timing_source = Some(TimingSource::Wrapper);
    rec.machine = b.machine.clone();
    if let Some(r) = &b.remote {
        rec.upload_ms = Some(r.upload_ms);
        rec.download_ms = Some(r.download_ms);
        rec.connect_ms = r.connect_ms;
    }
    rec.log_lines = Some(b.log_lines as i64);
    rec.log_tail = log_tail(b);
    if let Some(u) = b.usage {
        // Processes seen only after they exited (zombies) have no memory left: 0 is
        // "not seen", never a build's peak.
        rec.peak_rss_bytes = (u.peak_rss_bytes > 0).then_some(u.peak_rss_bytes as i64);
        rec.cpu_user_ms = Some(u.cpu_user_ms as i64);
        rec.cpu_system_ms = Some(u.cpu_system_ms as i64);
        // Unknown (None) rather than "alone" when no round saw it use CPU.
        rec.contention = (u.cpu_window_ms > 0).then_some(Contention {
            cpu_window_ms: u.cpu_window_ms as i64,
            others_cpu_ms: u.others_cpu_ms as i64,
        });
    }
    rec
}

/// The record of one substitution.
fn substitution_record(session_id: i64, s: &SubstitutedDrv) -> BuildRecord {
    let mut rec = BuildRecord::new(
        &s.drv_path,
        Source::Wrapper,
        BuildStatus::Substituted,
        s.finished_ms,
    );
    rec.session_id = Some(session_id);
    rec.started_ms = Some(s.started_ms);
    rec.timing_source = Some(TimingSource::Wrapper);
    rec
}

fn records(id: i64, builds: &[FinishedBuild], substituted: &[SubstitutedDrv]) -> Vec<BuildRecord> {
    builds
        .iter()
        .map(|b| build_record(id, b))
        .chain(substituted.iter().map(|s| substitution_record(id, s)))
        .collect()
}

/// Records builds and substitutions of session `id` in one transaction (each merged with
/// the hook's record of it, if ingested); returns each build's row id, in order.
pub fn record(
    ledger: &mut Ledger,
    id: i64,
    builds: &[FinishedBuild],
    substituted: &[SubstitutedDrv],
) -> Result<Vec<i64>> {
    let mut rows = ledger.record_session_builds(&records(id, builds, substituted))?;
    rows.truncate(builds.len());
    Ok(rows)
}

/// Ends session `id` in one transaction: rewrites the outcome of builds recorded before
/// that the stream later said otherwise of (`(row, build)`, e.g. an error naming it),
/// records the builds and substitutions not recorded yet, and closes the session's row.
pub fn finish(
    ledger: &mut Ledger,
    id: i64,
    restated: &[(i64, &FinishedBuild)],
    builds: &[FinishedBuild],
    substituted: &[SubstitutedDrv],
    closing: &SessionClosing,
) -> Result<()> {
    let restated: Vec<Restatement> = restated
        .iter()
        .map(|(row, b)| Restatement {
            build_id: *row,
            status: b.status,
            log_tail: log_tail(b),
        })
        .collect();
    ledger.finish_session(id, &restated, &records(id, builds, substituted), closing)
}

/// What is kept of a build's log: its tail, for failed builds only.
fn log_tail(b: &FinishedBuild) -> Option<String> {
    if b.status != BuildStatus::Failed {
        return None;
    }
    let mut tail = b.tail.joined();
    if b.interrupted {
        tail.push_str("(interrupted)\n");
    }
    Some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::model::{SessionKind, SessionStatus};
    use crate::ledger::sessions::SessionOpening;
    use crate::wrapper::state::Tail;

    fn build(drv: &str, start: i64, stop: i64, status: BuildStatus) -> FinishedBuild {
        let mut tail = Tail::default();
        tail.push("oops");
        FinishedBuild {
            drv_path: drv.into(),
            name: "t-a".into(),
            machine: None,
            remote: None,
            started_ms: start,
            finished_ms: stop,
            log_lines: 1,
            tail,
            status,
            pending: false,
            interrupted: false,
            usage: None,
        }
    }

    /// A new ledger (kept alive by the returned directory) with one open session.
    fn ledger_with_session() -> (tempfile::TempDir, Ledger, i64) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let id = ledger
            .open_session(&SessionOpening {
                kind: SessionKind::Build,
                command: vec!["nix".into(), "build".into()],
                cwd: None,
                started_ms: 0,
                hostname: None,
                pid: std::process::id(),
            })
            .unwrap();
        (dir, ledger, id)
    }

    #[test]
    fn a_session_records_its_builds_and_history_gives_the_expected_time() {
        let (_dir, mut ledger, id) = ledger_with_session();
        let a = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-t-a.drv";
        let b = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-t-a.drv";
        let builds = [
            build(a, 0, 1_000, BuildStatus::Built),
            build(b, 0, 3_000, BuildStatus::Built),
            build(b, 5_000, 6_000, BuildStatus::Failed),
        ];
        let closing = SessionClosing {
            built: 2,
            failed: 1,
            ..SessionClosing::new(7_000, SessionStatus::Failed, 1)
        };
        finish(&mut ledger, id, &[], &builds, &[], &closing).unwrap();
        let expected_ms = |ledger: &Ledger, name| ledger.expected_duration_ms(name).unwrap();
        assert_eq!(expected_ms(&ledger, "t-a"), Some(2_000));
        assert_eq!(expected_ms(&ledger, "never-built"), None);
        let (status, tail): (String, String) = ledger
            .conn()
            .query_row(
                "SELECT s.status, b.log_tail FROM sessions s JOIN builds b ON b.session_id = s.id WHERE b.status = 'failed'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((status.as_str(), tail.as_str()), ("failed", "oops\n"));
    }

    #[test]
    fn a_recorded_build_the_stream_later_calls_failed_is_restated_in_place() {
        let (_dir, mut ledger, id) = ledger_with_session();
        let a = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-t-a.drv";
        let mut b = build(a, 0, 1_000, BuildStatus::Built);
        let rows = record(&mut ledger, id, std::slice::from_ref(&b), &[]).unwrap();
        b.status = BuildStatus::Failed;
        let stored = |ledger: &Ledger| -> Vec<(String, Option<String>)> {
            ledger
                .conn()
                .prepare("SELECT status, log_tail FROM builds")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        // One transaction: a session row that cannot be written takes the rest back.
        let closing = SessionClosing::new(0, SessionStatus::Failed, 1);
        let missing_session = id + 1;
        assert!(finish(
            &mut ledger,
            missing_session,
            &[(rows[0], &b)],
            &[],
            &[],
            &closing
        )
        .is_err());
        assert_eq!(stored(&ledger), vec![("built".to_string(), None)]);
        finish(&mut ledger, id, &[(rows[0], &b)], &[], &[], &closing).unwrap();
        assert_eq!(
            stored(&ledger),
            vec![("failed".to_string(), Some("oops\n".to_string()))]
        );
    }
}
