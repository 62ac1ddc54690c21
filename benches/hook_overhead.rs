//! What the post-build-hook costs a build, measured side by side in one run.
//!
//! 1. Wall time of `nix-build` of the 200-derivation example graph (`-j 2`, a fresh salt
//!    every run) with `nix-ledger-hook` as the hook versus `/bin/true`, alternating
//!    (plus no hook at all, for scale). Target: ours / `/bin/true` at most 1.03.
//! 2. The hook's own latency, exec to exit, p50/p99 over many calls with a real
//!    multi-output .drv, versus exec'ing `/bin/true` the same way.
//!
//! Run: `cargo bench --bench hook_overhead` (`ROUNDS=N` and `CALLS=N` to change the size).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn graph() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/graph.nix")
}

fn build_graph(salt: &str, hook: &str, home: &Path) -> Duration {
    let start = Instant::now();
    let status = Command::new("nix-build")
        .arg(graph())
        .args(["--argstr", "salt", salt, "--arg", "n", "200", "-j", "2"])
        .args(["--no-out-link", "--option", "substituters", ""])
        .args(["--option", "post-build-hook", hook])
        .env("NIX_LEDGER_HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let elapsed = start.elapsed();
    match status {
        Ok(s) if s.success() => elapsed,
        other => {
            eprintln!("nix-build failed: {other:?}");
            std::process::exit(1);
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn exec_latencies(program: &str, drv: &str, home: &Path, calls: usize) -> Vec<f64> {
    let mut times: Vec<f64> = (0..calls)
        .map(|_| {
            let start = Instant::now();
            let status = Command::new(program)
                .env("DRV_PATH", drv)
                .env("OUT_PATHS", "")
                .env("NIX_LEDGER_HOME", home)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let elapsed = start.elapsed().as_secs_f64() * 1e3;
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("{program} failed: {status:?}");
                std::process::exit(1);
            }
            elapsed
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times
}

fn main() {
    let hook = env!("CARGO_BIN_EXE_nix-ledger-hook");
    let rounds = env_usize("ROUNDS", 5);
    let calls = env_usize("CALLS", 2000);
    let home = tempfile::tempdir().unwrap_or_else(|e| {
        eprintln!("tempdir: {e}");
        std::process::exit(1)
    });
    let run_id = std::process::id();

    // Warm up Nix's evaluator and the store once.
    build_graph(&format!("bench-warmup-{run_id}"), "", home.path());

    let (mut none, mut truth, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate the order each round so drift (page cache, store growth) is shared.
        let order: [&str; 3] = if round % 2 == 0 {
            ["true", "ours", "none"]
        } else {
            ["ours", "true", "none"]
        };
        for which in order {
            let salt = format!("bench-{run_id}-{round}-{which}");
            let (hook_prog, list) = match which {
                "true" => ("/bin/true", &mut truth),
                "ours" => (hook, &mut ours),
                _ => ("", &mut none),
            };
            let t = build_graph(&salt, hook_prog, home.path()).as_secs_f64();
            eprintln!("round {round} {which:>4}: {t:.3} s");
            list.push(t);
        }
    }
    // Each round's own ratio too: the pair ran back to back, so drift cancels best there.
    let mut paired: Vec<f64> = ours.iter().zip(&truth).map(|(o, t)| o / t).collect();
    let m_paired = median(&mut paired);
    let (m_none, m_true, m_ours) = (median(&mut none), median(&mut truth), median(&mut ours));
    println!("200-derivation graph, -j 2, {rounds} rounds alternating, median wall time:");
    println!("  no hook            {m_none:.3} s");
    println!("  /bin/true as hook  {m_true:.3} s");
    println!("  nix-ledger-hook    {m_ours:.3} s");
    println!(
        "  ratio ours / true  {:.3} (of the medians)",
        m_ours / m_true
    );
    println!(
        "  ratio ours / true  {m_paired:.3} (median of the per-round ratios, min {:.3}, max {:.3})",
        paired[0],
        paired[paired.len() - 1]
    );

    // Latency of one hook call: a real multi-output .drv from the graph above.
    let drv_out = Command::new("nix-instantiate")
        .arg(graph())
        .args([
            "--argstr",
            "salt",
            &format!("bench-warmup-{run_id}"),
            "--arg",
            "n",
            "6",
        ])
        .output();
    let drv = match drv_out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(5)
            .unwrap_or_default()
            .to_string(),
        other => {
            eprintln!("nix-instantiate failed: {other:?}");
            std::process::exit(1);
        }
    };
    let lat_home = tempfile::tempdir().unwrap_or_else(|e| {
        eprintln!("tempdir: {e}");
        std::process::exit(1)
    });
    let mut ours_lat = Vec::new();
    let mut true_lat = Vec::new();
    for _ in 0..4 {
        ours_lat.extend(exec_latencies(hook, &drv, lat_home.path(), calls / 4));
        true_lat.extend(exec_latencies(
            "/bin/true",
            &drv,
            lat_home.path(),
            calls / 4,
        ));
    }
    ours_lat.sort_by(|a, b| a.total_cmp(b));
    true_lat.sort_by(|a, b| a.total_cmp(b));
    println!("hook latency, exec to exit, {calls} calls each, alternating blocks:");
    println!(
        "  nix-ledger-hook  p50 {:.3} ms  p99 {:.3} ms",
        percentile(&ours_lat, 0.5),
        percentile(&ours_lat, 0.99)
    );
    println!(
        "  /bin/true        p50 {:.3} ms  p99 {:.3} ms",
        percentile(&true_lat, 0.5),
        percentile(&true_lat, 0.99)
    );
    let lines = std::fs::read_to_string(lat_home.path().join("spool.jsonl"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    println!("  spool lines written: {lines} (expected {calls})");
}
