//! Recording a session: the facts of this machine and Nix gathered beside the build, the
//! early record (the builds so far, written on a thread of its own as soon as Nix goes
//! quiet, while it tears down), and the end: the builds not recorded yet, the outcome of
//! those the log restated, and the session's row, in one transaction.

use super::evaltime::EvalTiming;
use super::progress::Progress;
use super::session::{self, SubstitutedDrv};
use super::state::State;
use super::state::{self, Substitution};
use super::summary::Summary;
use super::{ArgsInfo, Outcome};
use crate::ledger::model::{BuildStatus, SessionStatus};
use crate::ledger::sessions::SessionClosing;
use crate::ledger::{ingest, Ledger};
use crate::nix::config;
use crate::paths::Layout;
use crate::store::db::StoreDb;
use crate::{Error, Result};

/// Facts about this machine and Nix, gathered while Nix builds.
#[derive(Debug, Default)]
pub(super) struct Environment {
    nix: config::NixSettings,
    host_cores: Option<i64>,
    host_memory_bytes: Option<i64>,
}

pub(super) fn gather_environment(state_dir: &std::path::Path) -> Environment {
    let mut env = Environment {
        nix: config::settings(state_dir),
        ..Environment::default()
    };
    if let Ok(mut sys) = sysinfo::System::new() {
        sys.refresh_memory_specifics(sysinfo::MemoryRefreshKind::nothing().with_ram());
        sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        env.host_cores = Some(sys.cpus().len() as i64).filter(|n| *n > 0);
        env.host_memory_bytes = Some(sys.total_memory() as i64).filter(|n| *n > 0);
    }
    env
}

/// What was recorded before Nix exited (see [`Supervisor::record_early_if_quiet`]).
pub(super) enum Early {
    NotYet,
    /// On its own thread and connection, so that the stream is read on meanwhile.
    Running(std::thread::JoinHandle<Result<EarlyRecord>>),
}

pub(super) struct EarlyRecord {
    /// The row and the status recorded of each of the first `rows.len()` finished builds.
    rows: Vec<(i64, BuildStatus)>,
    /// How many substitutions were recorded, and their NAR bytes.
    substitutions: usize,
    nar_bytes: u64,
    rebuild_causes: Result<Option<String>>,
}

/// What the early record is given: the builds and substitutions so far.
pub(super) struct EarlyWork {
    pub(super) ledger: std::path::PathBuf,
    pub(super) spools: Vec<std::path::PathBuf>,
    pub(super) session_id: i64,
    pub(super) finished: Vec<state::FinishedBuild>,
    pub(super) substitutions: Vec<Substitution>,
}

impl EarlyWork {
    pub(super) fn run(self) -> Result<EarlyRecord> {
        let mut ledger = Ledger::open(&self.ledger)?;
        // The hook's records first, so that each build merges with its hook twin.
        ingest::ingest_all(&mut ledger, &self.spools)?;
        let (substituted, nar_bytes) = substituted_derivations(&self.substitutions);
        let ids = session::record(&mut ledger, self.session_id, &self.finished, &substituted)?;
        let rows = ids
            .into_iter()
            .zip(self.finished.iter().map(|b| b.status))
            .collect();
        // Caught: a panic here, after the builds were committed, must not make the end
        // record them a second time (a failed early record means nothing was recorded).
        let rebuild_causes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::why::summary_after_session(&ledger, self.session_id)
        }))
        .map_err(|_| Error::Panicked("the rebuild summary"))
        .and_then(|summary| summary);
        Ok(EarlyRecord {
            rows,
            substitutions: self.substitutions.len(),
            nar_bytes,
            rebuild_causes,
        })
    }
}

/// Substituted paths with their derivers from the store database (a path whose deriver
/// is unknown is counted in the session but has no build row), and their total NAR size.
fn substituted_derivations(substitutions: &[Substitution]) -> (Vec<SubstitutedDrv>, u64) {
    if substitutions.is_empty() {
        return (Vec::new(), 0);
    }
    // Best effort: without the store database the substitutions are counted, not listed.
    let Ok(store) = StoreDb::open_default() else {
        return (Vec::new(), 0);
    };
    let mut nar_bytes = 0u64;
    let drvs = substitutions
        .iter()
        .filter_map(|s| {
            let info = store
                .path_infos(&[s.path.as_str()])
                .ok()?
                .into_iter()
                .next()?;
            nar_bytes += info.nar_size.unwrap_or(0).max(0) as u64;
            Some(SubstitutedDrv {
                drv_path: info.deriver?,
                started_ms: s.started_ms,
                finished_ms: s.finished_ms,
            })
        })
        .collect();
    (drvs, nar_bytes)
}

/// The ledger a session is recorded in, and its row.
pub(super) struct Recording {
    pub ledger: Ledger,
    pub session_id: i64,
}

/// What the end of a session is given besides the supervisor.
pub(super) struct Ending<'a> {
    pub layout: &'a Layout,
    pub info: &'a ArgsInfo,
    pub exit_code: i32,
    pub finished_ms: i64,
    pub wall_ms: i64,
    pub eval: EvalTiming,
    pub environment: std::thread::JoinHandle<Environment>,
}

/// What the supervisor hands over when Nix has exited.
pub(super) struct Watched {
    pub state: State,
    pub progress: Progress,
    /// `None` when the ledger could not be opened: nothing is recorded.
    pub recording: Option<Recording>,
    pub early: Early,
    /// The first signal forwarded to Nix, if any.
    pub interrupted_by: Option<i32>,
}

/// Records what the early record did not, closes the session and tells why things
/// rebuilt.
pub(super) fn record_end(watched: Watched, end: Ending<'_>) -> Outcome {
    let Watched {
        state,
        mut progress,
        recording,
        early,
        interrupted_by,
    } = watched;
    let Ending {
        layout,
        info,
        exit_code,
        finished_ms,
        wall_ms,
        eval,
        environment,
    } = end;
    let early = match early {
        Early::Running(handle) => handle.join().ok().and_then(Result::ok),
        Early::NotYet => None,
    };
    // If the early record failed, everything is recorded now.
    let (rows, substitutions_recorded, early_nar_bytes, early_causes) = match early {
        Some(r) => (r.rows, r.substitutions, r.nar_bytes, Some(r.rebuild_causes)),
        None => (Vec::new(), 0, 0, None),
    };
    let mut summary = Summary::from_state(&state, wall_ms);
    let (substituted, nar_bytes) =
        substituted_derivations(&state.substituted[substitutions_recorded..]);
    if summary.downloaded_bytes == 0 {
        // Nix reports no byte progress for small paths or local caches.
        summary.downloaded_bytes = early_nar_bytes + nar_bytes;
    }
    let environment = environment.join().unwrap_or_default();

    let closing = SessionClosing {
        finished_ms,
        status: match (interrupted_by, exit_code) {
            (Some(_), _) => SessionStatus::Interrupted,
            (None, 0) => SessionStatus::Succeeded,
            _ => SessionStatus::Failed,
        },
        exit_code,
        nix_version: environment.nix.nix_version,
        max_jobs: info.max_jobs.or(environment.nix.max_jobs),
        cores: info.cores.or(environment.nix.cores),
        host_cores: environment.host_cores,
        host_memory_bytes: environment.host_memory_bytes,
        built: summary.built as i64,
        substituted: summary.substituted as i64,
        failed: summary.failed as i64,
        downloaded_bytes: summary.downloaded_bytes as i64,
        // Interrupted while evaluating, it is not known how long evaluation would take.
        eval_ms: (eval.realised || interrupted_by.is_none()).then_some(eval.eval_ms),
        ifd_ms: Some(eval.ifd_ms),
        eval_fetches: Some(eval.eval_fetches as i64),
    };
    let (session_id, rebuild_causes) = match recording {
        None => (None, Ok(None)),
        Some(Recording {
            mut ledger,
            session_id,
        }) => {
            let ended = End {
                state: &state,
                rows: &rows,
                substituted: &substituted,
                closing: &closing,
            };
            match ended.record(&mut ledger, &layout.spools, session_id) {
                Ok(changed) => {
                    let causes = match early_causes {
                        Some(causes) if !changed => causes,
                        _ => crate::why::summary_after_session(&ledger, session_id),
                    };
                    (Some(session_id), causes)
                }
                // The build is over: its outcome stands, unrecorded, said once.
                Err(e) => {
                    progress.message(
                        1,
                        &format!("nix-ledger: warning: this build was not recorded: {e}"),
                    );
                    (None, Ok(None))
                }
            }
        }
    };
    progress.flush();
    Outcome {
        exit_code,
        interrupted: interrupted_by.is_some(),
        session_id,
        summary,
        rebuild_causes,
    }
}

/// What the end of a session writes.
struct End<'a> {
    state: &'a State,
    /// The rows and statuses of the builds the early record wrote.
    rows: &'a [(i64, BuildStatus)],
    substituted: &'a [SubstitutedDrv],
    closing: &'a SessionClosing,
}

impl End<'_> {
    /// Ingests the hook's records, then writes what the early record did not and closes
    /// the session; returns whether anything changed since the early record.
    fn record(
        &self,
        ledger: &mut Ledger,
        spools: &[std::path::PathBuf],
        session_id: i64,
    ) -> Result<bool> {
        // The hook's records of this session's builds are in its spool now: ingesting
        // them first lets each wrapper record merge into its hook twin.
        ingest::ingest_all(ledger, spools)?;
        // What changed since the early record, if there was one; else everything.
        let restated: Vec<(i64, &state::FinishedBuild)> = self
            .rows
            .iter()
            .zip(&self.state.finished)
            .filter(|((_, recorded), build)| build.status != *recorded)
            .map(|((row, _), build)| (*row, build))
            .collect();
        let new_builds = &self.state.finished[self.rows.len()..];
        let changed =
            !restated.is_empty() || !new_builds.is_empty() || !self.substituted.is_empty();
        session::finish(
            ledger,
            session_id,
            &restated,
            new_builds,
            self.substituted,
            self.closing,
        )?;
        Ok(changed)
    }
}
