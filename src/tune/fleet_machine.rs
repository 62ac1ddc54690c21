//! `nb tune --machine NAME`: another fleet machine tuned from its own sessions and
//! builds, as `nb sync` pulled them, with its cores, memory and setting as its sessions
//! recorded them.

use super::{tune_in, Request};
use crate::ledger::model::Scope;
use crate::ledger::Ledger;
use crate::nix::config::NixSettings;
use crate::tune::report::Report;
use crate::{Error, Result};

/// What the fleet machine's newest session recorded of it.
pub(super) struct FleetHost {
    pub cores: Option<u32>,
    pub memory_bytes: Option<u64>,
    /// This machine's settings with that machine's `max-jobs` and `cores`: the setting
    /// "in effect" the report compares with. Its builders are not known: none.
    pub settings: NixSettings,
}

pub(super) fn tune(
    ledger: &Ledger,
    settings: &NixSettings,
    req: &Request,
    machine: &str,
) -> Result<Report> {
    if req.target.is_some() {
        return Err(Error::Usage(format!(
            "--machine {machine}: tunes on that machine's sessions, without a TARGET"
        )));
    }
    let scope = Scope::Fleet(machine);
    let newest = ledger.recent_build_sessions(scope, 1)?;
    let Some(newest) = newest.first() else {
        let known = ledger.fleet_machines()?;
        return Err(Error::NotFound(format!(
            "a session of fleet machine `{machine}` that built something (pulled by `nb sync`: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    let positive = |v: Option<i64>| v.filter(|v| *v > 0);
    let cores = positive(newest.host_cores).map(|c| c.min(i64::from(u32::MAX)) as u32);
    let memory_bytes = positive(newest.host_memory_bytes).map(|m| m as u64);
    // Never this machine's cores or memory in its place: said, and asked for.
    let missing: Vec<&str> = [
        (cores.is_none() && req.host_cores.is_none(), "--host-cores"),
        (
            memory_bytes.is_none() && req.memory_bytes.is_none(),
            "--memory",
        ),
    ]
    .into_iter()
    .filter_map(|(missing, flag)| missing.then_some(flag))
    .collect();
    if !missing.is_empty() {
        return Err(Error::Usage(format!(
            "--machine {machine}: its last session did not record its cores or memory; give {}",
            missing.join(" and ")
        )));
    }
    let host = FleetHost {
        cores,
        memory_bytes,
        settings: NixSettings {
            max_jobs: newest.max_jobs,
            cores: newest.cores,
            builders: None,
            ..settings.clone()
        },
    };
    tune_in(ledger, settings, req, scope, Some(&host))
}
