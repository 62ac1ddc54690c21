//! `nix-ledger build` against the real Nix: timing, memory, failures, interrupts, and
//! the merge with the post-build-hook's records.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{hook_bin, run_ok, TestEnv};

fn by_name<'a>(history: &'a [Value], name: &str) -> &'a Value {
    history
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no build named {name} in {history:#?}"))
}

#[test]
fn wrapper_durations_of_sleeping_builds_are_recorded_within_10_percent() {
    let env = TestEnv::new("wrapper-sleeps");
    let out = env
        .wrapper_build("sleeps", &["-j", "3", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Nix's stdout is passed through untouched: `--json` still parses.
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    // Not a terminal: one plain line per finished build, and the summary.
    for secs in ["0.5", "1", "2"] {
        assert!(
            stderr.contains(&format!("built wrapper-sleep-{secs} in")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("nix-ledger: built 3, downloaded 0"),
        "{stderr}"
    );
    assert!(stderr.contains("slowest: wrapper-sleep-2 "), "{stderr}");

    let history = env.history();
    assert_eq!(history.len(), 3, "{history:#?}");
    for (name, expected_ms) in [
        ("wrapper-sleep-0.5", 500),
        ("wrapper-sleep-1", 1000),
        ("wrapper-sleep-2", 2000),
    ] {
        let build = by_name(&history, name);
        let ms = build["duration_ms"].as_i64().unwrap();
        let allowed = expected_ms / 10 + 100;
        assert!(
            (ms - expected_ms).abs() <= allowed,
            "{name}: {ms} ms, expected {expected_ms} ± {allowed}"
        );
        assert_eq!(build["source"], "wrapper");
        assert_eq!(build["status"], "built");
    }
    let sessions = env.query(
        "SELECT kind, status, exit_code, nix_version, max_jobs, cores, host_cores, host_memory_bytes,
                built_count, substituted_count, failed_count, finished_ms - started_ms AS wall_ms, command
         FROM sessions",
    );
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(
        (
            s["kind"].as_str(),
            s["status"].as_str(),
            s["exit_code"].as_i64()
        ),
        (Some("build"), Some("succeeded"), Some(0))
    );
    assert_eq!(s["max_jobs"], 3, "-j 3 is the max-jobs in effect");
    assert!(s["nix_version"].as_str().unwrap().starts_with("2."), "{s}");
    assert!(
        s["cores"].is_i64() && s["host_cores"].as_i64().unwrap() > 0,
        "{s}"
    );
    assert!(s["host_memory_bytes"].as_i64().unwrap() > 1 << 30, "{s}");
    assert_eq!(
        (s["built_count"].as_i64(), s["failed_count"].as_i64()),
        (Some(3), Some(0))
    );
    assert!(
        (2000..10_000).contains(&s["wall_ms"].as_i64().unwrap()),
        "{s}"
    );
    assert!(s["command"].as_str().unwrap().contains("\"sleeps\""), "{s}");
    let log_lines = env.query("SELECT log_lines FROM builds");
    assert!(
        log_lines.iter().all(|r| r["log_lines"] == 0),
        "{log_lines:?}"
    );
}

/// Builds the fixture that holds 300 MiB for 2 s with `extra` options and checks the
/// recorded peak RSS (within 20 %), CPU time and summary.
fn check_memory_build(env: &TestEnv, extra: &[&str]) {
    let out = run_ok(&mut env.wrapper_build("memory", extra));
    let history = env.history();
    let build = by_name(&history, "wrapper-memory");
    let rss = build["peak_rss_bytes"].as_i64().unwrap_or(0) as f64;
    let expected = (300u64 << 20) as f64;
    assert!(
        (rss - expected).abs() <= expected * 0.2,
        "peak RSS {rss}, expected {expected} ± 20%: {build:#?}"
    );
    // Building 300 MiB of bytes costs CPU; a sampler that saw nothing would say 0.
    let cpu = build["cpu_user_ms"].as_i64().unwrap() + build["cpu_system_ms"].as_i64().unwrap();
    assert!(cpu > 20, "cpu {cpu} ms");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("peak memory: 3"), "{stderr}");
}

#[test]
fn wrapper_peak_memory_of_a_300_mib_build_is_recorded_within_20_percent() {
    check_memory_build(&TestEnv::new("wrapper-memory"), &[]);
}

/// What a sandboxed build of the fixtures needs from the host: /bin/sh, python3 and
/// their libraries (Debian's Nix puts nothing in the sandbox by default).
const SANDBOX: &[&str] = &[
    "--option",
    "sandbox",
    "true",
    "--option",
    "extra-sandbox-paths",
    "/bin /lib /lib64 /usr",
];

#[test]
#[cfg_attr(not(root_tests), ignore = "needs root: Nix's sandbox")]
fn wrapper_peak_memory_of_a_sandboxed_build_is_recorded_too() {
    // In the sandbox the builder's working directory reads `/build` from outside: the
    // sampler must find it by its build user instead.
    let env = TestEnv::new("wrapper-memory-sandbox");
    let probe = env
        .plain_build("failing", &format!("{}-probe", env.salt), SANDBOX)
        .output()
        .unwrap();
    let probe_err = String::from_utf8_lossy(&probe.stderr);
    assert!(
        probe_err.contains("failing line 12"),
        "this machine cannot run Nix's sandbox: {}",
        probe_err.lines().last().unwrap_or("")
    );
    check_memory_build(&env, SANDBOX);
}

/// Builds the failing fixture `attr` with plain `nix build` (its own salt) and through
/// the wrapper; the wrapper must fail with the same exit code. Returns its output.
fn fails_like_plain_nix(env: &TestEnv, attr: &str) -> std::process::Output {
    let plain = env
        .plain_build(attr, &format!("{}-plain", env.salt), &[])
        .output()
        .unwrap();
    let out = env.wrapper_build(attr, &[]).output().unwrap();
    assert!(!plain.status.success());
    assert_eq!(
        out.status.code(),
        plain.status.code(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn wrapper_failing_build_exits_like_nix_and_is_recorded_failed_with_its_log_tail() {
    let env = TestEnv::new("wrapper-failing");
    let out = fails_like_plain_nix(&env, "failing");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed wrapper-failing after"), "{stderr}");
    assert!(
        stderr.contains("wrapper-failing> failing line 12"),
        "{stderr}"
    );

    let rows = env.query(
        "SELECT b.status, b.log_lines, b.log_tail, s.status AS session, s.exit_code, s.failed_count
         FROM builds b JOIN sessions s ON s.id = b.session_id",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(
        (r["status"].as_str(), r["log_lines"].as_i64()),
        (Some("failed"), Some(12))
    );
    let tail = r["log_tail"].as_str().unwrap();
    assert!(
        tail.ends_with("failing line 11\nfailing line 12\n"),
        "{tail}"
    );
    assert_eq!(
        (r["session"].as_str(), r["failed_count"].as_i64()),
        (Some("failed"), Some(1))
    );
    assert_eq!(r["exit_code"].as_i64(), out.status.code().map(i64::from));
}

/// Whether any process has `needle` in its command line or environment-free argv.
fn process_with_arg(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(needle))
            .unwrap_or(false)
    })
}

#[test]
fn wrapper_sigint_stops_nix_records_an_interrupted_session_and_exits_130() {
    let env = TestEnv::new("wrapper-sigint");
    let child = env
        .wrapper_build("slow", &[])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the builder runs (its directory exists), then interrupt.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_dir("/tmp").unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("nix-build-wrapper-slow.drv-")
    }) {
        assert!(Instant::now() < deadline, "the slow build never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let interrupted_at = Instant::now();
    // The wrapper leads no process group of its own here: signal it alone, as a
    // terminal's Ctrl-C would reach it.
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        interrupted_at.elapsed() < Duration::from_secs(15),
        "took {:?}",
        interrupted_at.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nix and the builder are gone: no process still carries this build's salt.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !process_with_arg(&env.salt),
        "a process of the build survived"
    );

    let rows = env.query(
        "SELECT s.status, s.exit_code, b.status AS build_status, b.log_tail
         FROM sessions s LEFT JOIN builds b ON b.session_id = s.id",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["exit_code"].as_i64()),
        (Some("interrupted"), Some(130))
    );
    assert_eq!(rows[0]["build_status"], "failed");
    assert!(
        rows[0]["log_tail"]
            .as_str()
            .unwrap()
            .contains("started\n(interrupted)"),
        "{rows:?}"
    );
}

#[test]
fn wrapper_and_hook_records_of_the_same_builds_are_one_row_each() {
    let env = TestEnv::new("wrapper-hook");
    let mut cmd = Command::new(crate::util::ledger_bin());
    cmd.arg("build")
        .arg("-f")
        .arg(crate::util::graph_nix())
        .args(["--argstr", "salt", &env.salt, "--arg", "n", "6", "-j", "2"])
        .args(["--no-link", "--option", "substituters", ""])
        .args(["--option", "post-build-hook", hook_bin()])
        .env("NIX_LEDGER_HOME", env.home());
    run_ok(&mut cmd);
    let drvs = env.graph_drvs(6, &[]);
    let history = env.history();
    assert_eq!(history.len(), drvs.len(), "{history:#?}");
    for drv in &drvs {
        let rows: Vec<&Value> = history
            .iter()
            .filter(|b| b["drv_path"] == drv.as_str())
            .collect();
        assert_eq!(rows.len(), 1, "{drv}: {rows:#?}");
        assert_eq!(rows[0]["source"], "wrapper");
        assert!(
            rows[0]["hook_recorded_at"].is_string(),
            "the hook's record merged: {:#?}",
            rows[0]
        );
        assert!(rows[0]["session_id"].is_i64());
    }
}

#[test]
fn wrapper_records_a_cache_hit_as_substituted_with_its_size() {
    let env = TestEnv::new("wrapper-substitute");
    // Build once without the wrapper, put it in a local binary cache, delete it here.
    let out = run_ok(&mut env.plain_build("memory", &env.salt, &["--json"]));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = json[0]["outputs"]["out"].as_str().unwrap().to_string();
    let cache = format!("file://{}", env.home().join("cache").display());
    run_ok(Command::new("nix").args([
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--to",
        &cache,
        &path,
    ]));
    run_ok(Command::new("nix-store").args(["--delete", &path]));

    let mut cmd = Command::new(crate::util::ledger_bin());
    cmd.arg("build")
        .arg("-f")
        .arg(crate::util::wrapper_fixture())
        .arg("memory")
        .args(["--argstr", "salt", &env.salt, "--no-link"])
        .args([
            "--option",
            "substituters",
            &cache,
            "--option",
            "require-sigs",
            "false",
        ])
        .env("NIX_LEDGER_HOME", env.home());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("built 0, downloaded 1 ("), "{stderr}");
    let rows = env.query(
        "SELECT b.status, b.source, s.substituted_count, s.built_count, s.downloaded_bytes
         FROM builds b JOIN sessions s ON s.id = b.session_id",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["source"].as_str()),
        (Some("substituted"), Some("wrapper"))
    );
    assert_eq!(
        (
            rows[0]["substituted_count"].as_i64(),
            rows[0]["built_count"].as_i64()
        ),
        (Some(1), Some(0))
    );
    assert!(
        rows[0]["downloaded_bytes"].as_i64().unwrap() > 0,
        "{rows:?}"
    );
}

/// Runs `nix-ledger build` on a pseudo-terminal (util-linux `script`); its output.
fn on_a_terminal(env: &TestEnv, attr: &str, salt: &str, no_color: bool) -> String {
    let inner = format!(
        "{} build -f {} {attr} --argstr salt {salt} -j 3 --no-link --option substituters ''",
        crate::util::ledger_bin(),
        crate::util::wrapper_fixture().display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &inner, "/dev/null"])
        .env("NIX_LEDGER_HOME", env.home())
        .env_remove("NO_COLOR");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
}

#[test]
fn wrapper_on_a_terminal_shows_running_builds_with_expected_times_and_honours_no_color() {
    let env = TestEnv::new("wrapper-tty");
    // A first run teaches the ledger how long these take.
    let first = on_a_terminal(&env, "sleeps", &format!("{}-a", env.salt), false);
    assert!(first.contains("building wrapper-sleep-2 "), "{first}");
    assert!(
        first.contains("\x1b[1m[builds "),
        "bold header in colour: {first}"
    );
    let second = on_a_terminal(&env, "sleeps", &format!("{}-b", env.salt), true);
    assert!(
        second.contains("(usually 2.0s)")
            || second.contains("(usually 1.9s)")
            || second.contains("(usually 2.1s)"),
        "{second}"
    );
    assert!(
        second.contains("[builds 0/3") || second.contains("[builds 1/3"),
        "{second}"
    );
    // The whole build's ETA, from what the first run took.
    assert!(second.contains("/3, ETA "), "{second}");
    assert!(
        !second.contains("\x1b[1m") && !second.contains("\x1b[31"),
        "NO_COLOR: {second}"
    );
    // The status area is erased before the summary.
    assert!(second.contains("\x1b[J"), "{second}");
}

#[test]
fn wrapper_without_nix_on_path_fails_with_one_line_and_closes_its_session() {
    let env = TestEnv::new("wrapper-no-nix");
    let out = Command::new(crate::util::ledger_bin())
        .args(["build", "-f", "x.nix"])
        .env("NIX_LEDGER_HOME", env.home())
        .env("PATH", env.home())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("nix-ledger: cannot run nix: "),
        "{stderr}"
    );
    let rows = env.query("SELECT status, exit_code FROM sessions");
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["exit_code"].as_i64()),
        (Some("failed"), Some(127))
    );
}

#[test]
fn wrapper_records_builds_before_and_after_nix_goes_quiet_once_each() {
    // The import-from-derivation build ends with every activity stopped while Nix goes
    // on evaluating (tens of ms, longer than the reader's 10 ms coalescing), which is
    // when the wrapper records early; the main build comes after and is recorded at the
    // end, with the hook's records merged into both.
    let env = TestEnv::new("wrapper-ifd");
    let out = env
        .wrapper_build("ifd", &["--option", "post-build-hook", hook_bin()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("built 2,"), "{stderr}");
    let history = env.history();
    assert_eq!(history.len(), 2, "{history:#?}");
    for name in ["wrapper-ifd-gen", "wrapper-ifd-main"] {
        let build = by_name(&history, name);
        assert_eq!(build["status"], "built", "{build:#?}");
        assert_eq!(build["source"], "wrapper", "{build:#?}");
        assert!(build["hook_recorded_at"].is_string(), "{build:#?}");
    }
    let sessions = env.query("SELECT status, built_count FROM sessions");
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    assert_eq!(sessions[0]["status"], "succeeded");
    assert_eq!(sessions[0]["built_count"], 2);
}

#[test]
fn wrapper_records_a_failure_after_nix_went_quiet_with_the_exit_code_of_nix() {
    // The early record (after the import-from-derivation build) has the first build as
    // built; the failure after it is recorded at the end, with Nix's exit code.
    let env = TestEnv::new("wrapper-ifd-failing");
    fails_like_plain_nix(&env, "ifdFailing");
    let history = env.history();
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(by_name(&history, "wrapper-ifd-gen")["status"], "built");
    assert_eq!(by_name(&history, "wrapper-ifd-failing")["status"], "failed");
    let tails = env.query("SELECT log_tail FROM builds WHERE status = 'failed'");
    assert!(
        tails[0]["log_tail"]
            .as_str()
            .unwrap_or("")
            .contains("main fails"),
        "{tails:#?}"
    );
    let sessions = env.query("SELECT status, built_count, failed_count FROM sessions");
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    assert_eq!(sessions[0]["status"], "failed");
    assert_eq!(sessions[0]["built_count"], 1);
    assert_eq!(sessions[0]["failed_count"], 1);
}
