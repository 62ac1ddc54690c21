//! `nix-ledger doctor`: is everything in place, and were records lost?
//!
//! Checks, each with a status and a one-line detail: Nix found (and its `OUT_PATHS`
//! quirks), the hook configured in Nix's settings, each spool readable (and, for the
//! spool this user's hook writes, writable), the ledger writable, and losses: spool lines
//! that could not be ingested, builds the hook could only write to its error log, and
//! builds the Nix store says were made here since the ledger began that it has no record of.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::ledger::{ingest, Ledger};
use crate::nix::command::{self, config_value};
use crate::paths::Layout;
use crate::store::db::StoreDb;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

/// All checks, and what to add to nix.conf.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    /// The nix.conf line that enables the hook.
    pub nix_conf_line: String,
    /// Derivations built here since the ledger began that have no record (newest first,
    /// at most 20 listed).
    pub unrecorded_builds: Vec<String>,
    pub unrecorded_count: usize,
}

impl Report {
    pub fn has_failures(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    fn push(&mut self, name: &str, status: Status, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_string(),
            status,
            detail: detail.into(),
        });
    }
}

/// A session older than this without a recorded wrapper process is taken as abandoned.
const ABANDONED_AFTER_MS: i64 = 24 * 3600 * 1000;

/// Runs every check; with `fix`, also closes sessions a dead wrapper left `running`.
pub fn run(layout: &Layout, fix: bool) -> Report {
    let hook_binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("nix-ledger-hook")))
        .filter(|p| p.is_file());
    let hook_display = hook_binary
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/path/to/nix-ledger-hook".to_string());
    let mut report = Report {
        checks: Vec::new(),
        nix_conf_line: format!("post-build-hook = {hook_display}"),
        unrecorded_builds: Vec::new(),
        unrecorded_count: 0,
    };

    match command::nix_version() {
        Ok(version) => {
            let quirks = version.out_paths_quirks();
            let detail = if quirks.is_empty() {
                version.raw.clone()
            } else {
                format!(
                    "{}; it {} — the hook reads every output from the .drv instead",
                    version.raw,
                    quirks.join(", and ")
                )
            };
            report.push("nix", Status::Ok, detail);
        }
        Err(e) => report.push("nix", Status::Fail, format!("nix not usable: {e}")),
    }

    match command::show_config() {
        Ok(config) => {
            let hook = config_value(&config, "post-build-hook")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            if hook.is_empty() {
                report.push(
                    "hook",
                    Status::Warn,
                    format!(
                        "no post-build-hook configured; add to /etc/nix/nix.conf: {}",
                        report.nix_conf_line
                    ),
                );
            } else if runs_nix_ledger_hook(Path::new(hook)) {
                report.push("hook", Status::Ok, format!("post-build-hook = {hook}"));
            } else {
                report.push(
                    "hook",
                    Status::Warn,
                    format!("post-build-hook is {hook}, which does not run nix-ledger-hook; Nix takes one hook, so chain it (see docs/install.md)"),
                );
            }
        }
        Err(e) => report.push(
            "hook",
            Status::Warn,
            format!("cannot read nix settings: {e}"),
        ),
    }

    let own_spool = crate::hook::spool_path_for_current_user();
    for spool in &layout.spools {
        check_spool(
            &mut report,
            spool,
            own_spool.as_deref() == Some(spool.as_path()),
        );
    }

    match Ledger::open(&layout.ledger) {
        Ok(mut ledger) => {
            report.push(
                "ledger",
                Status::Ok,
                format!(
                    "{} (schema {})",
                    layout.ledger.display(),
                    Ledger::schema_version()
                ),
            );
            let ingested = ingest::ingest_all(&mut ledger, &layout.spools)
                .and_then(|done| crate::ledger::enrich::enrich_pending(&mut ledger).map(|_| done));
            match ingested {
                Ok(done) if done.recorded > 0 => report.push(
                    "ingest",
                    Status::Ok,
                    format!("ingested {} pending records", done.recorded),
                ),
                Ok(_) => {}
                Err(e) => report.push("ingest", Status::Fail, e.to_string()),
            }
            check_losses(&mut report, &ledger);
            check_sessions(&mut report, &mut ledger, fix);
        }
        Err(e) if e.is_damaged_ledger() => {
            let path = layout.ledger.display();
            report.push(
                "ledger",
                Status::Fail,
                format!(
                    "{e}: it is damaged; move it aside (mv {path} {path}.damaged): the next nix-ledger command starts a new ledger and ingests the spools again, which still hold the hook's records (the wrapper's measurements are in the old file only)"
                ),
            );
        }
        Err(e) => report.push("ledger", Status::Fail, e.to_string()),
    }
    report
}

/// Sessions left `running` by a wrapper that died (killed, or its ledger could not be
/// written at the end): they never recorded an end.
fn check_sessions(report: &mut Report, ledger: &mut Ledger, fix: bool) {
    let hostname = sysinfo::System::host_name().ok();
    let Ok(running) = ledger.running_sessions(hostname.as_deref()) else {
        return;
    };
    let now = crate::time::now_ms();
    let abandoned: Vec<i64> = running
        .iter()
        .filter(|s| match s.pid {
            Some(pid) => !is_nix_ledger_process(pid),
            None => now - s.started_ms > ABANDONED_AFTER_MS,
        })
        .map(|s| s.id)
        .collect();
    if abandoned.is_empty() {
        return;
    }
    if fix {
        match ledger.close_abandoned_sessions(&abandoned) {
            Ok(n) => report.push(
                "sessions",
                Status::Ok,
                format!(
                    "{n} sessions left running by a wrapper that died are now marked interrupted"
                ),
            ),
            Err(e) => report.push("sessions", Status::Fail, e.to_string()),
        }
        return;
    }
    report.push(
        "sessions",
        Status::Warn,
        format!(
            "{} sessions are marked running but their wrapper is gone (killed, or the ledger could not be written at the end; the builds recorded before are kept); `nix-ledger doctor --fix` marks them interrupted",
            abandoned.len()
        ),
    );
}

/// Whether process `pid` is a nix-ledger (a wrapper still running its session).
fn is_nix_ledger_process(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end().starts_with("nix-ledger"))
}

/// True when `hook` is nix-ledger-hook, or a script that runs it (a chaining script).
fn runs_nix_ledger_hook(hook: &Path) -> bool {
    if hook.file_name().is_some_and(|n| n == "nix-ledger-hook") {
        return true;
    }
    std::fs::read(hook)
        .map(|bytes| bytes.len() < 1 << 20 && bytes.windows(15).any(|w| w == b"nix-ledger-hook"))
        .unwrap_or(false)
}

fn check_spool(report: &mut Report, spool: &Path, written_by_this_user: bool) {
    let name = format!("spool {}", spool.display());
    match std::fs::metadata(spool) {
        Ok(meta) => {
            let readable = std::fs::File::open(spool).is_ok();
            let writable = !written_by_this_user
                || std::fs::OpenOptions::new().append(true).open(spool).is_ok();
            let status = if readable && writable {
                Status::Ok
            } else {
                Status::Fail
            };
            let mut detail = format!("{} bytes", meta.len());
            if !readable {
                detail.push_str(", not readable by this user");
            }
            if !writable {
                detail.push_str(", not writable: the hook cannot record builds");
            }
            report.push(&name, status, detail);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir_ok = spool.parent().is_some_and(dir_writable_or_creatable);
            if written_by_this_user && !dir_ok {
                report.push(&name, Status::Fail, "missing, and its directory cannot be created or written: the hook cannot record builds");
            } else {
                report.push(
                    &name,
                    Status::Ok,
                    "not created yet (no build recorded there)",
                );
            }
        }
        Err(e) => report.push(&name, Status::Fail, e.to_string()),
    }
}

fn dir_writable_or_creatable(dir: &Path) -> bool {
    let mut probe = dir;
    loop {
        if probe.exists() {
            return crate::sys::can_write(probe);
        }
        match probe.parent() {
            Some(parent) => probe = parent,
            None => return false,
        }
    }
}

fn check_losses(report: &mut Report, ledger: &Ledger) {
    let skipped = ledger.ingest_problem_reasons(5).unwrap_or_default();
    if skipped.is_empty() {
        report.push("spool lines", Status::Ok, "every spool line was ingested");
    } else {
        let mut detail = String::new();
        for (reason, n) in &skipped {
            let _ = write!(
                detail,
                "{}{n} × {reason}",
                if detail.is_empty() { "" } else { "; " }
            );
        }
        report.push("spool lines", Status::Warn, detail);
    }

    match ledger.rotation_losses() {
        Ok((0, _)) | Err(_) => {}
        Ok((times, bytes)) => report.push(
            "spool rotation",
            Status::Warn,
            format!(
                "this ledger fell behind the system spool's rotation {times} time(s): {} of records were rotated away before it read them (run nix-ledger more often than the maintenance job rotates, or keep more rotated spools)",
                crate::size::human_bytes(bytes)
            ),
        ),
    }

    let errors_file_records = ledger
        .builds_from_spool_file(crate::paths::HOOK_ERRORS_FILE)
        .unwrap_or(0);
    if errors_file_records > 0 {
        report.push(
            "hook errors",
            Status::Warn,
            format!("{errors_file_records} builds could not be written to the spool and were recovered from {}; see that file for why", crate::paths::HOOK_ERRORS_FILE),
        );
    }

    // Since when the hook should have recorded everything: the ledger's creation, or its
    // first hook record if that is older (a ledger rebuilt from an old spool).
    let first_record = ledger.first_hook_record_ms().unwrap_or(None);
    let created = std::fs::metadata(ledger.path())
        .and_then(|m| m.created())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64);
    let since = match (first_record, created) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let (Some(first), Ok(store)) = (since, StoreDb::open_default()) else {
        return;
    };
    let Ok(built) = store.locally_built_since(first) else {
        return;
    };
    let mut registered: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    for info in &built {
        if let Some(drv) = &info.deriver {
            registered
                .entry(drv.as_str())
                .or_insert(info.registered_ms.unwrap_or(0));
        }
    }
    let drvs: Vec<&str> = registered.keys().copied().collect();
    let Ok(unrecorded) = ledger.unrecorded(&drvs) else {
        return;
    };
    let mut missing: Vec<(i64, String)> = unrecorded
        .into_iter()
        .map(|drv| (registered.get(drv).copied().unwrap_or(0), drv.to_string()))
        .collect();
    missing.sort_by(|a, b| b.cmp(a));
    report.unrecorded_count = missing.len();
    report.unrecorded_builds = missing.into_iter().take(20).map(|(_, d)| d).collect();
    if report.unrecorded_count == 0 {
        report.push(
            "lost builds",
            Status::Ok,
            "every build the store registered since the ledger began is recorded",
        );
    } else {
        report.push(
            "lost builds",
            Status::Warn,
            format!(
                "{} derivations built here since the ledger began have no record (hook not configured for them, or it could not write; builds recorded into another ledger count too)",
                report.unrecorded_count
            ),
        );
    }
}

/// Plain-text rendering: one line per check, then the nix.conf line.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for check in &report.checks {
        let mark = match check.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        let _ = writeln!(out, "[{mark}] {}: {}", check.name, check.detail);
    }
    const SHOWN: usize = 5;
    for drv in report.unrecorded_builds.iter().take(SHOWN) {
        let _ = writeln!(out, "       unrecorded: {drv}");
    }
    if report.unrecorded_count > SHOWN {
        let _ = writeln!(
            out,
            "       … and {} more (`nix-ledger doctor --json` lists the newest {})",
            report.unrecorded_count - SHOWN,
            report.unrecorded_builds.len()
        );
    }
    let _ = writeln!(
        out,
        "\nnix.conf line to enable the hook:\n  {}",
        report.nix_conf_line
    );
    out
}
