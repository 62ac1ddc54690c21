//! `nix-ledger tune` and the wrapper's ETA against the real Nix, on the mixed workload of
//! `tests/fixtures/tune.nix` at small scales. Only what does not depend on timing is
//! asserted (the workload, the fields, the invariants of the pick); how well the
//! simulator predicts is measured in `benches/tune.rs`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::util::{ledger_bin, repo, run_ok, TestEnv};

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/tune.nix")
}

/// The fixture's arguments: small, so that a build takes seconds.
fn fixture_args<'a>(salt: &'a str, scale: &'a str, mem: &'a str, hold: &'a str) -> Vec<&'a str> {
    vec![
        "--argstr", "salt", salt, "--arg", "scale", scale, "--arg", "memMB", mem, "--arg",
        "holdMs", hold,
    ]
}

/// `nb build` of the fixture with `extra` options, in `env`; its stderr.
fn record(env: &TestEnv, salt: &str, mem: &str, extra: &[&str]) -> String {
    let out = run_ok(
        Command::new(ledger_bin())
            .arg("build")
            .arg("-f")
            .arg(fixture())
            .args(fixture_args(salt, "20", mem, "300"))
            .args(["--no-link", "--option", "substituters", ""])
            .args(extra)
            .env("NIX_LEDGER_HOME", env.home()),
    );
    String::from_utf8(out.stderr).unwrap()
}

/// The fixture's top .drv for `salt`, instantiated, not built.
fn instantiate(salt: &str, mem: &str) -> String {
    let out = run_ok(
        Command::new("nix-instantiate")
            .arg(fixture())
            .args(fixture_args(salt, "20", mem, "300")),
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every .drv of `top`'s closure with its input .drv files (`nix show-derivation -r`).
fn graph(top: &str) -> BTreeMap<String, Vec<String>> {
    let out = run_ok(Command::new("nix").args([
        "--extra-experimental-features",
        "nix-command",
        "show-derivation",
        "-r",
        top,
    ]));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    json.as_object()
        .unwrap()
        .iter()
        .map(|(drv, d)| {
            let inputs = d["inputDrvs"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            (drv.clone(), inputs)
        })
        .collect()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The number of host cores tune sweeps for on this machine.
fn host_cores() -> u64 {
    std::thread::available_parallelism().unwrap().get() as u64
}

/// The fastest candidate free of OOM risk, within the 2% the ranking calls a tie.
fn check_pick(report: &Value) {
    let best = &report["recommended"];
    assert!(best.is_object(), "no recommendation: {report:#}");
    assert_eq!(best["oom_risk"], false, "{best}");
    let fastest_safe = report["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["oom_risk"] == false)
        .map(|c| u(&c["makespan_ms"]))
        .min()
        .unwrap();
    assert!(
        u(&best["makespan_ms"]) as f64 <= fastest_safe as f64 * 1.02 + 1.0,
        "{best} is not the fastest safe candidate ({fastest_safe} ms)"
    );
    let (j, c) = (u(&best["max_jobs"]), u(&best["cores"]));
    let conf = report["nix_conf"].as_str().unwrap();
    assert_eq!(conf, format!("max-jobs = {j}\ncores = {c}\n"));
    let nixos = report["nix_settings"].as_str().unwrap();
    assert!(
        nixos.contains(&format!("max-jobs = {j}; cores = {c};")),
        "{nixos}"
    );
}

#[test]
fn tune_turns_a_recorded_session_into_its_workload_and_reports_every_field() {
    let env = TestEnv::new("tune-session");
    let mem = "[ 20 30 ]";
    record(&env, &env.salt, mem, &["-j", "2", "--cores", "1"]);
    let report = env.ledger_json(&["tune"]);

    // The workload: every derivation the session built, with the graph's edges.
    let top = instantiate(&env.salt, mem);
    let graph = graph(&top);
    let edges: usize = graph.values().map(Vec::len).sum();
    let workloads = report["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 1, "{report:#}");
    let w = &workloads[0];
    assert_eq!(w["kind"], "session");
    assert_eq!(u(&w["derivations"]) as usize, graph.len(), "{w}");
    assert_eq!(u(&w["dependencies"]) as usize, edges, "{w}");
    assert_eq!(u(&w["unknown_graph"]), 0);
    assert_eq!(u(&w["measured"]) + u(&w["estimated"]), u(&w["derivations"]));
    // The parallel builds run for long enough to be sampled: measured.
    assert!(u(&w["measured"]) >= 6, "{w}");
    let conf = &report["confidence"];
    assert_eq!(u(&conf["total_jobs"]) as usize, graph.len());
    assert_eq!(conf["estimated_jobs"], w["estimated"]);

    // The fields the issue names, and the grid of candidates.
    check_pick(&report);
    let current = &report["current"];
    assert!(
        u(&current["max_jobs"]) >= 1 && current["cores"].is_u64(),
        "{current}"
    );
    let candidates = report["candidates"].as_array().unwrap();
    let h = host_cores();
    let mut cores_seen = HashSet::new();
    for c in candidates {
        for field in ["makespan_ms", "peak_memory_bytes"] {
            assert!(c[field].is_u64(), "{field} in {c}");
        }
        assert!(c["oom_risk"].is_boolean(), "{c}");
        let (j, k) = (u(&c["max_jobs"]), u(&c["cores"]));
        assert!((1..=4 * h).contains(&j) && k <= h, "{c}");
        cores_seen.insert(k);
    }
    if h <= 8 {
        assert_eq!(cores_seen.len() as u64, h + 1, "cores 0 and 1..{h}");
    }
    let critical = report["critical_path"]["derivations"].as_array().unwrap();
    assert_eq!(critical.last().unwrap(), "all", "{critical:?}");
    assert!(u(&report["critical_path"]["length_ms"]) > 0);

    // The text says the same.
    let text = env.ledger_ok(&["tune"]);
    let (j, c) = (
        u(&report["recommended"]["max_jobs"]),
        u(&report["recommended"]["cores"]),
    );
    assert!(
        text.contains(&format!("  max-jobs = {j}\n  cores = {c}\n")),
        "{text}"
    );
    assert!(text.contains("critical path: "), "{text}");
}

#[test]
fn tune_on_a_target_counts_only_what_it_would_build() {
    let env = TestEnv::new("tune-target");
    let mem = "[ 20 30 ]";
    record(&env, &env.salt, mem, &["-j", "2"]);
    // The same workload with another salt: nothing of it is built, but every name is
    // known. Build one of its leaves first: it is no longer to be built.
    let salt = format!("{}-target", env.salt);
    let top = instantiate(&salt, mem);
    let graph = graph(&top);
    let leaf = graph
        .keys()
        .find(|d| d.ends_with("-chain-b-1.drv"))
        .unwrap()
        .clone();
    run_ok(Command::new("nix-store").args(["--realise", &leaf, "--option", "substituters", ""]));
    let report = env.ledger_json(&["tune", &top]);
    let w = &report["workloads"][0];
    assert_eq!(w["kind"], "target");
    assert_eq!(w["drv"], top.as_str());
    assert_eq!(u(&w["derivations"]) as usize, graph.len() - 1, "{w}");
    let edges_left: usize = graph
        .iter()
        .filter(|(d, _)| **d != leaf)
        .map(|(_, inputs)| inputs.iter().filter(|i| **i != leaf).count())
        .sum();
    assert_eq!(u(&w["dependencies"]) as usize, edges_left);
    // Same names as the recorded session: its measured builds are this workload's.
    assert!(u(&w["measured"]) >= 6, "{w}");
    check_pick(&report);

    // A target nothing is known of: every profile an estimate, and said so.
    let fresh = TestEnv::new("tune-target-fresh");
    let report = fresh.ledger_json(&["tune", &top]);
    let w = &report["workloads"][0];
    assert_eq!(w["estimated"], w["derivations"], "{w}");
    assert_eq!(report["confidence"]["level"], "low");
    check_pick(&report);
    // A built target leaves nothing to tune on: exit 3, saying why.
    let out = fresh.ledger(&["tune", &leaf]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("every output is in the store"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn memory_and_host_projections_change_the_pick_as_they_should() {
    let env = TestEnv::new("tune-projection");
    record(&env, &env.salt, "[ 60 80 100 ]", &["-j", "1"]);
    let roomy = env.ledger_json(&["tune", "--memory", "64G"]);
    check_pick(&roomy);
    let risky = |r: &Value| -> Vec<u64> {
        r["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["oom_risk"] == true)
            .map(|c| u(&c["max_jobs"]))
            .collect()
    };
    assert!(risky(&roomy).is_empty(), "64 GiB fits everything");

    // Under a cap that two of the memory builds exceed together (the reserve of a small
    // cap is 128 MiB): the pick runs one build at a time, and every setting that could
    // run two of them at once is flagged.
    let tight = env.ledger_json(&["tune", "--memory", "300M", "--compare", "4:1"]);
    check_pick(&tight);
    assert_eq!(
        u(&tight["recommended"]["max_jobs"]),
        1,
        "{:#}",
        tight["recommended"]
    );
    let flagged = risky(&tight);
    assert!(flagged.contains(&2) && !flagged.contains(&1), "{flagged:?}");
    let avoided = &tight["oom_risks_avoided"][0];
    assert_eq!(u(&avoided["max_jobs"]), 2, "{avoided}");
    let names: Vec<&str> = avoided["derivations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    // Builds too short to sample are charged the largest memory known: either may be
    // the other half.
    assert!(names.iter().any(|n| n.starts_with("mem-")), "{names:?}");
    assert!(u(&avoided["bytes"]) > u(&tight["host"]["memory_budget_bytes"]));
    assert_eq!(tight["compared"][0]["oom_risk"], true);
    assert!(u(&tight["recommended"]["makespan_ms"]) >= u(&roomy["recommended"]["makespan_ms"]));
    // Less memory than the largest build alone: no setting is safe, and it says so.
    let none = env.ledger_json(&["tune", "--memory", "200M"]);
    assert!(none["recommended"].is_null(), "{:#}", none["recommended"]);
    assert!(none["nix_conf"].is_null());
    let text = env.ledger_ok(&["tune", "--memory", "200M"]);
    assert!(text.contains("No setting is free of OOM risk"), "{text}");

    // Another machine: the sweep covers its cores, and more cores never predict a
    // slower build.
    let m2 = env.ledger_json(&[
        "tune",
        "--host-cores",
        "8",
        "--memory",
        "16G",
        "--compare",
        "4:8",
    ]);
    check_pick(&m2);
    assert_eq!(m2["host"]["cores"], 8);
    assert_eq!(m2["host"]["projected"], true);
    let cands = m2["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 32 * 9);
    assert_eq!(u(&m2["nixos_default"]["max_jobs"]), 8);
    assert!(
        u(&m2["recommended"]["makespan_ms"]) as f64
            <= u(&roomy["recommended"]["makespan_ms"]) as f64 * 1.02
    );
    let hand_tuned = &m2["compared"][0];
    assert_eq!(
        (u(&hand_tuned["max_jobs"]), u(&hand_tuned["cores"])),
        (4, 8)
    );
    assert!(u(&hand_tuned["makespan_ms"]) >= u(&m2["recommended"]["makespan_ms"]));
}

#[test]
fn plain_lines_end_with_the_builds_done_and_the_eta() {
    let env = TestEnv::new("tune-eta");
    let mem = "[ 20 ]";
    // The first build has no history: the ETA is a guess, but it is there.
    let first = record(&env, &env.salt, mem, &["-j", "2"]);
    let second = record(&env, &format!("{}-again", env.salt), mem, &["-j", "2"]);
    let total = graph(&instantiate(&env.salt, mem)).len();
    for stderr in [&first, &second] {
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("built ")).collect();
        assert_eq!(lines.len(), total, "{stderr}");
        for line in &lines {
            let (_, tail) = line.rsplit_once(" [").unwrap_or_else(|| panic!("{line}"));
            let (count, eta) = tail
                .strip_suffix(']')
                .and_then(|t| t.split_once(", ETA "))
                .unwrap_or_else(|| panic!("no ETA: {line}"));
            let (done, of) = count.split_once('/').unwrap();
            assert_eq!(of.parse::<usize>().unwrap(), total, "{line}");
            assert!(done.parse::<usize>().unwrap() <= total, "{line}");
            assert!(
                (eta.ends_with('s') || eta.ends_with('m'))
                    && eta.chars().next().unwrap().is_ascii_digit(),
                "{line}"
            );
        }
    }
}

/// A cgroup v1 memory group, removed when dropped.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str, limit: u64) -> Cgroup {
        let path = PathBuf::from("/sys/fs/cgroup/memory").join(name);
        if let Err(e) = std::fs::create_dir(&path) {
            panic!("cannot create the memory cgroup {}: {e}", path.display());
        }
        let group = Cgroup(path);
        std::fs::write(group.0.join("memory.limit_in_bytes"), limit.to_string())
            .expect("set the memory limit");
        group
    }

    /// Runs `cmd` inside the group (a shell puts itself in and execs it).
    fn run(&self, cmd: &Command) -> std::process::Output {
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
            .arg(&self.0)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                sh.env(k, v);
            }
        }
        sh.output().unwrap()
    }

    /// How many processes the kernel killed for going over the limit.
    fn oom_kills(&self) -> u64 {
        let text = std::fs::read_to_string(self.0.join("memory.oom_control")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .expect("this kernel counts OOM kills (oom_kill, Linux 4.13+)")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Its processes have exited; the kernel may take a moment to let it go.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

#[test]
#[cfg_attr(not(root_tests), ignore = "needs root: creates a cgroup")]
fn under_a_memory_cap_the_recommendation_builds_where_max_jobs_4_runs_out() {
    let env = TestEnv::new("tune-cgroup");
    let mem = "[ 200 250 300 350 ]";
    let cap: u64 = 1 << 30;
    // Recorded once, one build at a time, without a cap: each build's peak memory.
    record(&env, &env.salt, mem, &["-j", "1"]);
    let report = env.ledger_json(&["tune", "--memory", "1G"]);
    let best = &report["recommended"];
    assert_eq!(best["oom_risk"], false);
    let four = report["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["max_jobs"] == 4)
        .unwrap();
    assert_eq!(four["oom_risk"], true, "{four}");
    let build = |salt: &str, jobs: u64, cores: u64| {
        let mut cmd = Command::new("nix-build");
        cmd.arg(fixture())
            .args(fixture_args(salt, "5", mem, "1500"))
            .args(["--no-out-link", "--option", "substituters", ""])
            .args([
                "--max-jobs",
                &jobs.to_string(),
                "--cores",
                &cores.to_string(),
            ]);
        cmd
    };
    let tag = format!("nix-ledger-test-{}-{}", std::process::id(), env.salt.len());
    // The premise: with four jobs the memory builds run together and one is killed.
    let group = Cgroup::new(&format!("{tag}-j4"), cap);
    let out = group.run(&build(&format!("{}-j4", env.salt), 4, 1));
    assert!(
        !out.status.success(),
        "max-jobs 4 fit under 1 GiB after all"
    );
    assert!(
        group.oom_kills() > 0,
        "max-jobs 4 failed, but not by the OOM killer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(group);
    // The recommendation for that cap builds the same workload under it.
    let (j, c) = (u(&best["max_jobs"]), u(&best["cores"]));
    let group = Cgroup::new(&format!("{tag}-pick"), cap);
    let out = group.run(&build(&format!("{}-pick", env.salt), j, c));
    assert_eq!(group.oom_kills(), 0, "the pick {j} x {c} was OOM-killed");
    assert!(
        out.status.success(),
        "the pick {j} x {c} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
