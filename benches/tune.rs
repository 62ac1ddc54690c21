//! The timing goals of `nb tune` (issue #10), against the real Nix on the mixed workload
//! of `tests/fixtures/tune.nix`:
//!
//! 1. `sweep`: the whole sweep on a generated 2,000-derivation workload (goal: < 1 s).
//! 2. `grid`: the workload recorded once with `nb build` at `REC` (default `1:0`, Nix's
//!    default: not the best setting), then built for real at max-jobs {1, 2, 4, 8} ×
//!    cores {1, 2} and 1 × 0, `REPEATS` times in a shuffled order, each into a second
//!    ledger; `nb tune --sessions 1` on the recording alone predicts each (goal: within
//!    15% of the measured makespan), and its pick is built `REPEATS` times (goal: within
//!    5% of the fastest measured setting, and faster than Nix's default 1 × 0).
//! 3. `memory` (root, cgroup v1): under a cap of `MEM_CAP` (1536M), max-jobs 4 is
//!    OOM-killed and `nb tune --memory MEM_CAP`'s pick builds.
//! 4. `eta`: the 30-derivation workload recorded at `ETA_AT` (default `2:1`), then
//!    rebuilt `REPEATS` times; the ETA on the plain lines when 25%, 50% and 75% of the
//!    builds are done against the real remaining time (goal: within 20%).
//!
//! `cargo bench --bench tune [-- SECTION…]`; `SCALE` (percent of the fixture's work,
//! default 100). The makespan is measured as the wrapper recorded it: from the first
//! build's start to the last one's end (evaluation and Nix's start-up excluded), which is
//! what `tune` predicts. Builds run with `build-users-group = ''` unless `BUILD_USERS=1`:
//! on a machine where other Nix processes (other state directories) build too, they kill
//! each other's `nixbld` builders (see docs/benchmarks.md). Every run reports the load
//! the rest of the machine put on it: results are only meaningful when that is ~0.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use nix_ledger::tune::grid::SweepConfig;
use nix_ledger::tune::model::Profile;
use nix_ledger::tune::sweep::{sweep, Input};
use nix_ledger::tune::workload::{JobSpec, Workload};

type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    let result = (|| -> Res<()> {
        let tmp = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        println!("| benchmark | measured | result |\n|---|---|---|");
        if want("sweep") {
            bench_sweep()?;
        }
        if want("grid") {
            bench_grid(tmp.path())?;
        }
        if want("memory") {
            bench_memory(tmp.path())?;
        }
        if want("eta") {
            bench_eta(tmp.path())?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("tune bench: {e}");
        std::process::exit(1);
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn repeats() -> usize {
    env_or("REPEATS", "1").parse().unwrap_or(1).max(1)
}

fn setting(text: &str) -> Res<(u32, u32)> {
    let (j, c) = text.split_once(':').ok_or(format!("{text}: not J:C"))?;
    Ok((
        j.parse().map_err(|_| format!("{text}: not J:C"))?,
        c.parse().map_err(|_| format!("{text}: not J:C"))?,
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A generated nixpkgs-like DAG: each job depends on up to 4 earlier ones, mostly near
/// it; serial, parallel, idle-heavy and memory-heavy builds mixed.
fn generated(n: usize, seed: u64) -> Res<Workload> {
    let mut s = seed;
    let mut rnd = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    };
    let jobs = (0..n)
        .map(|i| {
            let ndeps = if i == 0 { 0 } else { (rnd() % 5) as usize };
            let deps: Vec<usize> = (0..ndeps)
                .map(|_| i.saturating_sub(1 + (rnd() % 200) as usize))
                .filter(|&d| d < i)
                .collect();
            let base = 500.0 + (rnd() % 60_000) as f64;
            let profile = match rnd() % 4 {
                0 => Profile::new(base * 0.1, base, 0.0, 50 << 20),
                1 => Profile::new(
                    base * 0.05,
                    base * 0.2,
                    base * 3.0,
                    (200 + rnd() % 800) << 20,
                ),
                2 => Profile::new(base, base * 0.05, 0.0, 20 << 20),
                _ => Profile::new(base * 0.2, base * 0.5, base, (500 + rnd() % 3000) << 20),
            };
            JobSpec::new(format!("pkg{i}-1.{}", rnd() % 10), deps, profile)
        })
        .collect();
    Workload::new(jobs).map_err(|e| e.to_string())
}

fn bench_sweep() -> Res<()> {
    let w = generated(2000, 42)?;
    let estimated = vec![false; w.len()];
    let here = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    for (host, budget) in [
        (here, 24u64 << 30),
        (here, 6 << 30),
        (4, 64 << 30),
        (8, 64 << 30),
    ] {
        let mut cfg = SweepConfig::new(host);
        cfg.memory_budget_bytes = Some(budget);
        cfg.loop_ms_per_build = 10.0;
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..5 {
            let t = Instant::now();
            let r = sweep(
                &[Input {
                    workload: &w,
                    estimated: &estimated,
                }],
                &cfg,
                &[],
            )
            .map_err(|e| e.to_string())?;
            times.push(t.elapsed().as_secs_f64());
            last = Some(r);
        }
        let r = last.ok_or("no sweep")?;
        let best = r
            .best
            .map(|b| format!("{} x {}", b.candidate.max_jobs, b.candidate.cores));
        let secs = median(times);
        let goal = if host == here {
            if secs < 1.0 {
                "< 1 s: **met**"
            } else {
                "< 1 s: **not met**"
            }
        } else {
            "(not a goal)"
        };
        println!(
            "| sweep, 2,000 derivations, {host} cores, budget {} GiB, {} candidates | median of 5: {secs:.3} s (pick {}) | {goal} |",
            budget >> 30,
            r.ranked.len(),
            best.unwrap_or_else(|| "none".into())
        );
    }
    Ok(())
}

/// Host busy CPU time from /proc/stat, in ms.
fn host_busy_ms() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let ticks: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    // SAFETY: sysconf only reads a configuration value.
    ticks * 1000.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tune.nix")
}

fn salt(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("tune-bench-{tag}-{nanos}")
}

/// `nb build` of the fixture at (max-jobs, cores) into the ledger at `home`.
fn nb_build(home: &Path, salt: &str, (j, c): (u32, u32), fixture_args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nix-ledger"));
    cmd.arg("build")
        .arg("-f")
        .arg(fixture())
        .args([
            "--argstr",
            "salt",
            salt,
            "--arg",
            "scale",
            &env_or("SCALE", "100"),
        ])
        .args(fixture_args)
        .args(["-j", &j.to_string(), "--cores", &c.to_string()])
        .args(["--no-link", "--option", "substituters", ""])
        .env("NIX_LEDGER_HOME", home);
    if env_or("BUILD_USERS", "0") != "1" {
        cmd.args(["--option", "build-users-group", ""]);
    }
    cmd
}

fn ledger_json(home: &Path, args: &[&str]) -> Res<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_nix-ledger"))
        .args(args)
        .env("NIX_LEDGER_HOME", home)
        .output()
        .map_err(|e| format!("nix-ledger: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nix-ledger {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("nix-ledger {args:?}: {e}"))
}

/// One real build: its makespan as recorded, and the load the rest of the host put on
/// it (cores).
struct Run {
    makespan_s: f64,
    outside: f64,
}

fn build(home: &Path, salt: &str, at: (u32, u32), fixture_args: &[&str]) -> Res<Run> {
    let busy0 = host_busy_ms();
    let t = Instant::now();
    let out = nb_build(home, salt, at, fixture_args)
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("nb build: {e}"))?;
    let wall_ms = t.elapsed().as_secs_f64() * 1000.0;
    let busy = host_busy_ms() - busy0;
    if !out.status.success() {
        return Err(format!(
            "nb build at {at:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let rows = ledger_json(
        home,
        &[
            "query",
            "--json",
            "SELECT max(finished_ms) - min(started_ms) AS span, sum(cpu_user_ms + cpu_system_ms) AS cpu
             FROM builds WHERE session_id = (SELECT max(id) FROM sessions)",
        ],
    )?;
    let span = rows[0]["span"].as_f64().ok_or("no span")?;
    let cpu = rows[0]["cpu"].as_f64().unwrap_or(0.0);
    let run = Run {
        makespan_s: span / 1000.0,
        outside: ((busy - cpu) / wall_ms).max(0.0),
    };
    eprintln!(
        "  built at {} x {}: {:.2} s (outside load {:.2} cores)",
        at.0, at.1, run.makespan_s, run.outside
    );
    Ok(run)
}

fn predicted_s(report: &Value, (j, c): (u32, u32)) -> Option<f64> {
    report["candidates"]
        .as_array()?
        .iter()
        .find(|x| x["max_jobs"] == j && x["cores"] == c)
        .and_then(|x| x["makespan_ms"].as_f64())
        .map(|ms| ms / 1000.0)
}

fn bench_grid(tmp: &Path) -> Res<()> {
    let rec_at = setting(&env_or("REC", "1:0"))?;
    let (rec_home, grid_home) = (tmp.join("rec"), tmp.join("grid"));
    let recorded = build(&rec_home, &salt("rec"), rec_at, &[])?;
    let report = ledger_json(&rec_home, &["tune", "--sessions", "1", "--json"])?;
    let settings = [
        (1, 0),
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
        (4, 1),
        (4, 2),
        (8, 1),
        (8, 2),
    ];
    let mut runs: Vec<Vec<Run>> = settings.iter().map(|_| Vec::new()).collect();
    let mut seed = std::process::id() as u64;
    for r in 0..repeats() {
        let mut order: Vec<usize> = (0..settings.len()).collect();
        for i in (1..order.len()).rev() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (seed >> 33) as usize % (i + 1));
        }
        for i in order {
            runs[i].push(build(
                &grid_home,
                &salt(&format!("g{r}-{i}")),
                settings[i],
                &[],
            )?);
        }
    }
    println!(
        "| recording at {} x {} | {:.2} s, outside load {:.2} | |",
        rec_at.0, rec_at.1, recorded.makespan_s, recorded.outside
    );
    let mut medians = Vec::new();
    let mut errors = Vec::new();
    for (i, s) in settings.iter().enumerate() {
        let measured = median(runs[i].iter().map(|r| r.makespan_s).collect());
        let load = runs[i].iter().map(|r| r.outside).sum::<f64>() / runs[i].len() as f64;
        let pred = predicted_s(&report, *s).ok_or("no prediction")?;
        // The same prediction with the outside load this setting's runs met.
        let loaded = ledger_json(
            &rec_home,
            &[
                "tune",
                "--sessions",
                "1",
                "--json",
                "--outside-load",
                &format!("{:.2}", load.min(1.9)),
            ],
        )
        .ok()
        .and_then(|r| predicted_s(&r, *s));
        let err = (pred - measured) / measured * 100.0;
        errors.push(err.abs());
        medians.push((*s, measured));
        println!(
            "| {} x {} | {measured:.2} s ({} runs, outside load {load:.2}) | predicted {pred:.2} s: {err:+.1}%{} |",
            s.0,
            s.1,
            runs[i].len(),
            loaded
                .map(|l| format!("; with that load {l:.2} s: {:+.1}%", (l - measured) / measured * 100.0))
                .unwrap_or_default()
        );
    }
    let worst = errors.iter().cloned().fold(0.0, f64::max);
    println!(
        "| accuracy | max abs error {worst:.1}% | within 15%: **{}** |",
        if worst <= 15.0 { "met" } else { "not met" }
    );
    let best = &report["recommended"];
    let pick = (
        best["max_jobs"].as_u64().ok_or("no pick")? as u32,
        best["cores"].as_u64().ok_or("no pick")? as u32,
    );
    let mut picked = Vec::new();
    for r in 0..repeats() {
        picked.push(build(&grid_home, &salt(&format!("pick{r}")), pick, &[])?);
    }
    let pick_s = median(picked.iter().map(|r| r.makespan_s).collect());
    let (fastest_at, fastest) = medians
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .ok_or("no runs")?;
    let nix_default = medians[0].1;
    println!(
        "| the pick {} x {} (predicted {:.2} s) | {pick_s:.2} s; fastest measured {} x {} {fastest:.2} s; Nix's default {nix_default:.2} s | {:.3} of the fastest (goal ≤ 1.05: **{}**), {:.2}× Nix's default speed (**{}**) |",
        pick.0,
        pick.1,
        best["makespan_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        fastest_at.0,
        fastest_at.1,
        pick_s / fastest,
        if pick_s <= fastest * 1.05 { "met" } else { "not met" },
        nix_default / pick_s,
        if pick_s < nix_default { "faster" } else { "not faster" }
    );
    Ok(())
}

/// A cgroup v1 memory group, removed when dropped.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str, limit: u64) -> Res<Cgroup> {
        let path = PathBuf::from("/sys/fs/cgroup/memory").join(name);
        std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let group = Cgroup(path);
        std::fs::write(group.0.join("memory.limit_in_bytes"), limit.to_string())
            .map_err(|e| format!("memory.limit_in_bytes: {e}"))?;
        Ok(group)
    }

    fn run(&self, cmd: &Command) -> Res<bool> {
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
            .arg(&self.0)
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                sh.env(k, v);
            }
        }
        Ok(sh.status().map_err(|e| format!("sh: {e}"))?.success())
    }

    fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.0.join("memory.oom_control"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

fn bench_memory(tmp: &Path) -> Res<()> {
    let cap_text = env_or("MEM_CAP", "1536M");
    let cap = nix_ledger::size::parse_size(&cap_text).map_err(|e| e.to_string())?;
    let home = tmp.join("memory");
    let quick = ["--arg", "scale", "20"];
    build(&home, &salt("mem-rec"), (1, 1), &quick)?;
    let report = ledger_json(
        &home,
        &["tune", "--sessions", "1", "--memory", &cap_text, "--json"],
    )?;
    let best = &report["recommended"];
    let pick = (
        best["max_jobs"].as_u64().ok_or("no pick")? as u32,
        best["cores"].as_u64().ok_or("no pick")? as u32,
    );
    let tag = format!("nix-ledger-bench-{}", std::process::id());
    let mut row = Vec::new();
    for (label, at) in [("max-jobs 4", (4, 1)), ("the pick", pick)] {
        let group = match Cgroup::new(&format!("{tag}-{}-{}", at.0, at.1), cap) {
            Ok(g) => g,
            Err(e) => {
                println!(
                    "| memory cap | skipped: cannot create a cgroup v1 memory group ({e}) | |"
                );
                return Ok(());
            }
        };
        let built = group.run(&nb_build(
            &home,
            &salt(&format!("mem-{}", at.0)),
            at,
            &quick,
        ))?;
        row.push(format!(
            "{label} {} x {}: {} (oom_kill {})",
            at.0,
            at.1,
            if built { "built" } else { "failed" },
            group.oom_kills()
        ));
    }
    println!(
        "| memory cap {cap_text}, tune --memory {cap_text} | {} | goal: 4 OOM-killed, the pick built |",
        row.join("; ")
    );
    Ok(())
}

fn bench_eta(tmp: &Path) -> Res<()> {
    let at = setting(&env_or("ETA_AT", "2:1"))?;
    let home = tmp.join("eta");
    let thirty = ["--arg", "extra", "3"];
    build(&home, &salt("eta-rec"), at, &thirty)?;
    for r in 0..repeats() {
        let busy0 = host_busy_ms();
        let start = Instant::now();
        let mut child = nb_build(&home, &salt(&format!("eta{r}")), at, &thirty)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nb build: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines: Vec<(f64, String)> = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.map_err(|e| format!("stderr: {e}"))?;
            lines.push((start.elapsed().as_secs_f64(), line));
        }
        child.wait().map_err(|e| format!("wait: {e}"))?;
        let wall = start.elapsed().as_secs_f64();
        let busy_s = (host_busy_ms() - busy0) / 1000.0;
        let outside = ((busy_s - session_cpu_s(&home)?) / wall).max(0.0);
        let end = lines
            .iter()
            .find(|(_, l)| l.starts_with("nix-ledger: built"))
            .map_or(wall, |(t, _)| *t);
        let mut cells = Vec::new();
        let mut worst: f64 = 0.0;
        for q in [0.25, 0.5, 0.75] {
            let hit = lines.iter().find_map(|(t, l)| {
                let tail = l.strip_prefix("built ")?.rsplit_once(" [")?.1;
                let (count, eta) = tail.strip_suffix(']')?.split_once(", ETA ")?;
                let (done, total) = count.split_once('/')?;
                let (done, total): (f64, f64) = (done.parse().ok()?, total.parse().ok()?);
                (done >= (q * total).ceil()).then(|| (*t, eta_secs(eta)))
            });
            if let Some((t, Some(eta))) = hit {
                let real = end - t;
                let err = (eta - real) / real * 100.0;
                worst = worst.max(err.abs());
                cells.push(format!(
                    "{:.0}%: ETA {eta:.1} s, real {real:.1} s ({err:+.0}%)",
                    q * 100.0
                ));
            } else {
                cells.push(format!("{:.0}%: no ETA line", q * 100.0));
            }
        }
        println!(
            "| ETA, 30 derivations at {} x {}, run {} (outside load {outside:.2}) | {} | within 20%: **{}** |",
            at.0,
            at.1,
            r + 1,
            cells.join("; "),
            if worst <= 20.0 { "met" } else { "not met" }
        );
    }
    Ok(())
}

/// The CPU time the builds of the newest session in `home` used, in seconds.
fn session_cpu_s(home: &Path) -> Res<f64> {
    let rows = ledger_json(
        home,
        &[
            "query",
            "--json",
            "SELECT sum(cpu_user_ms + cpu_system_ms) AS cpu FROM builds
             WHERE session_id = (SELECT max(id) FROM sessions)",
        ],
    )?;
    Ok(rows[0]["cpu"].as_f64().unwrap_or(0.0) / 1000.0)
}

/// `850ms`, `1.5s`, `1m05s`, `2h03m` in seconds.
fn eta_secs(text: &str) -> Option<f64> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse::<f64>().ok().map(|v| v / 1000.0);
    }
    if let Some((h, m)) = text.split_once('h') {
        return Some(
            h.parse::<f64>().ok()? * 3600.0 + m.strip_suffix('m')?.parse::<f64>().ok()? * 60.0,
        );
    }
    if let Some((m, s)) = text.split_once('m') {
        return Some(m.parse::<f64>().ok()? * 60.0 + s.strip_suffix('s')?.parse::<f64>().ok()?);
    }
    text.strip_suffix('s')?.parse().ok()
}
