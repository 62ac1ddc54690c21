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

/// `nb build` of a faults.nix attribute in `env`, and plain `nix build` of the same
/// attribute with another salt: the wrapper must exit as plain Nix does.
fn wrapper_exits_like_plain_nix(env: &TestEnv, attr: &str) -> std::process::Output {
    let common = |cmd: &mut Command, salt: &str| {
        cmd.arg("-f")
            .arg(faults_nix())
            .arg(attr)
            .args(["--argstr", "salt", salt])
            .args(["--no-link", "--option", "substituters", ""]);
    };
    let mut plain = Command::new("nix");
    plain.args(["--extra-experimental-features", "nix-command", "build"]);
    common(&mut plain, &format!("{}-plain-{attr}", env.salt));
    let plain = output_within(&mut plain, Duration::from_secs(120));
    let mut wrapped = Command::new(crate::util::ledger_bin());
    wrapped.arg("build").env("NIX_LEDGER_HOME", env.home());
    common(&mut wrapped, &format!("{}-{attr}", env.salt));
    let wrapped = output_within(&mut wrapped, Duration::from_secs(120));
    assert_eq!(
        wrapped.status.code(),
        plain.status.code(),
        "nb build {attr}: {}",
        String::from_utf8_lossy(&wrapped.stderr)
    );
    wrapped
}

#[test]
fn with_a_corrupt_ledger_nb_build_still_builds_and_exits_as_nix_does() {
    let env = TestEnv::new("fault-corrupt");
    let garbage = b"this is not a SQLite database, whatever its name says\n".repeat(100);
    std::fs::write(env.home().join("ledger.sqlite"), &garbage).unwrap();
    for attr in ["ok", "failing"] {
        let out = wrapper_exits_like_plain_nix(&env, attr);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let warnings = stderr.matches("nix-ledger: warning").count();
        assert_eq!(warnings, 1, "one warning, not {warnings}: {stderr}");
        assert!(
            stderr.contains("ledger.sqlite"),
            "names the ledger: {stderr}"
        );
    }
    // What was there is left as it was, for the user to move aside.
    assert_eq!(
        std::fs::read(env.home().join("ledger.sqlite")).unwrap(),
        garbage
    );
    let doctor = Command::new(crate::util::ledger_bin())
        .args(["doctor"])
        .env("NIX_LEDGER_HOME", env.home())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(report.contains("move it aside"), "{report}");
}

/// A tmpfs of a few MiB mounted for one test, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m")])
                .arg("tmpfs")
                .arg(dir.path()),
        );
        SmallDisk { dir }
    }

    /// Fills what is left of it.
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.dir.path().join("filler").display()))
            .output();
        let _ = Command::new("sync").status();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
#[cfg_attr(not(root_tests), ignore = "needs root: mounts a small tmpfs")]
fn with_the_ledgers_disk_full_nb_build_still_builds_and_exits_as_nix_does() {
    let disk = SmallDisk::mount(4);
    let mut env = TestEnv::new("fault-full");
    // The test's ledger home on the small disk (the TempDir it replaces is cleaned up).
    let home = disk.dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    env.home = tempfile::TempDir::new_in(&home).unwrap();
    // A ledger with one recorded session, then a full disk.
    wrapper_exits_like_plain_nix(&env, "ok");
    disk.fill();
    for attr in ["ok", "failing"] {
        let out = wrapper_exits_like_plain_nix(&env, attr);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("nix-ledger: warning"), "{stderr}");
    }
    // The first session, recorded before the disk filled, is still there.
    let history: Value =
        serde_json::from_str(&ledger_promptly(&env, &["history", "--json"])).unwrap();
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == "faults-ok"),
        "{history:#}"
    );
}

#[test]
fn a_session_left_running_by_a_killed_wrapper_is_found_by_doctor_and_closed_by_fix() {
    let env = TestEnv::new("fault-killed");
    let mut wrapper = Command::new(crate::util::ledger_bin())
        .arg("build")
        .arg("-f")
        .arg(crate::util::wrapper_fixture())
        .arg("slow")
        .args(["--argstr", "salt", &env.salt, "--no-link"])
        .args(["--option", "substituters", ""])
        .env("NIX_LEDGER_HOME", env.home())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Once the session row exists, kill the wrapper outright: it records no end.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = env.query("SELECT count(*) AS n FROM sessions");
        if rows[0]["n"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no session row");
        std::thread::sleep(Duration::from_millis(100));
    }
    wrapper.kill().unwrap();
    wrapper.wait().unwrap();
    // Nix runs on in its own process group: stop it too.
    let _ = Command::new("pkill").args(["-f", &env.salt]).status();
    let doctor: Value =
        serde_json::from_str(&ledger_promptly(&env, &["doctor", "--json"])).unwrap();
    let sessions = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sessions")
        .unwrap_or_else(|| panic!("no sessions check: {doctor:#}"))
        .clone();
    assert_eq!(sessions["status"], "warn", "{sessions}");
    assert!(
        sessions["detail"]
            .as_str()
            .unwrap()
            .starts_with("1 sessions"),
        "{sessions}"
    );
    ledger_promptly(&env, &["doctor", "--fix"]);
    let rows = env.query("SELECT status FROM sessions");
    assert_eq!(rows[0]["status"], "interrupted");
}

/// `nb build` of audit-c (the chain a → b → c) with `tag` reaching all three and
/// `greeting` reaching c alone; returns the wrapper's stderr.
fn build_chain(env: &TestEnv, tag: &str, greeting: &str) -> String {
    let out = run_ok(
        Command::new(crate::util::ledger_bin())
            .arg("build")
            .arg("-f")
            .arg(faults_nix())
            .arg("c")
            .args(["--argstr", "salt", &env.salt])
            .args(["--argstr", "tag", tag, "--argstr", "greeting", greeting])
            .args(["--no-link", "--option", "substituters", ""])
            .env("NIX_LEDGER_HOME", env.home()),
    );
    String::from_utf8(out.stderr).unwrap()
}

/// The .drv of audit-c for a tag and greeting.
fn chain_drv(env: &TestEnv, tag: &str, greeting: &str) -> String {
    crate::util::instantiate(
        &faults_nix(),
        &[
            "-A", "c", "--argstr", "salt", &env.salt, "--argstr", "tag", tag, "--argstr",
            "greeting", greeting,
        ],
    )
}

#[test]
fn the_summary_blames_only_what_changed_against_the_closest_earlier_build() {
    let env = TestEnv::new("fault-closest");
    build_chain(&env, "T1", "hello");
    build_chain(&env, "T2", "hello");
    // a and b of T1 are still valid: only c builds, with a new greeting. Its closest
    // earlier build is c of T1 (same inputs), not the latest c (of T2).
    let stderr = build_chain(&env, "T1", "bye");
    assert!(stderr.contains("1 derivation rebuilt"), "{stderr}");
    assert!(stderr.contains("audit-c: env greeting"), "{stderr}");
    assert!(!stderr.contains("audit-a"), "{stderr}");
    assert!(!stderr.contains("audit-b"), "{stderr}");
    assert!(!stderr.contains("tag"), "{stderr}");
    // `why` chooses the same baseline.
    let why = env.ledger_json(&["why", &chain_drv(&env, "T1", "bye")]);
    assert_eq!(why["against"], chain_drv(&env, "T1", "hello"), "{why:#}");
}

#[test]
fn why_compares_an_older_build_with_one_before_it_never_after() {
    let env = TestEnv::new("fault-before");
    build_chain(&env, "T1", "hello");
    build_chain(&env, "T2", "hello");
    build_chain(&env, "T3", "hello");
    let why = env.ledger_json(&["why", &chain_drv(&env, "T2", "hello")]);
    assert_eq!(why["against"], chain_drv(&env, "T1", "hello"), "{why:#}");
    // The first build has nothing before it.
    let out = env.ledger(&["why", &chain_drv(&env, "T1", "hello")]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `nix-ledger ARGS` as user nobody with `home` as its NIX_LEDGER_HOME (the binary
/// copied where nobody may execute it).
fn as_nobody(bin_dir: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    let binary = bin_dir.join("nix-ledger");
    if !binary.exists() {
        std::fs::copy(crate::util::ledger_bin(), &binary).unwrap();
        std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    output_within(
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(&binary)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("NIX_LEDGER_HOME", home),
        PROMPT,
    )
}

#[test]
#[cfg_attr(not(root_tests), ignore = "needs root: runs commands as another user")]
fn a_read_only_ledger_is_read_and_says_once_that_nothing_was_ingested() {
    let env = TestEnv::new("fault-readonly");
    // A ledger with one build in it, owned by nobody.
    build_with_hook(&env, "ok", &[]);
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        bin_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        env.home(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    run_ok(
        Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(env.home()),
    );
    let out = as_nobody(bin_dir.path(), env.home(), &["history"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = String::from_utf8(out.stdout).unwrap();
    assert!(before.contains("faults-ok"), "{before}");
    // A new record waits in the spool, to be ingested by whoever can.
    build_with_hook(&env, "linkOut", &[]);
    // Read-only: the file (chmod 400), then also its directory (chmod 555).
    let ledger = env.home().join("ledger.sqlite");
    for (file_mode, dir_mode) in [(0o400, 0o755), (0o400, 0o555)] {
        std::fs::set_permissions(
            &ledger,
            std::os::unix::fs::PermissionsExt::from_mode(file_mode),
        )
        .unwrap();
        std::fs::set_permissions(
            env.home(),
            std::os::unix::fs::PermissionsExt::from_mode(dir_mode),
        )
        .unwrap();
        for args in [
            &["history"][..],
            &["query", "SELECT count(*) AS n FROM builds"],
        ] {
            let out = as_nobody(bin_dir.path(), env.home(), args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{args:?} ({file_mode:o}/{dir_mode:o}): {stderr}"
            );
            assert_eq!(stderr.matches("warning").count(), 1, "{stderr}");
            assert!(stderr.contains("not ingested"), "{stderr}");
        }
        let out = as_nobody(bin_dir.path(), env.home(), &["history"]);
        assert_eq!(String::from_utf8(out.stdout).unwrap(), before);
    }
    std::fs::set_permissions(
        env.home(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
}

/// Peak resident memory of a running process, from /proc (kB → bytes).
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn query_streams_its_rows_as_they_come_in_text_and_json() {
    use std::io::BufRead;
    let env = TestEnv::new("fault-stream");
    ledger_promptly(&env, &["ingest"]);
    const ROWS: usize = 2_000_000;
    let sql = format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT {ROWS})
         SELECT x, 'a row of the answer' AS label FROM c"
    );
    for json in [false, true] {
        let mut args = vec!["query", sql.as_str()];
        if json {
            args.push("--json");
        }
        let mut child = Command::new(crate::util::ledger_bin())
            .args(&args)
            .env("NIX_LEDGER_HOME", env.home())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        // The first rows arrive while the query is still running.
        assert!(
            child.try_wait().unwrap().is_none(),
            "json {json}: it had already ended"
        );
        let mut peak = 0;
        let mut count = 1;
        for line in lines {
            line.unwrap();
            count += 1;
            if count % 100_000 == 0 {
                peak = peak.max(peak_rss(pid).unwrap_or(0));
            }
        }
        assert!(child.wait().unwrap().success());
        let expected = if json { ROWS + 2 } else { ROWS + 1 };
        assert_eq!(count, expected, "json {json}: first line {first}");
        assert!(
            peak > 0 && peak < 64 << 20,
            "json {json}: peak RSS {peak} bytes"
        );
    }
}

#[test]
fn why_instantiates_a_nix_file_with_arg_and_argstr() {
    let env = TestEnv::new("fault-why-args");
    build_chain(&env, "T1", "hello");
    build_chain(&env, "T2", "hello");
    let file = faults_nix();
    let why = env.ledger_json(&[
        "why",
        file.to_str().unwrap(),
        "-A",
        "c",
        "--argstr",
        "salt",
        &env.salt,
        "--arg",
        "tag",
        "\"T2\"",
        "--argstr",
        "greeting",
        "hello",
    ]);
    assert_eq!(why["target"], chain_drv(&env, "T2", "hello"), "{why:#}");
    assert_eq!(why["against"], chain_drv(&env, "T1", "hello"), "{why:#}");
}

#[test]
fn a_fragment_left_by_a_short_write_is_counted_as_a_lost_record() {
    let env = TestEnv::new("fault-fragment");
    let line = |i: usize| {
        let hash = crate::util::fake_hash(&format!("fragment-{i}"));
        format!(
            "{{\"v\":1,\"t\":{},\"drv\":\"/nix/store/{hash}-fragment-{i}.drv\",\"outputs\":[]}}",
            1_700_000_000_000u64 + i as u64
        )
    };
    // Three records; the second was cut short (a failed write), and the third appended
    // to its fragment on the same line.
    let cut = &line(1)[..40];
    std::fs::write(env.spool(), format!("{}\n{cut}{}\n", line(0), line(2))).unwrap();
    let done = env.ledger_json(&["ingest"]);
    assert_eq!(done["recorded"], 2, "{done:#}");
    assert_eq!(done["skipped"], 1, "{done:#}");
    let problems = env.query("SELECT reason FROM ingest_problems");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0]["reason"]
        .as_str()
        .unwrap()
        .contains("fragment of 40 bytes"));
}
