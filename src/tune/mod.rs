//! `nix-ledger tune`: `max-jobs` and `cores` from what the ledger measured, by
//! simulating Nix's build loop; and the whole-build ETA of `nb build`.
//!
//! Per derivation name the ledger has builds with their duration, CPU time, peak memory
//! and the settings they ran under. From them a resource model ([`model`], with the
//! contention a build met taken out: [`observe`]); the workloads to tune on: the last
//! sessions' builds with their dependencies, or what a target would build ([`inputs`]);
//! a simulator of Nix's build loop ([`sim`], sharing the CPU by [`share`]); an OOM-risk
//! check over every set of builds that can run at once ([`oom`]); the sweep over
//! `(max-jobs, cores)` ([`grid`], ranked by [`mod@sweep`]); the critical path
//! ([`critical`]); and the report ([`report`], [`render`]). With remote builders
//! ([`builders`]) the simulator schedules over this machine and them ([`fleet`]). [`eta`]
//! tracks a build in progress, and [`live`] is what the wrapper calls for it.
//!
//! Everything below [`inputs`] and [`builders`] is pure: no I/O, no clock.

pub mod builders;
pub mod critical;
pub mod error;
pub mod eta;
pub mod fleet;
mod fleet_machine;
pub mod grid;
pub mod host;
pub mod inputs;
pub mod live;
pub mod model;
pub mod observe;
pub mod oom;
pub mod render;
pub mod report;
pub mod share;
pub mod sim;
pub mod sweep;
pub mod workload;

use std::time::Instant;

use crate::ledger::model::Scope;
use crate::ledger::Ledger;
use crate::nix::config::NixSettings;
use crate::nix::graph::{DrvSource, Layered, Loader, StoreFiles};
use crate::store::db::StoreDb;
use crate::why::resolve::Instantiation;
use crate::{Error, Result};
use grid::{Candidate, SweepConfig};
use host::Host;
use inputs::{Origin, Prepared};
use report::Report;

/// Nix's own serial work per build on its loop (registering outputs, starting the next
/// builder), measured by the research at 10 ms on a quiet 2-core machine.
pub const LOOP_MS_PER_BUILD: f64 = 10.0;
/// Forking and waiting for a post-build hook, when one is set: ~3 ms per build here
/// (docs/benchmarks.md: `/bin/true` as the hook).
pub const HOOK_MS: f64 = 3.0;

/// What to tune for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// A .drv, an output path, a .nix file (with `how`) or a flake reference: tune on
    /// what building it would build. `None`: on the last `sessions` sessions.
    pub target: Option<String>,
    pub how: Instantiation,
    pub sessions: usize,
    /// Another machine: its cores and memory (else this one's).
    pub host_cores: Option<u32>,
    pub memory_bytes: Option<u64>,
    /// More settings to compare with.
    pub compare: Vec<Candidate>,
    /// Cores other work keeps busy while Nix builds (a shared machine): taken off the
    /// host in every simulation.
    pub outside_load: Option<f64>,
    /// The `builders` to tune for, in nix.conf's syntax, instead of Nix's (`""`: none).
    pub builders: Option<String>,
    /// Tune another fleet machine on its own sessions and builds (pulled by `sync`).
    pub machine: Option<String>,
}

/// Runs the sweep for `req` and reports.
pub fn tune(ledger: &Ledger, settings: &NixSettings, req: &Request) -> Result<Report> {
    let this_machine = crate::machine::this_machine();
    let scope = match req.machine.as_deref() {
        Some(m) if m != this_machine => Scope::Fleet(m),
        _ => Scope::Here,
    };
    if let Scope::Fleet(m) = scope {
        return fleet_machine::tune(ledger, settings, req, m);
    }
    tune_in(ledger, settings, req, Scope::Here, None)
}

/// [`tune`] on the sessions and builds of `scope`; `fleet_host` is the machine's cores,
/// memory and setting in effect when it is not this one.
fn tune_in(
    ledger: &Ledger,
    settings: &NixSettings,
    req: &Request,
    scope: Scope<'_>,
    fleet_host: Option<&fleet_machine::FleetHost>,
) -> Result<Report> {
    let here = Host::new(None, None);
    let host = match fleet_host {
        Some(f) => Host::new(
            req.host_cores.or(f.cores),
            req.memory_bytes.or(f.memory_bytes),
        ),
        None => Host::new(req.host_cores, req.memory_bytes),
    };
    // With builders the sessions' remote builds are part of the workload (this
    // machine's builders: another machine's are not known).
    let specs = match scope {
        Scope::Here => builders::configured(settings, req.builders.as_deref())?,
        Scope::Fleet(_) => Vec::new(),
    };
    let remote = !specs.is_empty();
    let snapshots = ledger.snapshots();
    let source = Layered(vec![&StoreFiles as &dyn DrvSource, &snapshots]);
    let mut loader = Loader::new(&source);
    // The derivations of each workload first, then one read of what the ledger knows.
    let mut workloads: Vec<Vec<(String, String)>> = Vec::new();
    let mut origins = Vec::new();
    match &req.target {
        Some(target) => {
            let drv = crate::why::resolve_target(ledger, target, &req.how)?;
            let store = StoreDb::open_default()?;
            let drvs = inputs::to_build(&mut loader, &store, &[&drv], None)?;
            if drvs.is_empty() {
                return Err(Error::NotFound(format!(
                    "anything to build for {target}: every output is in the store"
                )));
            }
            workloads.push(inputs::named(&mut loader, drvs)?);
            origins.push(Origin::Target { drv });
        }
        None => {
            let n = req.sessions.max(1);
            let sessions = if remote {
                ledger.recent_build_sessions_anywhere(scope, n)?
            } else {
                ledger.recent_build_sessions(scope, n)?
            };
            if sessions.is_empty() {
                return Err(Error::NotFound(match scope {
                    Scope::Here => "a session that built something (build with `nb build`, \
                                    or give a TARGET)"
                        .into(),
                    Scope::Fleet(m) => format!(
                        "a session of fleet machine `{m}` that built something (pulled by `nb sync`)"
                    ),
                }));
            }
            for s in &sessions {
                workloads.push(if remote {
                    ledger.session_built_anywhere(s.id)?
                } else {
                    ledger.session_built(s.id)?
                });
                origins.push(Origin::Session {
                    id: s.id,
                    started_ms: s.started_ms,
                });
            }
        }
    }
    let names: Vec<&str> = workloads.iter().flat_map(|w| inputs::names(w)).collect();
    let default_cores = if fleet_host.is_some() {
        host.cores
    } else {
        here.cores
    };
    let mut knowledge = inputs::knowledge(ledger, scope, &names, inputs::TUNE, default_cores)?;
    let stats = if remote {
        ledger.builder_stats(0)?
    } else {
        Vec::new()
    };
    if remote {
        builders::add_remote_knowledge(ledger, &mut knowledge, &names, &stats)?;
    }
    let prepared = workloads
        .iter()
        .map(|w| inputs::prepare(&mut loader, w, &knowledge))
        .collect::<Result<Vec<Prepared>>>()?;
    let hook_set = settings
        .post_build_hook
        .as_deref()
        .is_some_and(|h| !h.trim().is_empty());
    let mut cfg = SweepConfig::new(host.cores);
    cfg.memory_budget_bytes = Some(host.memory_budget_bytes);
    cfg.loop_ms_per_build = LOOP_MS_PER_BUILD;
    cfg.hook_ms = if hook_set { HOOK_MS } else { 0.0 };
    if let Some(cores) = req.outside_load {
        if !(cores.is_finite() && cores >= 0.0 && cores < f64::from(host.cores)) {
            return Err(Error::Usage(format!(
                "--outside-load {cores}: must be at least 0 and below the {} host cores",
                host.cores
            )));
        }
        cfg.background_reserved = cores;
    }
    if !host.projected {
        cfg.max_jobs_limit = host::build_users(settings.build_users_group.as_deref());
    }
    let baselines = match fleet_host {
        Some(f) => baselines(&f.settings, &host, &req.compare),
        None => baselines(settings, &host, &req.compare),
    };
    let estimated: Vec<Vec<bool>> = prepared.iter().map(Prepared::estimated).collect();
    let inputs: Vec<sweep::Input<'_>> = prepared
        .iter()
        .zip(&estimated)
        .map(|(p, e)| sweep::Input {
            workload: &p.workload,
            estimated: e,
        })
        .collect();
    let started = Instant::now();
    let rec = sweep::sweep(&inputs, &cfg, &baselines).map_err(|e| e.into_error())?;
    let (machines, with_builders) = if remote {
        let cx = builders::Context {
            settings,
            cfg: &cfg,
            inputs: &inputs,
        };
        let (machines, mut with) = builders::recommend(ledger, &specs, &stats, &cx)?;
        if let Some(w) = with.as_mut() {
            w.local_only_makespan_ms = rec.best.as_ref().map(|b| b.makespan_ms.round() as u64);
        }
        (machines, with)
    } else {
        (Vec::new(), None)
    };
    let sweep_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut report = report::build(
        &rec,
        report::Context {
            prepared: &prepared,
            origins,
            host,
            loop_ms_per_build: cfg.loop_ms_per_build,
            hook_ms: cfg.hook_ms,
            sweep_ms,
            builders: machines,
            with_builders,
        },
    );
    report.machine = scope.machine().map(str::to_string);
    Ok(report)
}

/// The settings to compare the pick with: those asked for, the ones in effect, Nix's
/// default (1 job, all cores) and NixOS's (`max-jobs = auto`: one per core, all cores).
fn baselines(
    settings: &NixSettings,
    host: &Host,
    compare: &[Candidate],
) -> Vec<(String, Candidate)> {
    let mut out: Vec<(String, Candidate)> = compare
        .iter()
        .map(|c| (format!("{} × {}", c.max_jobs, c.cores), *c))
        .collect();
    if let (Some(max_jobs), Some(cores)) = (settings.max_jobs, settings.cores) {
        if max_jobs >= 1 && cores >= 0 {
            let c = Candidate {
                max_jobs: max_jobs.min(u32::MAX as i64) as u32,
                cores: cores.min(u32::MAX as i64) as u32,
            };
            out.push((report::CURRENT.into(), c));
        }
    }
    out.push((
        report::NIX_DEFAULT.into(),
        Candidate {
            max_jobs: 1,
            cores: 0,
        },
    ));
    out.push((
        report::NIXOS_DEFAULT.into(),
        Candidate {
            max_jobs: host.cores,
            cores: 0,
        },
    ));
    out
}
