//! The post-build-hook with the real Nix: every build recorded exactly once with every
//! output, under concurrency, and never a failed build whatever goes wrong in the hook.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::{drv_outputs, entry_outputs, hook_bin, run_ok, TestEnv};

/// Every history entry, by .drv path; fails the test on a duplicate.
fn entries_by_drv(history: &[Value]) -> HashMap<String, Value> {
    let mut by_drv = HashMap::new();
    for entry in history {
        let drv = entry["drv_path"].as_str().unwrap().to_string();
        assert!(
            by_drv.insert(drv.clone(), entry.clone()).is_none(),
            "{drv} recorded twice"
        );
    }
    by_drv
}

#[test]
fn a_graph_of_60_derivations_is_recorded_once_each_with_every_output() {
    let env = TestEnv::new("graph60");
    run_ok(&mut env.graph_build(60, &["-j", "2"]));
    let drvs = env.graph_drvs(60, &[]);
    assert_eq!(drvs.len(), 60);

    let history = env.history();
    let by_drv = entries_by_drv(&history);
    assert_eq!(history.len(), 60, "one record per built derivation");
    let mut multi_output = 0;
    for drv in &drvs {
        let entry = by_drv
            .get(drv)
            .unwrap_or_else(|| panic!("{drv} not recorded"));
        let expected = drv_outputs(drv);
        if expected.len() > 1 {
            multi_output += 1;
        }
        assert_eq!(entry_outputs(entry), expected, "outputs of {drv}");
        assert_eq!(entry["status"], "built");
        assert_eq!(entry["source"], "hook");
        assert_eq!(
            entry["system"],
            std::env::consts::ARCH.to_string() + "-linux"
        );
        assert!(entry["name"]
            .as_str()
            .unwrap()
            .starts_with("ledger-example-"));
        let finished = entry["finished_at"].as_str().unwrap();
        assert!(
            finished.ends_with('Z') && finished.parse::<jiff::Timestamp>().is_ok(),
            "{finished}"
        );
        // Nix wrote a build log for each, so the log's birth and mtime give the timing.
        assert!(
            entry["duration_ms"].is_i64(),
            "no duration for {drv}: {entry}"
        );
    }
    assert_eq!(multi_output, 12, "every fifth node has out, dev and doc");

    // Enrichment from the store: every output's size is known and it was built here.
    let shown: Value = serde_json::from_str(&env.ledger_ok(&["show", &drvs[5], "--json"])).unwrap();
    let store_paths = shown["store_paths"].as_array().unwrap();
    assert_eq!(store_paths.len(), 3, "{shown}");
    for p in store_paths {
        assert!(p["nar_size"].as_i64().unwrap() > 0);
        assert_eq!(p["locally_built"], true);
    }
}

#[test]
fn four_concurrent_builds_with_four_jobs_each_lose_and_double_nothing() {
    let env = TestEnv::new("concurrent");
    let salts: Vec<String> = (0..4).map(|i| format!("{}-{i}", env.salt)).collect();
    let children: Vec<_> = salts
        .iter()
        .map(|salt| {
            let mut cmd = env.graph_build(40, &["-j", "4", "--argstr", "salt", salt]);
            cmd.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let history = env.history();
    let by_drv = entries_by_drv(&history);
    assert_eq!(history.len(), 160);
    for salt in &salts {
        for drv in env.graph_drvs(40, &["--argstr", "salt", salt]) {
            let entry = by_drv.get(&drv).unwrap_or_else(|| panic!("{drv} lost"));
            assert_eq!(entry_outputs(entry), drv_outputs(&drv));
        }
    }
    // Every spool line is one whole record: nothing interleaved, nothing skipped.
    let ingest: Value = serde_json::from_str(&env.ledger_ok(&["ingest", "--json"])).unwrap();
    assert_eq!(ingest["skipped"], 0);
    let spool = std::fs::read_to_string(env.spool()).unwrap();
    assert_eq!(spool.lines().count(), 160);
}

/// A hook script that runs the real hook in a damaged environment.
fn wrapping_hook(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn build_succeeds_with_hook(env: &TestEnv, hook: &str, n: u32) {
    let out = env.graph_build_with_hook(n, hook, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "the build failed because of the hook: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn damaged_hook_inputs_never_fail_the_build_and_are_reported() {
    let env = TestEnv::new("damaged");
    let scripts = tempfile::tempdir().unwrap();
    let hook = hook_bin();
    let cases = [
        ("no-drv", format!("unset DRV_PATH; exec {hook}")),
        (
            "garbage-drv",
            format!("DRV_PATH='garbage; rm -rf /' exec {hook}"),
        ),
        (
            "non-utf8-drv",
            format!("DRV_PATH=$(printf '/nix/store/\\377\\376.drv') exec {hook}"),
        ),
        (
            "garbage-out",
            format!("OUT_PATHS='\"{{\\n nonsense' exec {hook}"),
        ),
        (
            "missing-drv",
            format!("DRV_PATH=/nix/store/00000000000000000000000000000000-gone.drv exec {hook}"),
        ),
        ("closed-fds", format!("exec {hook} >&- 2>&- <&-")),
    ];
    for (i, (name, body)) in cases.iter().enumerate() {
        let script = wrapping_hook(scripts.path(), name, body);
        let case_env = TestEnv {
            home: tempfile::tempdir().unwrap(),
            salt: format!("{}-{i}", env.salt),
        };
        build_succeeds_with_hook(&case_env, &script, 3);
        let ingest: Value =
            serde_json::from_str(&case_env.ledger_ok(&["ingest", "--json"])).unwrap();
        let doctor: Value = serde_json::from_str(
            &String::from_utf8(case_env.ledger(&["doctor", "--json"]).stdout).unwrap(),
        )
        .unwrap();
        let spool_check = doctor["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "spool lines")
            .unwrap()
            .clone();
        match *name {
            "no-drv" | "garbage-drv" | "non-utf8-drv" => {
                // Nothing usable to record: skipped, counted, and named by doctor.
                assert_eq!(ingest["skipped"], 3, "{name}: {ingest}");
                assert_eq!(spool_check["status"], "warn", "{name}: {spool_check}");
                assert!(
                    spool_check["detail"].as_str().unwrap().contains("3 × "),
                    "{spool_check}"
                );
            }
            "missing-drv" => {
                // Three hook calls for one vanished .drv: three builds recorded (Nix said
                // each was built), without outputs, and doctor says why.
                assert_eq!(ingest["recorded"], 3, "{name}: {ingest}");
                let history = case_env.history();
                assert!(history
                    .iter()
                    .all(|e| e["outputs"].as_array().unwrap().is_empty()));
                assert!(history.iter().all(|e| e["name"] == "gone"));
                assert!(
                    spool_check["detail"]
                        .as_str()
                        .unwrap()
                        .contains("cannot read .drv"),
                    "{spool_check}"
                );
            }
            _ => {
                assert_eq!(ingest["recorded"], 3, "{name}: {ingest}");
                assert_eq!(ingest["skipped"], 0, "{name}: {ingest}");
                for entry in case_env.history() {
                    let drv = entry["drv_path"].as_str().unwrap();
                    assert_eq!(entry_outputs(&entry), drv_outputs(drv), "{name}");
                }
            }
        }
    }
}

#[test]
fn an_unwritable_spool_never_fails_the_build_and_doctor_finds_the_lost_builds() {
    let env = TestEnv::new("unwritable");
    env.ledger_ok(&["ingest"]); // the ledger exists before the builds: losses are after it
                                // Directories where the spool and its error log should be: no file can be opened.
    std::fs::create_dir(env.spool()).unwrap();
    std::fs::create_dir(env.home().join("hook-errors.log")).unwrap();
    let out = run_ok(&mut env.graph_build(4, &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nix-ledger-hook: build of"),
        "the loss is said: {stderr}"
    );

    let doctor: Value = serde_json::from_slice(&env.ledger(&["doctor", "--json"]).stdout).unwrap();
    let unrecorded: Vec<&str> = doctor["unrecorded_builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for drv in env.graph_drvs(4, &[]) {
        assert!(
            doctor["unrecorded_count"].as_u64().unwrap() > 20 || unrecorded.contains(&drv.as_str()),
            "doctor does not name lost {drv}: {doctor}"
        );
    }
    assert!(doctor["unrecorded_count"].as_u64().unwrap() >= 4);
    let spool_check = &doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with("spool "))
        .unwrap()["status"];
    assert_eq!(spool_check, "fail", "{doctor}");
}

#[test]
fn a_file_size_limit_never_fails_the_build_and_records_are_recovered() {
    let env = TestEnv::new("ulimit");
    // 512 MiB: far above any file Nix writes (its database's WAL reached 20 MiB on a busy
    // machine and failed nix-build itself at a 20 MiB limit), and just above the spool,
    // made that large as a sparse file, so the hook's first write is cut short and the
    // rest fail with EFBIG (SIGXFSZ is ignored). Sizes are in dash's 512-byte blocks.
    let limit_blocks = 1_048_576u64;
    let spool = std::fs::File::create(env.spool()).unwrap();
    spool.set_len(limit_blocks * 512 - 40).unwrap();
    drop(spool);
    let build = env.graph_build(6, &[]);
    let args: Vec<String> = std::iter::once(build.get_program())
        .chain(build.get_args())
        .map(|a| format!("'{}'", a.to_str().unwrap().replace('\'', "'\\''")))
        .collect();
    run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -f {limit_blocks}; exec {}", args.join(" ")))
            .env("NIX_LEDGER_HOME", env.home()),
    );
    assert_eq!(
        std::fs::metadata(env.spool()).unwrap().len(),
        limit_blocks * 512
    );

    // The hook put each record in its error log instead; ingest recovers them all.
    let history = env.history();
    let by_drv = entries_by_drv(&history);
    for drv in env.graph_drvs(6, &[]) {
        let entry = by_drv.get(&drv).unwrap_or_else(|| panic!("{drv} lost"));
        assert_eq!(entry_outputs(entry), drv_outputs(&drv));
    }
    let doctor = String::from_utf8(env.ledger(&["doctor"]).stdout).unwrap();
    assert!(
        doctor.contains("6 builds could not be written to the spool"),
        "{doctor}"
    );
    // The hole and the cut-off line are one oversized "line", skipped once, not re-read.
    assert!(
        doctor.contains("1 × 536870912 bytes without a newline"),
        "{doctor}"
    );
    let again: Value = serde_json::from_str(&env.ledger_ok(&["ingest", "--json"])).unwrap();
    assert_eq!(
        (again["recorded"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(0))
    );
}

/// A spool of `n` well-formed lines for .drv files that do not exist (fast to ingest).
fn synthetic_spool(path: &Path, n: usize, garbage_every: usize) -> usize {
    let mut text = String::new();
    let mut valid = 0;
    for i in 0..n {
        if garbage_every > 0 && i % garbage_every == 7 {
            text.push_str(if i % 2 == 0 {
                "{\"v\":1,\"t\":12\n"
            } else {
                "\u{1}garbage line\n"
            });
            continue;
        }
        valid += 1;
        text.push_str(&format!(
            "{{\"v\":1,\"t\":{},\"drv\":\"/nix/store/{:032}-synthetic-{i}.drv\",\"outputs\":[[\"out\",\"/nix/store/{:032}-synthetic-{i}\"]]}}\n",
            1_700_000_000_000i64 + i as i64,
            i,
            i
        ));
    }
    std::fs::write(path, text).unwrap();
    valid
}

fn count_builds(env: &TestEnv) -> (i64, i64) {
    let out = env.ledger_ok(&[
        "query",
        "SELECT count(*) AS n, count(DISTINCT drv_path) AS d FROM builds",
        "--json",
    ]);
    let rows: Value = serde_json::from_str(&out).unwrap();
    (
        rows[0]["n"].as_i64().unwrap(),
        rows[0]["d"].as_i64().unwrap(),
    )
}

#[test]
fn ingest_killed_mid_way_resumes_with_every_record_exactly_once() {
    let lines = 20_000;
    let mut killed_mid_way = false;
    for delay_ms in [300u64, 600, 1000, 1500, 2500, 4000] {
        let env = TestEnv::new("kill9");
        let valid = synthetic_spool(&env.spool(), lines, 0);
        let mut child = Command::new(crate::util::ledger_bin())
            .arg("ingest")
            .env("NIX_LEDGER_HOME", env.home())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        // SIGKILL: no chance to clean up, as in a crash.
        let _ = child.kill();
        let _ = child.wait();
        let ledger = env.home().join("ledger.sqlite");
        let partial: i64 = if ledger.exists() {
            let conn = rusqlite::Connection::open(&ledger).unwrap();
            conn.query_row("SELECT count(*) FROM builds", [], |r| r.get(0))
                .unwrap_or(0)
        } else {
            0
        };
        env.ledger_ok(&["ingest"]);
        assert_eq!(count_builds(&env), (valid as i64, valid as i64));
        if partial > 0 && partial < valid as i64 {
            killed_mid_way = true;
            break;
        }
    }
    assert!(killed_mid_way, "no kill landed in the middle of an ingest");
}

#[test]
fn garbage_and_truncated_spool_lines_are_skipped_and_counted() {
    let env = TestEnv::new("garbage");
    let valid = synthetic_spool(&env.spool(), 1_000, 50);
    // A torn last line (no newline yet) is left for the next ingest, not counted.
    let mut spool = std::fs::OpenOptions::new()
        .append(true)
        .open(env.spool())
        .unwrap();
    std::io::Write::write_all(&mut spool, b"{\"v\":1,\"t\":1,\"drv\":\"/nix/st").unwrap();
    let ingest: Value = serde_json::from_str(&env.ledger_ok(&["ingest", "--json"])).unwrap();
    assert_eq!(ingest["recorded"], valid);
    assert_eq!(ingest["skipped"], 1_000 - valid);
    // Ingesting again reads nothing new.
    let again: Value = serde_json::from_str(&env.ledger_ok(&["ingest", "--json"])).unwrap();
    assert_eq!(
        (again["recorded"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(count_builds(&env), (valid as i64, valid as i64));
    let problems = env.ledger_ok(&["query", "SELECT count(*) FROM ingest_problems"]);
    assert_eq!(
        problems.lines().nth(1),
        Some((1_000 - valid).to_string().as_str())
    );
}

#[test]
fn a_replayed_spool_records_nothing_twice() {
    let env = TestEnv::new("replay");
    let valid = synthetic_spool(&env.spool(), 500, 0);
    env.ledger_ok(&["ingest"]);
    // Replace the spool by a copy (new inode, offset 0): the same records come again.
    let copy = env.home().join("copy");
    std::fs::copy(env.spool(), &copy).unwrap();
    std::fs::rename(&copy, env.spool()).unwrap();
    let again: Value = serde_json::from_str(&env.ledger_ok(&["ingest", "--json"])).unwrap();
    assert_eq!(again["already_present"], valid);
    assert_eq!(count_builds(&env), (valid as i64, valid as i64));
}

#[test]
fn the_hook_prints_nothing_and_exits_0_when_all_is_well() {
    let env = TestEnv::new("quiet");
    let drvs = env.graph_drvs(1, &[]);
    run_ok(&mut env.graph_build(1, &[]));
    let out = Command::new(hook_bin())
        .env("DRV_PATH", &drvs[0])
        .env("OUT_PATHS", "")
        .env("NIX_LEDGER_HOME", env.home())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let lines: BTreeMap<usize, String> = std::fs::read_to_string(env.spool())
        .unwrap()
        .lines()
        .map(str::to_string)
        .enumerate()
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "one line from the build, one from this call"
    );
}

#[test]
fn a_panic_inside_the_hook_still_exits_0_and_the_build_succeeds() {
    let env = TestEnv::new("panic");
    let scripts = tempfile::tempdir().unwrap();
    let script = wrapping_hook(
        scripts.path(),
        "panicking",
        &format!("NIX_LEDGER_HOOK_PANIC_FOR_TEST=1 exec {}", hook_bin()),
    );
    let out = run_ok(&mut env.graph_build_with_hook(2, &script, &[]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NIX_LEDGER_HOOK_PANIC_FOR_TEST is set"),
        "the panic happened and was caught"
    );
}
