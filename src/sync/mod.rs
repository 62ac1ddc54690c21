//! `nix-ledger sync [URL]`: a fleet hub on PostgreSQL. Pushes this ledger's sessions,
//! builds and outputs the hub lacks (new rows, and rows changed since their push), then
//! pulls the other machines' into the local ledger, each tagged with the machine that
//! recorded it ([`crate::machine`]). With `--with-why`, the .drv snapshots and manifests
//! `why` needs travel too; otherwise they stay local.
//!
//! Idempotent and resumable: the hub keeps each row once by (ledger id, local id), and a
//! newer revision replaces an older one; locally, a batch is marked pushed only after the
//! hub committed it, and pulled rows are stored with their watermark in one transaction.
//! A sync cut off anywhere and run again pushes at most a batch twice (the hub keeps it
//! once) and pulls on from the last stored watermark.
//!
//! Nothing is written locally before the hub answered: a wrong password or a stopped
//! server leaves the ledger as it was (exit code [`crate::exit::HUB`]).
//!
//! - [`conninfo`]: the URL and libpq's conventions (PG* variables, ~/.pgpass, sslmode).
//! - [`tls`]: rustls for each sslmode.
//! - [`hub`]: the connection, the hub's migrations, COPY in and out.

pub mod conninfo;
pub mod hub;
pub mod tls;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ledger::fleet::{Stream, WhyRow};
use crate::ledger::{enrich, ingest, Ledger};
use crate::paths::Layout;
use crate::time::now_ms;
use crate::{Error, Result};
use conninfo::ConnInfo;
use hub::Hub;

/// Rows per COPY batch, one hub transaction and one local transaction each.
pub const BATCH: usize = 25_000;

/// Snapshots and manifests stored this long before the last push are pushed again (the
/// hub keeps them once): a ledger transaction that took its time stamp before the last
/// sync may have committed after it.
const WHY_OVERLAP_MS: i64 = 10 * 60 * 1000;

/// What to sync, and how.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// The hub: a `postgres://` URL or `key=value` string; `None`: the PG* variables.
    pub url: Option<String>,
    /// A file whose first line is the password (NixOS's `passwordFile`).
    pub password_file: Option<PathBuf>,
    /// Also push and pull .drv snapshots and manifests.
    pub with_why: bool,
    /// The longest any one statement or COPY batch may take.
    pub timeout: Duration,
    /// Rows per batch.
    pub batch: usize,
}

/// What a sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// The hub, without its password.
    pub hub: String,
    /// This machine's name on it.
    pub machine: String,
    pub pushed_sessions: usize,
    pub pushed_builds: usize,
    pub pulled_sessions: usize,
    pub pulled_builds: usize,
    pub pushed_why: usize,
    pub pulled_why: usize,
    pub seconds: f64,
}

/// Syncs the ledger of `layout` with the hub of `req`.
pub fn sync(layout: &Layout, req: &SyncRequest) -> Result<SyncReport> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let info = ConnInfo::resolve(
        req.url.as_deref(),
        req.password_file.as_deref(),
        &|k| std::env::var(k).ok(),
        home.as_deref(),
    )?;
    let mut ledger = Ledger::open(&layout.ledger)?;
    ledger.for_bulk_writes()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(run(layout, req, &info, &mut ledger))
}

async fn run(
    layout: &Layout,
    req: &SyncRequest,
    info: &ConnInfo,
    ledger: &mut Ledger,
) -> Result<SyncReport> {
    let started = Instant::now();
    let started_ms = now_ms();
    let machine = crate::machine::this_machine();
    let hub = Hub::connect(info, req.timeout).await?;
    let me = ledger.ledger_id()?;
    let hub_id = hub.register(&me, &machine).await?;
    // The hub answered: now bring the ledger up to date, then sync.
    ingest::ingest_all(ledger, &layout.spools)?;
    enrich::enrich_pending(ledger)?;
    let marks = ledger.begin_sync(&hub_id)?;
    let batch = req.batch.max(1);
    let mut report = SyncReport {
        hub: info.display(),
        machine: machine.clone(),
        ..SyncReport::default()
    };

    let mut after = 0;
    loop {
        let rows = ledger.sessions_to_push(after, batch)?;
        let Some(last) = rows.last() else { break };
        after = last.local_id;
        hub.push_sessions(&me, &machine, &rows).await?;
        let pushed: Vec<(i64, i64)> = rows.iter().map(|r| (r.local_id, r.rev)).collect();
        ledger.mark_pushed(true, &pushed)?;
        report.pushed_sessions += rows.len();
    }
    let mut after = 0;
    loop {
        let rows = ledger.builds_to_push(after, batch)?;
        let Some(last) = rows.last() else { break };
        after = last.local_id;
        hub.push_builds(&me, &machine, &rows).await?;
        let pushed: Vec<(i64, i64)> = rows.iter().map(|r| (r.local_id, r.rev)).collect();
        ledger.mark_pushed(false, &pushed)?;
        report.pushed_builds += rows.len();
    }
    if req.with_why {
        let since = ledger
            .why_pushed_ms(&hub_id)?
            .saturating_sub(WHY_OVERLAP_MS);
        for manifests in [false, true] {
            let mut after = String::new();
            loop {
                let rows = ledger.why_to_push(manifests, since, &after, batch)?;
                let Some(last) = rows.last() else { break };
                after = match last {
                    WhyRow::Snapshot { drv_path, .. } => drv_path.clone(),
                    WhyRow::Manifest { store_path, .. } => store_path.clone(),
                };
                hub.push_why(&me, &rows).await?;
                report.pushed_why += rows.len();
            }
        }
        ledger.set_why_pushed_ms(&hub_id, started_ms)?;
    }

    let mut mark = marks[0];
    loop {
        let (rows, top) = hub.pull_sessions(&me, mark, batch).await?;
        if rows.is_empty() {
            break;
        }
        ledger.store_pulled_sessions(&hub_id, &rows, top)?;
        report.pulled_sessions += rows.len();
        mark = top;
    }
    let mut mark = marks[1];
    loop {
        let (rows, top) = hub.pull_builds(&me, mark, batch).await?;
        if rows.is_empty() {
            break;
        }
        ledger.store_pulled_builds(&hub_id, &rows, top)?;
        report.pulled_builds += rows.len();
        mark = top;
    }
    if req.with_why {
        for (stream, manifests, start) in [
            (Stream::Snapshots, false, marks[2]),
            (Stream::Manifests, true, marks[3]),
        ] {
            let mut mark = start;
            loop {
                let (rows, top) = hub.pull_why(&me, manifests, mark, batch).await?;
                if rows.is_empty() {
                    break;
                }
                ledger.store_pulled_why(&hub_id, stream, &rows, top)?;
                report.pulled_why += rows.len();
                mark = top;
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One line for people.
pub fn render(report: &SyncReport) -> String {
    let mut text = format!(
        "synced {} as {}: pushed {} sessions, {} builds; pulled {} sessions, {} builds",
        report.hub,
        report.machine,
        report.pushed_sessions,
        report.pushed_builds,
        report.pulled_sessions,
        report.pulled_builds
    );
    if report.pushed_why + report.pulled_why > 0 {
        text.push_str(&format!(
            "; snapshots and manifests: pushed {}, pulled {}",
            report.pushed_why, report.pulled_why
        ));
    }
    text.push_str(&format!(" ({:.1} s)\n", report.seconds));
    text
}
