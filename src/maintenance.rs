//! `nix-ledger maintain`: what the periodic job (a systemd timer on NixOS, a launchd
//! daemon on nix-darwin) runs as root.
//!
//! 1. Ingest the system spool into the system's ledger (`/var/lib/nix-ledger/
//!    ledger.sqlite`): the hook runs as root inside nix-daemon, so that spool has every
//!    user's builds with their build-log timings, and root's garbage collection can
//!    price any user's build.
//! 2. Rotate the system spool once it is larger than a limit, so that it does not grow
//!    without bound: rename it to `spool.jsonl.1` (keeping a few older ones), log the
//!    rotation, and let the hook start a new file. A user's ledger that had not read the
//!    old file to its end finds the rest by the file's id ([`crate::ledger::ingest`]);
//!    one that fell behind by more rotations than are kept loses records, and `doctor`
//!    says so.
//! 3. Settle garbage collections a killed run left behind.
//! 4. When a retention policy is given and its last run is old enough, apply it.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Serialize;

use crate::gc::execute::{self, ExecOptions, Outcome};
use crate::gc::plan;
use crate::gc::policy::Policy;
use crate::gc::snapshot::Snapshot;
use crate::ledger::ingest::{self, IngestReport};
use crate::ledger::{enrich, Ledger};
use crate::nix::config;
use crate::paths::Layout;
use crate::spool::{self, Rotation};
use crate::time::now_ms;
use crate::{Error, Result};

/// Rotate the system spool beyond this size unless told otherwise.
pub const DEFAULT_ROTATE_BYTES: u64 = 16 << 20;
/// Rotated files kept unless told otherwise (`spool.jsonl.1`, `.2`).
pub const DEFAULT_KEEP_ROTATED: usize = 2;

/// What to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub rotate_bytes: u64,
    pub keep_rotated: usize,
    /// The retention policy to apply, if any.
    pub retention: Option<Policy>,
    /// Apply it only when the last maintenance run of it started this long ago.
    pub retention_every_ms: i64,
    pub batch_paths: usize,
}

/// A rotation done.
#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    pub file_id: String,
    pub bytes: u64,
    pub to: String,
}

/// What the job did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ledger: String,
    pub ingested: IngestReport,
    pub rotated: Option<Rotated>,
    /// GC runs found interrupted and settled.
    pub settled_runs: Vec<i64>,
    /// Why the retention policy was not applied, when it was not.
    pub retention_skipped: Option<String>,
    pub retention: Option<Outcome>,
}

/// Rotates `spool` when it is at least `limit` bytes: returns what was rotated.
pub fn rotate(spool: &Path, limit: u64, keep: usize) -> Result<Option<Rotated>> {
    let meta = match std::fs::metadata(spool) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                path: spool.to_path_buf(),
                source,
            })
        }
    };
    if meta.len() < limit || keep == 0 {
        return Ok(None);
    }
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    let keep = keep.min(spool::MAX_ROTATED);
    for n in (1..keep).rev() {
        let from = spool::rotated_path(spool, n);
        if from.exists() {
            let to = spool::rotated_path(spool, n + 1);
            std::fs::rename(&from, &to).map_err(write_err(&to))?;
        }
    }
    let to = spool::rotated_path(spool, 1);
    let rotation = Rotation {
        file_id: spool::file_id(&meta),
        bytes: meta.len(),
        rotated_ms: now_ms(),
    };
    // Logged first: a ledger must never find its file gone without a record of it.
    let log = spool::rotations_log(spool);
    let mut line = serde_json::to_vec(&rotation).unwrap_or_default();
    line.push(b'\n');
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(&log)
        .map_err(write_err(&log))?;
    std::io::Write::write_all(&mut file, &line).map_err(write_err(&log))?;
    std::fs::rename(spool, &to).map_err(write_err(&to))?;
    // The new spool exists at once, world-readable whatever the umask of the hook that
    // would otherwise create it; a hook that got there first made it already.
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(spool)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(Error::Write {
                path: spool.to_path_buf(),
                source,
            })
        }
    }
    Ok(Some(Rotated {
        file_id: rotation.file_id,
        bytes: rotation.bytes,
        to: to.display().to_string(),
    }))
}

/// Runs the job on the system's layout.
pub fn run(layout: &Layout, opts: &Options) -> Result<Report> {
    let mut ledger = Ledger::open(&layout.ledger)?;
    let mut ingested = ingest::ingest_all(&mut ledger, &layout.spools)?;
    ingested.enriched = enrich::enrich_pending(&mut ledger)?;
    let mut rotated = None;
    if let Some(spool) = layout.spools.first() {
        rotated = rotate(spool, opts.rotate_bytes, opts.keep_rotated)?;
        if rotated.is_some() {
            // A hook that opened the spool just before the rename wrote into the rotated
            // file: take that line now, while the file is the newest rotated one.
            ingest::ingest_all(&mut ledger, &layout.spools)?;
        }
    }
    let settled_runs = execute::reconcile(&mut ledger)?;
    let mut report = Report {
        ledger: layout.ledger.display().to_string(),
        ingested,
        rotated,
        settled_runs,
        retention_skipped: None,
        retention: None,
    };
    let Some(policy) = &opts.retention else {
        return Ok(report);
    };
    if let Some(last) = ledger.last_gc_run_ms("maintenance")? {
        let due = last.saturating_add(opts.retention_every_ms);
        if now_ms() < due {
            report.retention_skipped = Some(format!(
                "the last retention run started {}; the next is due at {}",
                crate::time::rfc3339_ms(last),
                crate::time::rfc3339_ms(due)
            ));
            return Ok(report);
        }
    }
    let settings = config::settings(&layout.state_dir);
    let snap = Snapshot::take(&settings)?;
    let plan = plan::plan(&mut ledger, &snap, &settings, policy, true, now_ms())?;
    let outcome = execute::execute(
        &mut ledger,
        &plan,
        &settings,
        &ExecOptions {
            batch_paths: opts.batch_paths,
            trigger: "maintenance",
            revalidate: false,
        },
    )?;
    report.retention = Some(outcome);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_files_and_logs_each() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool.jsonl");
        assert!(
            rotate(&spool, 10, 2).unwrap().is_none(),
            "no spool, nothing to do"
        );
        let mut ids = Vec::new();
        for round in 0..3 {
            std::fs::write(&spool, format!("{round} a line long enough\n")).unwrap();
            assert!(rotate(&spool, 1 << 20, 2).unwrap().is_none(), "small: kept");
            let r = rotate(&spool, 10, 2).unwrap().unwrap();
            ids.push(r.file_id);
            assert_eq!(
                std::fs::metadata(&spool).unwrap().len(),
                0,
                "a new, empty spool"
            );
        }
        let one = std::fs::read_to_string(spool::rotated_path(&spool, 1)).unwrap();
        let two = std::fs::read_to_string(spool::rotated_path(&spool, 2)).unwrap();
        assert!(
            one.starts_with("2 ") && two.starts_with("1 "),
            "{one} {two}"
        );
        assert!(
            !spool::rotated_path(&spool, 3).exists(),
            "only two are kept"
        );
        let log: Vec<Rotation> = std::fs::read_to_string(spool::rotations_log(&spool))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            log.iter().map(|r| r.file_id.clone()).collect::<Vec<_>>(),
            ids
        );
        assert!(log.iter().all(|r| r.bytes > 10));
    }
}
