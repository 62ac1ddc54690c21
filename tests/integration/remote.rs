//! `nix-ledger build` with a real remote builder: the loopback builder of
//! [`crate::servers::LoopbackBuilder`], started and stopped by each test.

use std::process::Command;

use serde_json::Value;

use crate::servers::LoopbackBuilder;
use crate::util::{hook_bin, repo, run_ok, TestEnv};

pub fn fixture() -> std::path::PathBuf {
    repo().join("tests/fixtures/remote.nix")
}

/// This machine's Nix system, for the builders line.
pub fn system() -> String {
    let out =
        run_ok(Command::new("nix-instantiate").args(["--eval", "-E", "builtins.currentSystem"]));
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .trim_matches('"')
        .to_string()
}

/// `nix-ledger build` of a fixture attribute with `builder` offered 2 jobs and the real
/// post-build-hook, `-j JOBS` locally.
fn build_with(env: &TestEnv, builder: &LoopbackBuilder, attr: &str, jobs: &str) -> Command {
    build_salted(env, &env.salt, builder, attr, jobs)
}

/// As [`build_with`], with another salt than the test's.
pub fn build_salted(
    env: &TestEnv,
    salt: &str,
    builder: &LoopbackBuilder,
    attr: &str,
    jobs: &str,
) -> Command {
    let mut cmd = Command::new(crate::util::ledger_bin());
    cmd.arg("build")
        .arg("-f")
        .arg(fixture())
        .arg(attr)
        .args(["--argstr", "salt", salt])
        .args(["--no-link", "-j", jobs])
        .args(["--option", "substituters", ""])
        .args(["--option", "builders", &builder.builders(&system(), 2)])
        // Nix retries a derivation that waits for a free builder slot only this often.
        .args(["--option", "build-poll-interval", "1"])
        .args(["--option", "post-build-hook", hook_bin()])
        .env("NIX_SSHOPTS", builder.sshopts())
        .env("NIX_LEDGER_HOME", env.home());
    cmd
}

/// The .drv paths of the fixture's `attr` and its dependencies.
fn closure_drvs(env: &TestEnv, attr: &str) -> Vec<String> {
    let out = run_ok(
        Command::new("nix-instantiate")
            .arg(fixture())
            .args(["-A", attr, "--argstr", "salt", &env.salt]),
    );
    let top = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = run_ok(Command::new("nix-store").args(["-qR", &top]));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(".drv"))
        .map(str::to_string)
        .collect()
}

#[test]
#[cfg_attr(
    not(root_tests),
    ignore = "needs root: sshd and a root login for the builder"
)]
fn remote_builds_of_a_graph_are_recorded_once_each_on_the_right_machine() {
    let env = TestEnv::new("remote-graph");
    let builder = LoopbackBuilder::start();
    let out = run_ok(&mut build_with(&env, &builder, "graph", "1"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nix-ledger: built 7"), "{stderr}");

    let drvs = closure_drvs(&env, "graph");
    assert_eq!(drvs.len(), 7, "{drvs:?}");
    let rows = env.query(
        "SELECT drv_path, machine, duration_ms, peak_rss_bytes, hook_recorded_ms, source,
                upload_ms, download_ms, status FROM builds",
    );
    assert_eq!(rows.len(), 7, "one row per derivation: {rows:#?}");
    eprintln!("{}", env.ledger_ok(&["history"]));
    let mut remote = 0;
    for drv in &drvs {
        let row = rows
            .iter()
            .find(|r| r["drv_path"] == drv.as_str())
            .unwrap_or_else(|| panic!("{drv} not recorded: {rows:#?}"));
        assert_eq!(row["status"], "built", "{row}");
        assert_eq!(row["source"], "wrapper", "{row}");
        assert!(
            row["hook_recorded_ms"].is_i64(),
            "the hook's record merged: {row}"
        );
        // Where it was built is told by whose log it is: the builder's store has the
        // logs of the builds it ran.
        match builder.build_span_ms(drv) {
            Some(truth) => {
                remote += 1;
                assert_eq!(row["machine"], builder.uri().as_str(), "{row}");
                // `sleep 1` takes 1.00-1.06 s on the builder (its log's span, the truth
                // on loopback); the bound is the issue's, 10% + 100 ms, around that.
                let ms = row["duration_ms"].as_i64().unwrap();
                assert!(
                    (ms - truth).abs() <= truth / 10 + 100 && (900..=1_400).contains(&ms),
                    "{drv}: {ms} ms on the builder, its log says {truth} ms"
                );
                // Nothing of the builder's is measured as if it ran here.
                assert!(row["peak_rss_bytes"].is_null(), "{row}");
                assert!(
                    row["upload_ms"].is_i64() && row["download_ms"].is_i64(),
                    "{row}"
                );
            }
            None => {
                assert!(row["machine"].is_null(), "built here: {row}");
                let ms = row["duration_ms"].as_i64().unwrap();
                assert!((ms - 1_000).abs() <= 200, "{drv}: {ms} ms");
            }
        }
    }
    assert!(
        remote >= 2,
        "with -j 1 and 2 builder slots most builds go remote"
    );

    // history and show tell the machine.
    let history = env.history();
    let on_builder = history
        .iter()
        .filter(|b| b["machine"] == builder.uri().as_str());
    assert_eq!(on_builder.count(), remote);
    let text = env.ledger_ok(&["history"]);
    assert!(text.contains("nlbuilder"), "{text}");
    let by_machine = env.ledger_json(&["history", "--machine", "nlbuilder"]);
    assert_eq!(
        by_machine.as_array().unwrap().len(),
        remote,
        "{by_machine:#}"
    );
    let builders = env.ledger_json(&["builders"]);
    let list = builders["builders"].as_array().unwrap();
    let ours = list
        .iter()
        .find(|b| b["machine"] == builder.uri().as_str())
        .unwrap_or_else(|| panic!("{builders:#}"));
    assert_eq!(ours["builds"], remote as i64, "{ours}");
}

#[test]
#[cfg_attr(
    not(root_tests),
    ignore = "needs root: sshd and a root login for the builder"
)]
fn a_failing_remote_build_exits_like_nix_and_is_recorded_failed_with_its_machine() {
    let env = TestEnv::new("remote-fail");
    let builder = LoopbackBuilder::start();
    // -j 0: nothing may build here, so it goes to the builder.
    let out = build_with(&env, &builder, "failing", "0").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let plain = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "build",
            "-f",
        ])
        .arg(fixture())
        .args([
            "failing",
            "--argstr",
            "salt",
            &format!("{}-plain", env.salt),
        ])
        .args(["--no-link", "-j", "0", "--option", "substituters", ""])
        .args(["--option", "builders", &builder.builders(&system(), 2)])
        .env("NIX_SSHOPTS", builder.sshopts())
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert_eq!(out.status.code(), plain.status.code(), "{stderr}");
    let rows: Vec<Value> = env.query("SELECT machine, status, log_tail, duration_ms FROM builds");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let row = &rows[0];
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(row["machine"], builder.uri().as_str(), "{row}");
    assert!(row["log_tail"].as_str().unwrap().contains("boom"), "{row}");
    let ms = row["duration_ms"].as_i64().unwrap();
    assert!((ms - 1_000).abs() <= 200, "{ms} ms");
}
