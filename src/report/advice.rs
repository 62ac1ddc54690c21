//! The report's advice: where a feature would change a setting in effect, and why, in
//! numbers the ledger has. The tuner's is here ([`tune`]); the retention policy's is in
//! [`super::retention`].
//!
//! The tuner runs as `nb tune` does by default, on the last [`TUNE_SESSIONS`] sessions
//! that built something, so that `nb tune` shows the details of the same prediction. Its
//! reads of the ledger are bounded by those sessions (their builds, and a bounded number
//! of measurements per name), never by the size of the ledger.

use serde::Serialize;

use super::retention::RetentionAdvice;
use crate::ledger::model::Scope;
use crate::ledger::Ledger;
use crate::nix::config::NixSettings;
use crate::time::human_duration_ms;
use crate::tune::report::{Report as TuneReport, Setting};
use crate::tune::sweep::Level;
use crate::{Error, Result};

/// The sessions the tuner predicts on: `nb tune`'s default.
pub const TUNE_SESSIONS: usize = 5;
/// A recommendation predicted to save less than this share of the build time is noise
/// next to the model's error (docs/benchmarks.md): not worth a change of configuration.
pub const MIN_GAIN: f64 = 0.05;
/// Below this many measured derivations the prediction rests on too little.
pub const MIN_MEASURED: usize = 5;
/// When more than this share of the predicted build time rests on estimates, the
/// recommendation is the estimates' more than the measurements'.
pub const MAX_ESTIMATED_SHARE: f64 = 0.5;
/// At most this share of a fleet machine's derivations may have an unknown graph.
const MAX_UNKNOWN_GRAPH_SHARE: f64 = 0.1;

/// A piece of advice: a setting, what is in effect, what would be better, and why; the
/// lines that apply it; and the numbers behind it, per source.
#[derive(Debug, Clone, Serialize)]
pub struct Advice {
    /// Which feature advises: `tune`, `retention`.
    pub source: String,
    pub setting: String,
    pub in_effect: String,
    pub advised: String,
    pub why: String,
    /// What to write or run, `#` lines saying where each goes.
    pub lines: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tune: Option<TuneAdvice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionAdvice>,
}

/// The tuner's numbers behind its advice.
#[derive(Debug, Clone, Serialize)]
pub struct TuneAdvice {
    /// The sessions predicted on.
    pub sessions: usize,
    pub in_effect: Setting,
    pub advised: Setting,
    /// The share of the build time the advised setting saves (negative: it is slower,
    /// and advised only because the setting in effect risks running out of memory).
    pub gain: f64,
    pub oom_risk_avoided: bool,
    pub measured: usize,
    pub estimated: usize,
    /// The share of the predicted build time that rests on estimates.
    pub estimated_share: f64,
    pub confidence: Level,
    pub nix_conf: String,
    pub nix_settings: String,
}

/// The tuner's advice on the report's period, if it would change the settings in effect.
/// Nothing when the period has no session that built something, when the settings in
/// effect are unknown, or when there are too few measurements to say.
/// With a fleet machine's `scope`, its advice from its own sessions (`nb tune --machine`),
/// the setting in effect being its last session's.
pub fn tune(
    ledger: &Ledger,
    settings: &NixSettings,
    scope: Scope<'_>,
    since_ms: i64,
) -> Result<Option<Advice>> {
    if scope == Scope::Here && (settings.max_jobs.is_none() || settings.cores.is_none()) {
        return Ok(None);
    }
    let in_period = ledger
        .recent_build_sessions(scope, 1)?
        .first()
        .is_some_and(|s| s.started_ms >= since_ms);
    if !in_period {
        return Ok(None);
    }
    // The advice is `nb tune`'s recommendation for this machine alone; the search over
    // remote builders is left to `nb tune`, as the report must stay quick.
    let request = crate::tune::Request {
        sessions: TUNE_SESSIONS,
        builders: Some(String::new()),
        machine: scope.machine().map(str::to_string),
        ..crate::tune::Request::default()
    };
    match crate::tune::tune(ledger, settings, &request) {
        Ok(report) => Ok(tune_advice(&report)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The advice a tuner's report makes, if any (see [`tune`]).
pub fn tune_advice(r: &TuneReport) -> Option<Advice> {
    let (advised, current) = (r.recommended.as_ref()?, r.current.as_ref()?);
    let c = &r.confidence;
    let measured = c.total_jobs.saturating_sub(c.estimated_jobs);
    if measured < MIN_MEASURED || c.estimated_share > MAX_ESTIMATED_SHARE {
        return None;
    }
    // Another machine's derivations whose .drv neither this store nor a snapshot has
    // (unless it synced with --with-why) were simulated without dependencies: a graph
    // that is not the real one favours more jobs. (This machine's own sessions keep
    // their snapshots.)
    let (unknown, jobs) = r
        .workloads
        .iter()
        .fold((0, 0), |(u, n), w| (u + w.unknown_graph, n + w.derivations));
    if r.machine.is_some() && unknown as f64 > MAX_UNKNOWN_GRAPH_SHARE * jobs as f64 {
        return None;
    }
    if (advised.max_jobs, advised.cores) == (current.max_jobs, current.cores) {
        return None;
    }
    let oom_risk_avoided = current.oom_risk && !advised.oom_risk;
    let gain = if current.makespan_ms > 0 {
        1.0 - advised.makespan_ms as f64 / current.makespan_ms as f64
    } else {
        0.0
    };
    if gain < MIN_GAIN && !oom_risk_avoided {
        return None;
    }
    let (nix_conf, nix_settings) = (r.nix_conf.clone()?, r.nix_settings.clone()?);
    let setting = |s: &Setting| {
        format!(
            "max-jobs = {}, cores = {}: {}",
            s.max_jobs,
            s.cores,
            human_duration_ms(s.makespan_ms as i64)
        )
    };
    let sessions = r.workloads.len();
    let mut why = if gain >= MIN_GAIN {
        format!(
            "{:.0} % less build time predicted on the last {sessions} sessions",
            gain * 100.0
        )
    } else {
        format!("the setting in effect can run out of memory on the last {sessions} sessions")
    };
    if oom_risk_avoided && gain >= MIN_GAIN {
        why.push_str(", and the setting in effect can run out of memory");
    }
    let level = match c.level {
        Level::High => "high",
        Level::Medium => "medium",
        Level::Low => "low",
    };
    why.push_str(&format!(
        "; confidence {level}: {measured} of {} derivations measured, {:.0} % of the build time estimated (`nb tune` shows the details)",
        c.total_jobs,
        c.estimated_share * 100.0
    ));
    let mut lines = vec!["# nix.conf".to_string()];
    lines.extend(nix_conf.lines().map(str::to_string));
    lines.push("# NixOS / nix-darwin".into());
    lines.extend(nix_settings.lines().map(str::to_string));
    Some(Advice {
        source: "tune".into(),
        setting: "max-jobs, cores".into(),
        in_effect: format!(
            "{}{}",
            setting(current),
            if current.oom_risk { ", OOM risk" } else { "" }
        ),
        advised: setting(advised),
        why,
        lines,
        tune: Some(TuneAdvice {
            sessions,
            in_effect: current.clone(),
            advised: advised.clone(),
            gain: (gain * 1000.0).round() / 1000.0,
            oom_risk_avoided,
            measured,
            estimated: c.estimated_jobs,
            estimated_share: (c.estimated_share * 1000.0).round() / 1000.0,
            confidence: c.level,
            nix_conf,
            nix_settings,
        }),
        retention: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::host::Host;
    use crate::tune::report::{Path, WorkloadSummary};
    use crate::tune::sweep::Confidence;

    fn setting(max_jobs: u32, cores: u32, makespan_ms: u64, oom_risk: bool) -> Setting {
        Setting {
            max_jobs,
            cores,
            makespan_ms,
            peak_memory_bytes: 1 << 30,
            worst_case_memory_bytes: 1 << 30,
            oom_risk,
            cpu_utilisation: 0.5,
        }
    }

    fn report(current: Setting, best: Setting, measured: usize, estimated: usize) -> TuneReport {
        let workload = WorkloadSummary {
            origin: crate::tune::inputs::Origin::Session {
                id: 1,
                started_ms: 0,
            },
            derivations: measured + estimated,
            measured,
            estimated,
            dependencies: 0,
            unknown_graph: 0,
        };
        let share = estimated as f64 / (measured + estimated) as f64;
        TuneReport {
            workloads: vec![workload.clone(), workload],
            host: Host {
                cores: 4,
                memory_bytes: 8 << 30,
                memory_budget_bytes: 7 << 30,
                projected: false,
            },
            nix_conf: Some(format!(
                "max-jobs = {}\ncores = {}\n",
                best.max_jobs, best.cores
            )),
            nix_settings: Some(format!(
                "nix.settings = {{ max-jobs = {}; cores = {}; }};\n",
                best.max_jobs, best.cores
            )),
            recommended: Some(best.clone()),
            current: Some(current),
            nix_default: best.clone(),
            nixos_default: best.clone(),
            compared: Vec::new(),
            candidates: vec![best],
            oom_risks_avoided: Vec::new(),
            critical_path: Path {
                length_ms: 1,
                derivations: Vec::new(),
            },
            confidence: Confidence {
                estimated_jobs: estimated,
                total_jobs: measured + estimated,
                estimated_share: share,
                level: if share <= 0.1 {
                    Level::High
                } else if share <= 0.3 {
                    Level::Medium
                } else {
                    Level::Low
                },
            },
            loop_ms_per_build: 10.0,
            hook_ms: 0.0,
            sweep_ms: 1.0,
            machine: None,
            builders: Vec::new(),
            with_builders: None,
        }
    }

    #[test]
    fn no_advice_for_a_fleet_machine_whose_graph_is_not_known() {
        // Another machine's sessions without their .drv files: simulated without
        // dependencies, which favours more jobs.
        let mut r = report(
            setting(1, 0, 100_000, false),
            setting(4, 1, 40_000, false),
            18,
            2,
        );
        for w in &mut r.workloads {
            w.unknown_graph = 3;
        }
        assert!(tune_advice(&r).is_some(), "this machine's: as simulated");
        r.machine = Some("ci-runner".into());
        assert!(tune_advice(&r).is_none());
    }

    #[test]
    fn a_faster_setting_is_advised_with_its_numbers_and_lines() {
        let r = report(
            setting(1, 0, 100_000, false),
            setting(4, 1, 40_000, false),
            18,
            2,
        );
        let a = tune_advice(&r).unwrap();
        assert_eq!(a.in_effect, "max-jobs = 1, cores = 0: 1m40s");
        assert_eq!(a.advised, "max-jobs = 4, cores = 1: 40.0s");
        assert!(a.why.starts_with("60 % less build time predicted on the last 2 sessions; confidence high: 18 of 20 derivations measured, 10 % of the build time estimated"), "{}", a.why);
        assert_eq!(
            a.lines,
            [
                "# nix.conf",
                "max-jobs = 4",
                "cores = 1",
                "# NixOS / nix-darwin",
                "nix.settings = { max-jobs = 4; cores = 1; };"
            ]
        );
        let t = a.tune.unwrap();
        assert_eq!((t.gain, t.measured, t.estimated), (0.6, 18, 2));
        assert!(!t.oom_risk_avoided);
    }

    #[test]
    fn nothing_is_advised_when_it_is_in_effect_gains_little_or_rests_on_estimates() {
        let same = report(
            setting(4, 1, 40_000, false),
            setting(4, 1, 40_000, false),
            20,
            0,
        );
        assert!(tune_advice(&same).is_none());
        let little = report(
            setting(2, 0, 41_000, false),
            setting(4, 1, 40_000, false),
            20,
            0,
        );
        assert!(tune_advice(&little).is_none(), "2.4 % is noise");
        let few = report(
            setting(1, 0, 100_000, false),
            setting(4, 1, 40_000, false),
            4,
            0,
        );
        assert!(tune_advice(&few).is_none(), "4 measured derivations");
        let guessed = report(
            setting(1, 0, 100_000, false),
            setting(4, 1, 40_000, false),
            9,
            11,
        );
        assert!(tune_advice(&guessed).is_none(), "55 % estimated");
    }

    #[test]
    fn an_oom_risk_avoided_is_advised_even_when_slower() {
        let r = report(
            setting(8, 0, 30_000, true),
            setting(2, 2, 32_000, false),
            20,
            0,
        );
        let a = tune_advice(&r).unwrap();
        assert_eq!(a.in_effect, "max-jobs = 8, cores = 0: 30.0s, OOM risk");
        assert!(
            a.why
                .starts_with("the setting in effect can run out of memory"),
            "{}",
            a.why
        );
        let t = a.tune.unwrap();
        assert!(t.oom_risk_avoided && t.gain < 0.0);
    }
}
