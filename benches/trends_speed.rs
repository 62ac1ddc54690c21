//! `nix-ledger trends` and `report` on a ledger of 1,000,000 builds: the goal is under
//! 2 s each, as whole processes (docs/benchmarks.md).
//!
//! The ledger is synthetic and deterministic: 20,000 derivation names over two years
//! up to now, Zipf-like (a few built thousands of times, most a few times), 85 % built,
//! 10 % substituted, 5 % failed, a new .drv for 9 builds in 10, a new version now and
//! then, one or two outputs each, 50,000 sessions of 20 builds with evaluation times.
//! It is written with the schema `Ledger::open` creates, every column filled as
//! recording and enrichment fill it, and kept between runs.
//!
//! Run: `cargo bench --bench trends_speed` (optionally `-- --ledger DIR --runs N`; the
//! default DIR is /tmp/nix-ledger-bench-1m, about 900 MB).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use nix_ledger::ledger::Ledger;
use nix_ledger::nix::name::series_of;
use rusqlite::{params, Connection};

#[path = "../tests/integration/sim.rs"]
mod sim;
use sim::{hash_of, Rng};

type Res<T> = Result<T, String>;

const BUILDS: usize = 1_000_000;
const SERIES: usize = 20_000;
const PER_SESSION: usize = 20;
const SPAN_MS: i64 = 730 * 86_400_000;

fn main() {
    if let Err(e) = run() {
        eprintln!("trends_speed bench: {e}");
        std::process::exit(1);
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn run() -> Res<()> {
    let dir = PathBuf::from(arg("--ledger").unwrap_or_else(|| "/tmp/nix-ledger-bench-1m".into()));
    let runs: usize = arg("--runs").map_or(Ok(3), |n| n.parse().map_err(|_| "--runs N"))?;
    let ledger = dir.join("ledger.sqlite");
    let first_report = builds_in(&ledger) != Some(BUILDS as i64);
    if first_report {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let t = Instant::now();
        generate(&ledger)?;
        println!(
            "generated {} in {:.0} s",
            ledger.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let size = std::fs::metadata(&ledger).map(|m| m.len()).unwrap_or(0);
    println!(
        "ledger: {} builds, {} MB; {} runs each; {} CPUs",
        BUILDS,
        size >> 20,
        runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("\n| command | wall min | wall median | wall max | output |");
    println!("|---|---|---|---|---|");
    // The first report judges every rebuild of its period once and keeps the verdicts
    // (why::rebuilds::remembered); timed on its own, once.
    if first_report {
        time_command(&dir, &["report", "--format", "json"], 1)?;
        println!("| (the first report above judged the period's rebuilds) | | | | |");
    }
    for args in [
        &["trends"][..],
        &["trends", "--json"],
        &["trends", "--since", "90d", "--json"],
        &["trends", "pkg7"],
        &["report"],
        &["report", "--format", "json"],
        &["report", "--format", "markdown"],
        &["report", "--format", "html"],
        &["report", "--since", "7d", "--format", "html"],
    ] {
        time_command(&dir, args, runs)?;
    }
    Ok(())
}

/// How many builds the ledger at `path` holds, if it is one.
fn builds_in(path: &Path) -> Option<i64> {
    let conn =
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.query_row("SELECT count(*) FROM builds", [], |r| r.get(0))
        .ok()
}

fn time_command(dir: &Path, args: &[&str], runs: usize) -> Res<()> {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_nix-ledger"))
            .args(args)
            .env("NIX_LEDGER_HOME", dir)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("nix-ledger: {e}"))?;
        times.push(t.elapsed().as_secs_f64());
        if !out.status.success() {
            return Err(format!("nix-ledger {args:?}: {}", out.status));
        }
        bytes = out.stdout.len();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "| `nb {}` | {:.2} s | {:.2} s | {:.2} s | {} KiB |",
        args.join(" "),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        bytes >> 10
    );
    Ok(())
}

/// One derivation name's character.
struct Kind {
    base: String,
    suffix: &'static str,
    duration_ms: f64,
    cv: f64,
    rss: f64,
    output: f64,
}

fn generate(path: &Path) -> Res<()> {
    drop(Ledger::open(path).map_err(|e| e.to_string())?);
    let mut conn = Connection::open(path).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(42);
    let kinds: Vec<Kind> = (0..SERIES)
        .map(|i| Kind {
            base: match i % 10 {
                0 => format!("python3.11-pkg{i}"),
                1 => format!("perl5.38.2-Pkg{i}"),
                _ => format!("pkg{i}"),
            },
            suffix: match i % 17 {
                0 => ".tar.gz",
                5 => "-env",
                _ => "",
            },
            duration_ms: (rng.normal() * 2.0 + 9.0).exp().clamp(20.0, 4.0 * 3600e3),
            cv: 0.05 + 0.1 * rng.uniform(),
            rss: (rng.normal() * 1.2 + 18.5).exp(),
            output: (rng.normal() * 2.0 + 14.0).exp(),
        })
        .collect();
    // Zipf-like popularity, sampled through cumulative weights.
    let weights: Vec<f64> = (0..SERIES)
        .map(|i| 1.0 / (i as f64 + 1.0).powf(0.7))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(SERIES);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cumulative.push(acc);
    }
    let now = nix_ledger::time::now_ms();
    let start = now - SPAN_MS;
    let sessions = BUILDS.div_ceil(PER_SESSION);
    let mut versions = vec![0u32; SERIES];
    let mut last_drv: Vec<Option<String>> = vec![None; SERIES];
    let mut series_ids: HashMap<String, i64> = HashMap::new();
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    {
        let e = |e: rusqlite::Error| e.to_string();
        let mut series = tx
            .prepare("INSERT INTO series (key) VALUES (?1)")
            .map_err(e)?;
        let mut drv_row = tx
            .prepare(
                "INSERT OR IGNORE INTO derivations (drv_path, name, system, first_seen_ms)
                 VALUES (?1, ?2, 'x86_64-linux', ?3)",
            )
            .map_err(e)?;
        let mut session_row = tx
            .prepare(
                "INSERT INTO sessions (id, kind, command, started_ms, finished_ms, status,
                     exit_code, built_count, substituted_count, failed_count, downloaded_bytes,
                     host_memory_bytes, host_cores, eval_ms, ifd_ms, eval_fetches)
                 VALUES (?1, 'build', '[\"nix\",\"build\"]', ?2, ?3, 'succeeded', 0, ?4, ?5, ?6,
                     ?7, 25769803776, 8, ?8, 0, 0)",
            )
            .map_err(e)?;
        let mut build_row = tx
            .prepare(
                "INSERT INTO builds (id, drv_path, session_id, source, status, started_ms,
                     finished_ms, duration_ms, timing_source, peak_rss_bytes, enriched_ms,
                     series_id, version, output_nar_bytes)
                 VALUES (?1, ?2, ?3, 'wrapper', ?4, ?5, ?6, ?7, 'wrapper', ?8, ?6, ?9, ?10, ?11)",
            )
            .map_err(e)?;
        let mut output_row = tx
            .prepare("INSERT INTO build_outputs (build_id, output_name, path) VALUES (?1, ?2, ?3)")
            .map_err(e)?;
        let mut path_row = tx
            .prepare(
                "INSERT OR IGNORE INTO store_paths (path, drv_path, nar_size, registered_ms,
                     locally_built, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?4)",
            )
            .map_err(e)?;
        // Sessions first: builds refer to them.
        for s in 0..sessions {
            let t0 = start + SPAN_MS * s as i64 / sessions as i64;
            let eval = (rng.normal() * 1.5 + 7.0).exp() as i64;
            session_row
                .execute(params![s as i64 + 1, t0, t0 + 1, 0, 0, 0, 0, eval])
                .map_err(e)?;
        }
        let mut id = 0i64;
        let mut serial = 0u64;
        for s in 0..sessions {
            let t0 = start + SPAN_MS * s as i64 / sessions as i64;
            let mut t = t0 + 2_000;
            let (mut built, mut substituted, mut failed, mut downloaded) = (0i64, 0i64, 0i64, 0i64);
            for _ in 0..PER_SESSION {
                if id as usize >= BUILDS {
                    break;
                }
                id += 1;
                let u = rng.uniform();
                let k = cumulative.partition_point(|&c| c < u).min(SERIES - 1);
                let kind = &kinds[k];
                if rng.uniform() < 0.01 {
                    versions[k] += 1;
                }
                let full = format!(
                    "{}-{}.{}{}",
                    kind.base,
                    1 + versions[k] / 10,
                    versions[k] % 10,
                    kind.suffix
                );
                let drv = match (&last_drv[k], rng.uniform() < 0.9) {
                    (Some(d), false) => d.clone(),
                    _ => {
                        serial += 1;
                        format!("/nix/store/{}-{full}.drv", hash_of(serial))
                    }
                };
                last_drv[k] = Some(drv.clone());
                drv_row.execute(params![drv, full, t]).map_err(e)?;
                let named = series_of(&full);
                let series_id = match series_ids.get(&named.key) {
                    Some(&id) => id,
                    None => {
                        series.execute([&named.key]).map_err(e)?;
                        let id = tx.last_insert_rowid();
                        series_ids.insert(named.key.clone(), id);
                        id
                    }
                };
                let r = rng.uniform();
                let status = match r {
                    r if r < 0.85 => "built",
                    r if r < 0.95 => "substituted",
                    _ => "failed",
                };
                let took = (kind.duration_ms * rng.lognormal_cv(kind.cv)) as i64;
                let (took, rss) = match status {
                    "built" => (took, Some((kind.rss * rng.lognormal_cv(0.05)) as i64)),
                    "failed" => (took / 3, None),
                    _ => (took / 20, None),
                };
                let finished = t + took;
                let outputs: &[&str] = if k % 5 == 0 {
                    &["out", "dev"]
                } else {
                    &["out"]
                };
                let hash = {
                    serial += 1;
                    hash_of(serial)
                };
                let mut size_sum = 0i64;
                let mut paths = Vec::new();
                if status != "failed" {
                    for o in outputs {
                        let p = match *o {
                            "out" => format!("/nix/store/{hash}-{full}"),
                            other => format!("/nix/store/{hash}-{full}-{other}"),
                        };
                        let size = (kind.output * if *o == "out" { 1.0 } else { 0.1 }) as i64;
                        size_sum += size;
                        paths.push((*o, p, size));
                    }
                }
                build_row
                    .execute(params![
                        id,
                        drv,
                        s as i64 + 1,
                        status,
                        t,
                        finished,
                        took,
                        rss,
                        series_id,
                        named.version,
                        (status == "built").then_some(size_sum)
                    ])
                    .map_err(e)?;
                for (o, p, size) in paths {
                    output_row.execute(params![id, o, p]).map_err(e)?;
                    path_row
                        .execute(params![
                            p,
                            drv,
                            size,
                            finished,
                            i64::from(status == "built")
                        ])
                        .map_err(e)?;
                    if status == "substituted" {
                        downloaded += size / 3;
                    }
                }
                match status {
                    "built" => built += 1,
                    "substituted" => substituted += 1,
                    _ => failed += 1,
                }
                t = finished + 50;
            }
            tx.execute(
                "UPDATE sessions SET finished_ms = ?2, built_count = ?3, substituted_count = ?4,
                     failed_count = ?5, downloaded_bytes = ?6 WHERE id = ?1",
                params![s as i64 + 1, t, built, substituted, failed, downloaded],
            )
            .map_err(e)?;
        }
    }
    tx.commit().map_err(|e| e.to_string())?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")
        .map_err(|e| e.to_string())
}
