//! Throughput of `nix-ledger sync` against a real PostgreSQL started for the run (the
//! tests' [`servers::TestPostgres`]): a ledger of `N` builds (default 1,000,000, each
//! with one output) pushed to an empty hub, then pulled by a second, empty ledger; then
//! both again, with nothing to do.
//!
//! `cargo bench --bench sync`; `N=…` sets the number of builds. Results go to stdout as
//! Markdown table rows for docs/benchmarks.md.

#[path = "../tests/integration/servers.rs"]
mod servers;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn ledger_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nix-ledger")
}

/// A ledger of `n` builds in `home`, written straight into its SQLite file.
fn fill(home: &Path, n: usize) {
    let status = Command::new(ledger_bin())
        .arg("ingest")
        .env("NIX_LEDGER_HOME", home)
        .status()
        .expect("nix-ledger ingest");
    assert!(status.success());
    let mut conn = rusqlite::Connection::open(home.join("ledger.sqlite")).expect("ledger");
    let tx = conn.transaction().expect("transaction");
    {
        let mut drv = tx
            .prepare(
                "INSERT INTO derivations (drv_path, name, system, first_seen_ms)
                 VALUES (?1, ?2, 'x86_64-linux', ?3)",
            )
            .expect("prepare");
        let mut build = tx
            .prepare(
                "INSERT INTO builds (drv_path, source, status, started_ms, finished_ms,
                     duration_ms, timing_source, peak_rss_bytes, cpu_user_ms, cpu_system_ms,
                     log_lines, enriched_ms)
                 VALUES (?1, 'wrapper', 'built', ?2, ?3, 1000, 'wrapper', 104857600, 800, 100, 12, ?3)",
            )
            .expect("prepare");
        let mut output = tx
            .prepare(
                "INSERT INTO build_outputs (build_id, output_name, path) VALUES (?1, 'out', ?2)",
            )
            .expect("prepare");
        for i in 0..n {
            let path = format!("/nix/store/{i:032}-bench-package-{}", i % 5000);
            let t = 1_700_000_000_000i64 + i as i64 * 1000;
            drv.execute(rusqlite::params![
                format!("{path}.drv"),
                format!("bench-package-{}", i % 5000),
                t
            ])
            .expect("derivation");
            build
                .execute(rusqlite::params![format!("{path}.drv"), t - 1000, t])
                .expect("build");
            output
                .execute(rusqlite::params![tx.last_insert_rowid(), path])
                .expect("output");
        }
    }
    tx.commit().expect("commit");
}

/// One sync of the ledger in `home` as `machine`: its wall time and JSON report.
fn sync(pg: &servers::TestPostgres, home: &Path, machine: &str) -> (f64, serde_json::Value) {
    let started = Instant::now();
    let out = Command::new(ledger_bin())
        .args(["sync", &pg.url(), "--json"])
        .env("NIX_LEDGER_HOME", home)
        .env("NIX_LEDGER_MACHINE", machine)
        .env("PGPASSWORD", &pg.password)
        .output()
        .expect("nix-ledger sync");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (secs, serde_json::from_slice(&out.stdout).expect("report"))
}

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let pg = servers::TestPostgres::start();
    let (a, b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let started = Instant::now();
    fill(a.path(), n);
    eprintln!(
        "filled a ledger with {n} builds in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("| operation | builds | wall time | builds/s |");
    println!("| --- | ---: | ---: | ---: |");
    let row = |what: &str, (secs, report): (f64, serde_json::Value), key: &str| {
        let moved = report[key].as_u64().unwrap_or(0);
        println!(
            "| {what} | {moved} | {secs:.1} s | {:.0} |",
            moved as f64 / secs
        );
        moved
    };
    assert_eq!(
        row(
            "push to an empty hub",
            sync(&pg, a.path(), "alpha"),
            "pushed_builds"
        ),
        n as u64
    );
    assert_eq!(
        row(
            "pull into an empty ledger",
            sync(&pg, b.path(), "beta"),
            "pulled_builds"
        ),
        n as u64
    );
    row(
        "push again, nothing new",
        sync(&pg, a.path(), "alpha"),
        "pushed_builds",
    );
    row(
        "pull again, nothing new",
        sync(&pg, b.path(), "beta"),
        "pulled_builds",
    );
}
