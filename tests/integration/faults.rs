//! Faults found by trying nix-ledger as a user, and as an adversary, would: outputs that
//! point out of the store at things that block, concurrent commands, a full or broken
//! ledger, a read-only ledger, and summaries that blamed the wrong build. Each test here
//! failed before its fix.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::{output_within, repo, run_ok, TestEnv};

/// A command on a ledger must answer within this, whatever the store holds.
const PROMPT: Duration = Duration::from_secs(30);

pub fn faults_nix() -> PathBuf {
    repo().join("tests/fixtures/faults.nix")
}

/// `nix-build` of a fixture attribute with the real hook into `env`'s ledger.
fn build_with_hook(env: &TestEnv, attr: &str, args: &[&str]) {
    run_ok(
        env.nix_build(&faults_nix(), &["-A", attr, "--argstr", "salt", &env.salt])
            .args(args),
    );
}

/// `nix-ledger ARGS` in `env`, which must end within [`PROMPT`] and succeed.
fn ledger_promptly(env: &TestEnv, args: &[&str]) -> String {
    let out = output_within(
        Command::new(crate::util::ledger_bin())
            .args(args)
            .env("NIX_LEDGER_HOME", env.home()),
        PROMPT,
    );
    assert!(
        out.status.success(),
        "nix-ledger {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A directory holding a FIFO nobody ever writes: reading it blocks forever.
fn dir_with_fifo(parent: &Path) -> PathBuf {
    let dir = parent.join("with-fifo");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("plain"), b"plain file\n").unwrap();
    run_ok(Command::new("mkfifo").arg(dir.join("fifo")));
    // The builder runs as a build user: it only links, but let it see the directory.
    std::fs::set_permissions(parent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn an_output_linking_to_a_directory_with_a_fifo_never_hangs_a_command() {
    let env = TestEnv::new("fault-fifo");
    let outside = tempfile::tempdir().unwrap();
    let target = dir_with_fifo(outside.path());
    build_with_hook(
        &env,
        "linkOut",
        &["--argstr", "target", target.to_str().unwrap()],
    );
    for args in [
        &["history", "--json"][..],
        &["query", "SELECT count(*) FROM manifests"],
        &["doctor", "--json"],
    ] {
        let out = output_within(
            Command::new(crate::util::ledger_bin())
                .args(args)
                .env("NIX_LEDGER_HOME", env.home()),
            PROMPT,
        );
        // doctor may warn; what matters is that it answered.
        assert!(out.status.code().is_some(), "{args:?}");
    }
    // The output's manifest is its root alone: a symlink, never followed.
    let rows = env.query(
        "SELECT e.rel_path, e.type, e.target FROM manifest_entries e
         JOIN manifests m USING (store_path) WHERE m.kind = 'output'",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["type"], "symlink");
    assert_eq!(rows[0]["target"], target.to_str().unwrap());
}

#[test]
fn an_output_linking_to_dev_never_hangs_a_command() {
    let env = TestEnv::new("fault-dev");
    build_with_hook(&env, "linkOut", &["--argstr", "target", "/dev"]);
    let history: Value =
        serde_json::from_str(&ledger_promptly(&env, &["history", "--json"])).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1);
    ledger_promptly(&env, &["query", "SELECT * FROM manifests"]);
}

/// A spool of `n` hook lines for fake derivations (their .drv files do not exist, so each
/// is recorded without outputs, as the hook records a vanished .drv).
fn write_spool(path: &Path, n: usize) {
    let mut text = String::with_capacity(n * 160);
    for i in 0..n {
        let hash = crate::util::fake_hash(&format!("conc-{i}"));
        text.push_str(&format!(
            "{{\"v\":1,\"t\":{},\"drv\":\"/nix/store/{hash}-conc-{i}.drv\",\"outputs\":[]}}\n",
            1_700_000_000_000u64 + i as u64
        ));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn concurrent_ingests_and_histories_all_succeed_and_record_each_line_once() {
    let env = TestEnv::new("fault-concurrent");
    const LINES: usize = 100_000;
    write_spool(&env.spool(), LINES);
    let run = |args: &'static [&'static str]| {
        let home = env.home().to_path_buf();
        std::thread::spawn(move || {
            output_within(
                Command::new(crate::util::ledger_bin())
                    .args(args)
                    .env("NIX_LEDGER_HOME", home),
                Duration::from_secs(300),
            )
        })
    };
    let runs = [
        run(&["ingest", "--json"]),
        run(&["ingest", "--json"]),
        run(&["history", "-n", "1"]),
        run(&["history", "-n", "1"]),
    ];
    for run in runs {
        let out = run.join().unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let counts = env.query(
        "SELECT count(*) AS builds, count(DISTINCT drv_path) AS drvs,
                (SELECT sum(lines_ingested) FROM spool_state) AS lines,
                (SELECT count(*) FROM builds WHERE enriched_ms IS NULL) AS pending
         FROM builds",
    );
    assert_eq!(counts[0]["builds"], LINES);
    assert_eq!(counts[0]["drvs"], LINES);
    assert_eq!(counts[0]["lines"], LINES);
    assert_eq!(counts[0]["pending"], 0);
}
