//! `nix-ledger sync` against a real PostgreSQL ([`crate::servers::TestPostgres`], started
//! and stopped by each test): ledgers as machines of a fleet, syncs cut off mid-way, and
//! a hub that refuses or is gone.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::servers::TestPostgres;
use crate::util::{ledger_bin, run_ok, TestEnv};

/// `nix-ledger sync URL ARGS` as machine `machine` of `env`, with `password`.
fn sync_cmd(env: &TestEnv, machine: &str, url: &str, password: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(ledger_bin());
    cmd.arg("sync")
        .arg(url)
        .args(args)
        .env("NIX_LEDGER_HOME", env.home())
        .env("NIX_LEDGER_MACHINE", machine)
        .env("PGPASSWORD", password)
        // Never the host's: no ~/.pgpass, no PG* of the machine running the tests.
        .env("HOME", env.home())
        .env_remove("PGHOST")
        .env_remove("PGUSER")
        .env_remove("NIX_LEDGER_SYNC_URL");
    cmd
}

/// A sync that must succeed; its JSON report.
pub fn sync_ok(env: &TestEnv, machine: &str, pg: &TestPostgres) -> Value {
    let out = run_ok(&mut sync_cmd(
        env,
        machine,
        &pg.url(),
        &pg.password,
        &["--json"],
    ));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One number from `nix-ledger query`.
fn count(env: &TestEnv, sql: &str) -> i64 {
    env.query(sql)[0]["n"].as_i64().unwrap()
}

/// Every build a ledger holds, as (recording machine, drv): own rows as `own`.
fn holdings(env: &TestEnv, own: &str) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = env
        .query("SELECT origin_machine, drv_path FROM builds")
        .iter()
        .map(|r| {
            (
                r["origin_machine"].as_str().unwrap_or(own).to_string(),
                r["drv_path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn three_machines_syncing_twice_each_hold_the_union_once() {
    let pg = TestPostgres::start();
    let machines = ["alpha", "beta", "gamma"];
    let envs: Vec<TestEnv> = machines
        .iter()
        .map(|m| TestEnv::new(&format!("sync-{m}")))
        .collect();
    // Each machine builds its own graph, recorded by the hook.
    for env in &envs {
        run_ok(&mut env.graph_build(3, &[]));
    }
    let mut union: Vec<(String, String)> = Vec::new();
    for (env, m) in envs.iter().zip(machines) {
        union.extend(holdings(env, m));
    }
    union.sort();
    assert_eq!(union.len(), 9, "{union:?}");
    for round in 0..2 {
        for (env, m) in envs.iter().zip(machines) {
            let report = sync_ok(env, m, &pg);
            // The second time, nothing is new of its own (what the others pushed after
            // its first sync is still to pull).
            if round == 1 {
                assert_eq!(report["pushed_builds"], 0, "{report}");
                assert_eq!(report["pushed_sessions"], 0, "{report}");
            }
        }
    }
    for (env, m) in envs.iter().zip(machines) {
        assert_eq!(
            holdings(env, m),
            union,
            "{m} holds the union, each build once"
        );
        // Pulled rows are tagged, never merged with this machine's.
        assert_eq!(
            count(env, "SELECT count(*) AS n FROM builds WHERE origin IS NULL"),
            3
        );
        let other = machines.iter().find(|o| **o != m).unwrap();
        let theirs = env.ledger_json(&["history", "--machine", other]);
        assert_eq!(theirs.as_array().unwrap().len(), 3, "{theirs:#}");
        assert!(theirs
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["recorded_by"] == *other));
        let text = env.ledger_ok(&["history"]);
        assert!(text.contains(&format!("(recorded by {other})")), "{text}");
        // Its own name picks its own builds (NIX_LEDGER_MACHINE as it syncs).
        let out = Command::new(ledger_bin())
            .args(["history", "--json", "--machine", m])
            .env("NIX_LEDGER_HOME", env.home())
            .env("NIX_LEDGER_MACHINE", m)
            .output()
            .unwrap();
        let own: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(own.as_array().unwrap().len(), 3, "{own:#}");
        assert!(own
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["recorded_by"].is_null()));
    }
    // The hub: every build once, tagged with its machine.
    let hub = pg.psql_super(
        "ledger",
        "SELECT machine, count(*), count(DISTINCT drv_path) FROM nix_ledger.builds GROUP BY machine ORDER BY machine",
    );
    assert_eq!(hub.trim(), "alpha|3|3\nbeta|3|3\ngamma|3|3", "{hub}");
}

/// Adds `n` builds to the ledger of `env` (created by `nix-ledger ingest`), straight into
/// its SQLite file: a large history without building it.
fn fill(env: &TestEnv, n: usize, tag: &str) {
    run_ok(
        Command::new(ledger_bin())
            .arg("ingest")
            .env("NIX_LEDGER_HOME", env.home()),
    );
    let mut conn = rusqlite::Connection::open(env.home().join("ledger.sqlite")).unwrap();
    let tx = conn.transaction().unwrap();
    for i in 0..n {
        let drv = format!("/nix/store/{i:032}-{tag}-{i}.drv");
        let out = format!("/nix/store/{i:032}-{tag}-{i}");
        tx.execute(
            "INSERT INTO derivations (drv_path, name, system, first_seen_ms) VALUES (?1, ?2, 'x86_64-linux', ?3)",
            rusqlite::params![drv, format!("{tag}-{}", i % 100), i as i64],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO builds (drv_path, source, status, started_ms, finished_ms, duration_ms, enriched_ms)
             VALUES (?1, 'hook', 'built', ?2, ?3, 1000, ?3)",
            rusqlite::params![drv, i as i64, i as i64 + 1000],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO build_outputs (build_id, output_name, path) VALUES (last_insert_rowid(), 'out', ?1)",
            [out],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// Starts `cmd`, kills it (SIGKILL) once `ready` holds, and waits for it.
fn kill_when(mut cmd: Command, ready: impl Fn() -> bool) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if ready() {
            let _ = child.kill();
            let _ = child.wait();
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

#[test]
fn a_sync_killed_mid_way_then_run_again_loses_and_doubles_nothing() {
    let pg = TestPostgres::start();
    let (a, b) = (TestEnv::new("sync-kill-a"), TestEnv::new("sync-kill-b"));
    const N: usize = 40_000;
    fill(&a, N, "killed");
    // Killed while pushing: the hub has some of A's batches, not all.
    // (Before the first batch, the hub has no schema yet: 0.)
    let hub_builds = || {
        pg.try_psql_super("ledger", "SELECT count(*) FROM nix_ledger.builds")
            .ok()
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    let pushing = {
        let mut cmd = sync_cmd(&a, "alpha", &pg.url(), &pg.password, &[]);
        cmd.env("NIX_LEDGER_SYNC_BATCH", "1000");
        cmd
    };
    let killed = kill_when(pushing, || (1..N).contains(&hub_builds()));
    assert!(killed, "the push ended before it could be cut off");
    let partial = hub_builds();
    assert!(partial < N, "{partial}");
    sync_ok(&a, "alpha", &pg);
    assert_eq!(hub_builds(), N, "all of A's builds, once each");

    // Killed while pulling: B has some of A's batches, not all.
    let pulled = || {
        let path = b.home().join("ledger.sqlite");
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                c.query_row(
                    "SELECT count(*) FROM builds WHERE origin IS NOT NULL",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .unwrap_or(0) as usize
    };
    let pulling = {
        let mut cmd = sync_cmd(&b, "beta", &pg.url(), &pg.password, &[]);
        cmd.env("NIX_LEDGER_SYNC_BATCH", "1000");
        cmd
    };
    assert!(
        kill_when(pulling, || (1..N).contains(&pulled())),
        "the pull ended before it could be cut off"
    );
    sync_ok(&b, "beta", &pg);
    assert_eq!(
        count(
            &b,
            "SELECT count(*) AS n FROM builds WHERE origin_machine = 'alpha'"
        ),
        N as i64
    );
    assert_eq!(
        count(
            &b,
            "SELECT count(DISTINCT origin_id) AS n FROM builds WHERE origin IS NOT NULL"
        ),
        N as i64
    );
    assert_eq!(
        count(&b, "SELECT count(*) AS n FROM build_outputs"),
        N as i64
    );
}

/// Everything of a ledger that a sync could change, to compare before and after.
fn snapshot(env: &TestEnv) -> Vec<Value> {
    env.query(
        "SELECT (SELECT count(*) FROM builds) AS builds, (SELECT count(*) FROM sessions) AS sessions,
                (SELECT count(*) FROM builds WHERE pushed_rev IS NOT NULL) AS pushed,
                (SELECT count(*) FROM sync_state) AS hubs,
                (SELECT count(*) FROM ledger_meta) AS meta",
    )
}

/// The failed sync's output: exit code 4, one line on stderr naming the hub, never the
/// password, the ledger unchanged.
fn fails_cleanly(env: &TestEnv, out: &Output, before: &[Value], secret: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        !stderr.contains(secret),
        "the password was printed: {stderr}"
    );
    assert_eq!(snapshot(env), before, "the ledger changed");
    stderr
}

#[test]
fn a_wrong_password_a_stopped_or_a_silent_server_fails_in_one_line_and_changes_nothing() {
    let mut pg = TestPostgres::start();
    let env = TestEnv::new("sync-refused");
    run_ok(&mut env.graph_build(2, &[]));
    run_ok(
        Command::new(ledger_bin())
            .arg("ingest")
            .env("NIX_LEDGER_HOME", env.home()),
    );
    let before = snapshot(&env);

    // A wrong password, given in the URL.
    let secret = "not-the-password-4711";
    let url = format!(
        "postgres://ledger:{secret}@127.0.0.1:{}/ledger?sslmode=disable",
        pg.port
    );
    let out = sync_cmd(&env, "alpha", &url, "", &[]).output().unwrap();
    let stderr = fails_cleanly(&env, &out, &before, secret);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );

    // A stopped server.
    pg.stop();
    let out = sync_cmd(&env, "alpha", &pg.url(), &pg.password, &[])
        .output()
        .unwrap();
    let stderr = fails_cleanly(&env, &out, &before, &pg.password);
    assert!(stderr.contains("cannot connect"), "{stderr}");

    // A server that accepts the connection and never answers: bounded by connect_timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://ledger@127.0.0.1:{}/ledger?sslmode=disable&connect_timeout=2",
        silent.local_addr().unwrap().port()
    );
    let started = Instant::now();
    let out = sync_cmd(&env, "alpha", &url, &pg.password, &[])
        .output()
        .unwrap();
    let stderr = fails_cleanly(&env, &out, &before, &pg.password);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(stderr.contains("within 2 s"), "{stderr}");

    // And once the hub is back, the same ledger syncs.
    pg.restart();
    let report = sync_ok(&env, "alpha", &pg);
    assert!(report["pushed_builds"].as_i64().unwrap() > 0, "{report}");
}

/// The .drv snapshots and manifests a ledger holds, sorted.
fn why_rows(env: &TestEnv) -> Vec<String> {
    let mut rows: Vec<String> = env
        .query(
            "SELECT drv_path AS p FROM drv_snapshots
             UNION ALL SELECT store_path || ' ' || hex(digest) || ' ' || entries FROM manifests",
        )
        .iter()
        .map(|r| r["p"].as_str().unwrap().to_string())
        .collect();
    rows.sort();
    rows
}

#[test]
fn snapshots_and_manifests_stay_local_unless_synced_with_why() {
    let pg = TestPostgres::start();
    let (a, b) = (TestEnv::new("sync-why-a"), TestEnv::new("sync-why-b"));
    run_ok(&mut a.graph_build(2, &[]));
    sync_ok(&a, "alpha", &pg);
    sync_ok(&b, "beta", &pg);
    let theirs = why_rows(&a);
    assert!(!theirs.is_empty());
    assert!(
        why_rows(&b).is_empty(),
        "without --with-why nothing of why travels"
    );
    for (env, m) in [(&a, "alpha"), (&b, "beta")] {
        let out = run_ok(&mut sync_cmd(
            env,
            m,
            &pg.url(),
            &pg.password,
            &["--with-why", "--json"],
        ));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["pushed_builds"], 0, "{report}");
    }
    assert_eq!(why_rows(&b), theirs);
    // The manifests' entries came along whole.
    let entries = |env: &TestEnv| count(env, "SELECT count(*) AS n FROM manifest_entries");
    assert_eq!(entries(&b), entries(&a));
}

#[test]
fn tls_is_used_and_verified_as_sslmode_says() {
    let pg = TestPostgres::start_with_tls();
    let env = TestEnv::new("sync-tls");
    let root = pg.root_cert().display().to_string();
    let url = |mode: &str| format!("{}?sslmode={mode}", pg.url());
    let tls_logins = || {
        pg.log()
            .lines()
            .filter(|l| {
                l.contains("connection authorized: user=ledger") && l.contains("SSL enabled")
            })
            .count()
    };
    // require: encrypted, the certificate not checked (as libpq without a root cert).
    run_ok(&mut sync_cmd(
        &env,
        "alpha",
        &url("require"),
        &pg.password,
        &[],
    ));
    assert_eq!(tls_logins(), 1, "{}", pg.log());
    // verify-full against the server's own certificate: checked, and it holds.
    let full = format!("{}&sslrootcert={root}", url("verify-full"));
    run_ok(&mut sync_cmd(&env, "alpha", &full, &pg.password, &[]));
    // prefer (the default): TLS when the server offers it.
    run_ok(&mut sync_cmd(&env, "alpha", &pg.url(), &pg.password, &[]));
    assert_eq!(tls_logins(), 3, "{}", pg.log());
    // verify-ca against another certificate: refused, exit 4, one line.
    let other = env.home().join("other.crt");
    must_run(
        Command::new("openssl")
            .args([
                "req",
                "-new",
                "-x509",
                "-days",
                "2",
                "-nodes",
                "-subj",
                "/CN=other",
            ])
            .arg("-keyout")
            .arg(env.home().join("other.key"))
            .arg("-out")
            .arg(&other),
    );
    let wrong = format!("{}&sslrootcert={}", url("verify-ca"), other.display());
    let out = sync_cmd(&env, "alpha", &wrong, &pg.password, &[])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    // verify-full with no root certificate anywhere: a usage error before connecting.
    let out = sync_cmd(&env, "alpha", &url("verify-full"), &pg.password, &[])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn must_run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
