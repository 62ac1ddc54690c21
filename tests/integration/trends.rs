//! `nix-ledger trends`: series keys as Nix splits names, the detector's rates on
//! synthetic series recorded through the ledger, real builds with one derivation made
//! slower, and the evaluation time the wrapper records.

use std::process::Command;

use nix_ledger::ledger::Ledger;
use nix_ledger::nix::name::parse_drv_name;
use nix_ledger::trends;
use serde_json::Value;

use crate::servers::TestPostgres;
use crate::sim::{record_series, series, Rng};
use crate::sync::sync_ok;
use crate::util::{repo, run_ok, TestEnv};

#[test]
fn series_keys_follow_nixs_own_split() {
    let names = [
        "hello-2.12.1",
        "python3.11-foo-1.2",
        "linux-6.1-modules",
        "source",
        "nixos-system-host-24.05.20240101.abcdef",
        "foo-unstable-2024-01-01",
        "kyua-0.13-unstable-2024-01-22",
        "node-v18.0.0",
        "name-that-ends-with-dash--1.0",
        "foo-",
        "-1.0",
        "foo-_bar",
        "foo-.1",
        "foo-+x",
        "bash52-001",
        "hello-2.12.1.tar.gz",
        "r-foo-R2",
        "FOO-X1",
        "a-b-c-1-2-3",
        "x--",
    ];
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let expr = format!(
        "map (n: let p = builtins.parseDrvName n; in [ p.name p.version ]) [ {} ]",
        list.join(" ")
    );
    let out = run_ok(
        Command::new("nix-instantiate").args(["--eval", "--json", "--strict", "--expr", &expr]),
    );
    let nix: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    for (name, from_nix) in names.iter().zip(nix) {
        let ours = parse_drv_name(name);
        assert_eq!(
            [ours.name, ours.version],
            [from_nix[0].as_str(), from_nix[1].as_str()],
            "{name}"
        );
    }
}

/// Regressions flagged among the series named `prefix…`.
fn flagged(found: &trends::Trends, prefix: &str) -> usize {
    found
        .regressions
        .iter()
        .filter(|r| r.name.starts_with(prefix))
        .count()
}

#[test]
fn synthetic_series_recorded_through_the_ledger_are_flagged_when_slower_and_rarely_otherwise() {
    // The full tables (1,000 series a cell, CV 5/10/15 %, 20/30/40 baseline builds) are
    // benches/trends_detection.rs's; here enough to catch a detector or record path gone
    // wrong: 1,000 unchanged series, and 100 a step at CV 10 % after 30 builds.
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(&dir.path().join("ledger.sqlite")).unwrap();
    let mut rng = Rng::new(12);
    let mut serial = 0;
    for i in 0..1_000 {
        let cv = [0.05, 0.10, 0.15][i % 3];
        let builds = 25 + 5 * (i % 4);
        let values = series(&mut rng, 60_000.0, builds, 0, 1.0, cv);
        record_series(
            &mut ledger,
            &format!("null{i}-1.0"),
            &values,
            0,
            &mut serial,
        )
        .unwrap();
    }
    for (factor, tag) in [(1.2, "up20x"), (1.5, "up50x"), (2.0, "up100x")] {
        for i in 0..100 {
            let values = series(&mut rng, 60_000.0, 30, 5, factor, 0.10);
            let name = format!("{tag}{i}-1.0");
            record_series(&mut ledger, &name, &values, 0, &mut serial).unwrap();
        }
    }
    let found = trends::compute(&ledger, &trends::Request::default()).unwrap();
    assert_eq!(found.series_count, 1_300);
    let false_alarms = flagged(&found, "null");
    let (up20, up50, up100) = (
        flagged(&found, "up20x"),
        flagged(&found, "up50x"),
        flagged(&found, "up100x"),
    );
    eprintln!("false alarms {false_alarms}/1000; detected +20 % {up20}, +50 % {up50}, +100 % {up100} of 100");
    assert!(false_alarms <= 10, "{false_alarms} false alarms in 1,000");
    assert!(up100 >= 99, "+100 %: {up100} of 100");
    assert!(up50 >= 95, "+50 %: {up50} of 100");
    // 68 % measured on 1,000 series; the band is wide for 100.
    assert!((40..=90).contains(&up20), "+20 %: {up20} of 100");
    for r in &found.regressions {
        assert_eq!(r.metric, trends::detect::Metric::Duration);
        assert!(r.ratio.unwrap() >= 1.15 && r.p_value <= 0.005, "{r:?}");
    }
}

#[test]
fn a_fleet_machines_regression_is_found_in_the_builds_pulled_from_it_and_only_there() {
    // A CI runner builds as above (8 rounds, then 5 with `victim` twice as slow) and
    // syncs to a hub; a laptop that built nothing pulls them and finds the runner's
    // regression in the runner's builds, never mixing them with its own.
    let runner = TestEnv::new("trends-fleet-runner");
    for round in 0..13 {
        build_round(&runner, round, round >= 8);
    }
    let pg = TestPostgres::start();
    sync_ok(&runner, "ci-runner", &pg);
    let laptop = TestEnv::new("trends-fleet-laptop");
    sync_ok(&laptop, "laptop", &pg);
    assert_eq!(
        laptop.query("SELECT count(*) AS n FROM builds WHERE origin_machine = 'ci-runner'")[0]["n"],
        13 * 6
    );

    let found = laptop.ledger_json(&["trends", "--machine", "ci-runner"]);
    assert_eq!(found["machine"], "ci-runner", "{found:#}");
    let flagged: Vec<(&str, &str)> = found["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["metric"].as_str().unwrap()))
        .collect();
    assert_eq!(flagged, [("victim", "duration")], "{found:#}");
    assert_eq!(found["series_count"], 6, "{found:#}");
    for s in found["series"].as_array().unwrap() {
        assert_eq!(s["builds"], 13, "{s}");
    }
    // The same as the runner finds in its own ledger.
    let own = runner.ledger_json(&["trends"]);
    assert_eq!(
        found["regressions"][0]["ratio"],
        own["regressions"][0]["ratio"]
    );
    let text = laptop.ledger_ok(&["trends", "--machine", "ci-runner"]);
    assert!(
        text.starts_with("builds of fleet machine ci-runner"),
        "{text}"
    );
    assert!(text.contains("victim  duration"), "{text}");
    let out = laptop.ledger(&["trends", "--machine", "ci-runner", "--fail-on-regression"]);
    assert_eq!(out.status.code(), Some(5));

    // The laptop's own trends hold none of the runner's builds, and tune does not take
    // the runner's sessions for this machine's workload.
    let mine = laptop.ledger_json(&["trends"]);
    assert_eq!(mine["series_count"], 0, "{mine:#}");
    assert!(mine["machine"].is_null());
    let out = laptop.ledger(&["tune", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Tuning the runner from the laptop: its last sessions, its cores, and its `-j 6`
    // as the setting in effect.
    let tuned = laptop.ledger_json(&["tune", "--machine", "ci-runner", "--sessions", "3"]);
    assert_eq!(tuned["machine"], "ci-runner", "{tuned:#}");
    let workloads = tuned["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 3, "{tuned:#}");
    // What the runner itself predicts from the same sessions (on the same hardware
    // here), measurements included: pulled builds carry them.
    let own = runner.ledger_json(&["tune", "--sessions", "3"]);
    for (w, o) in workloads.iter().zip(own["workloads"].as_array().unwrap()) {
        assert_eq!(w["derivations"], 6, "{w}");
        assert_eq!(w["measured"], o["measured"], "{w} against the runner's {o}");
        assert!(w["measured"].as_u64().unwrap() > 0, "{w}");
    }
    assert_eq!(
        tuned["recommended"], own["recommended"],
        "{tuned:#}\n{own:#}"
    );
    let runner_session = &laptop.query(
        "SELECT max_jobs, host_cores FROM sessions WHERE origin_machine = 'ci-runner' \
         ORDER BY started_ms DESC LIMIT 1",
    )[0];
    assert_eq!(tuned["current"]["max_jobs"], 6, "{tuned:#}");
    assert_eq!(runner_session["max_jobs"], 6);
    assert_eq!(tuned["host"]["cores"], runner_session["host_cores"]);
    let text = laptop.ledger_ok(&["tune", "--machine", "ci-runner"]);
    assert!(text.starts_with("Fleet machine ci-runner"), "{text}");
    assert!(text.contains("current (its last session)"), "{text}");
    let out = laptop.ledger(&["tune", "--machine", "ci-runer"]);
    assert_eq!(out.status.code(), Some(3));

    // The runner's report, from the laptop: its builds, sessions and regression as the
    // runner's own report has them; what only the runner knows (its rebuilds' causes,
    // builders, GC runs) is left out, not shown as nothing.
    let theirs =
        laptop.ledger_json_format(&["report", "--machine", "ci-runner", "--format", "json"]);
    let own = runner.ledger_json_format(&["report", "--format", "json"]);
    assert_eq!(theirs["machine"], "ci-runner", "{theirs:#}");
    assert_eq!(theirs["builds"], 13 * 6);
    assert_eq!(theirs["builds"], own["builds"]);
    assert_eq!(theirs["sessions"]["count"], 13, "{theirs:#}");
    assert_eq!(theirs["sessions"]["count"], own["sessions"]["count"]);
    assert_eq!(theirs["regressions"][0]["name"], "victim");
    assert_eq!(theirs["regressions"], own["regressions"]);
    assert!(theirs["rebuilds"].is_null() && own["rebuilds"].is_object());
    let md = laptop.ledger_ok(&["report", "--machine", "ci-runner", "--format", "markdown"]);
    assert!(
        md.starts_with("## nix-ledger report: last 30d, fleet machine ci-runner"),
        "{md}"
    );
    assert!(!md.contains("wasted rebuilds"), "{md}");
    let mine = laptop.ledger_json_format(&["report", "--format", "json"]);
    assert_eq!(mine["builds"], 0, "{mine:#}");
    assert_eq!(mine["sessions"]["count"], 0, "{mine:#}");

    // A machine nothing was pulled from: a one-line error naming it and those known.
    let out = laptop.ledger(&["trends", "--machine", "ci-runer"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("`ci-runer`") && stderr.contains("ci-runner"),
        "{stderr}"
    );
}

/// `nb build` of the trends fixture's derivations, one round.
fn build_round(env: &TestEnv, round: usize, slow: bool) {
    run_ok(
        Command::new(crate::util::ledger_bin())
            .arg("build")
            .arg("-f")
            .arg(repo().join("tests/fixtures/trends.nix"))
            .args(["victim", "steady", "tiny", "cpu", "blob", "source"])
            .args(["--argstr", "salt", &env.salt])
            .args(["--argstr", "round", &round.to_string()])
            .args(["--arg", "slow", if slow { "true" } else { "false" }])
            .args(["--no-link", "--option", "substituters", "", "-j", "6"])
            .env("NIX_LEDGER_HOME", env.home()),
    );
}

#[test]
fn real_builds_flag_the_slowed_derivation_and_no_other() {
    // Two builds cannot support any rank test (the smallest p-value of 1 + 1 builds is
    // 0.5): 8 rounds as they were, then 5 with `victim` twice as slow and at a new
    // version, each round a new .drv of every derivation.
    let env = TestEnv::new("trends-real");
    for round in 0..13 {
        build_round(&env, round, round >= 8);
    }
    let found = env.ledger_json(&["trends"]);
    let regressions = found["regressions"].as_array().unwrap();
    let flagged: Vec<(&str, &str)> = regressions
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["metric"].as_str().unwrap()))
        .collect();
    assert_eq!(flagged, [("victim", "duration")], "{found:#}");
    let victim = &regressions[0];
    let ratio = victim["ratio"].as_f64().unwrap();
    assert!((1.6..2.4).contains(&ratio), "{victim}");
    assert_eq!(victim["version_changed"], Value::Bool(true));
    assert_eq!(victim["recent_versions"], serde_json::json!(["3.3"]));
    // All six were measured and tested, the others found unchanged.
    assert_eq!(found["series_count"], 6, "{found:#}");
    for s in found["series"].as_array().unwrap() {
        assert_eq!(s["builds"], 13, "{s}");
        assert_ne!(s["duration"]["verdict"], "too_few_builds", "{s}");
    }
    let text = env.ledger_ok(&["trends"]);
    assert!(text.contains("victim  duration"), "{text}");
    assert!(text.contains("3.2 → 3.3"), "{text}");

    // For CI: status 5, also when only the latest session's series count.
    for args in [
        &["trends", "--fail-on-regression"][..],
        &["trends", "--session", "latest", "--fail-on-regression"],
    ] {
        let out = env.ledger(args);
        assert_eq!(
            out.status.code(),
            Some(nix_ledger::exit::REGRESSION),
            "{args:?}"
        );
    }
    let out = env.ledger(&["trends", "steady", "--fail-on-regression"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        env.ledger(&["trends", "nothing-like-it"]).status.code(),
        Some(3)
    );

    // The report's regressions are the same computation's; its wasted rebuilds are
    // `rebuilds`' (the outputs of most rounds are identical: no-op rebuilds), judged on
    // the first report and kept for the next.
    let wasted = env.ledger_json(&["rebuilds", "--since", "1d"]);
    assert!(wasted["no_op"].as_u64().unwrap() > 0, "{wasted:#}");
    for _ in 0..2 {
        let report = env.ledger_json_format(&["report", "--format", "json"]);
        assert_eq!(report["regressions"], found["regressions"]);
        for key in ["avoidable", "no_op", "wasted_ms"] {
            assert_eq!(report["rebuilds"][key], wasted[key], "{key}");
        }
    }
}

#[test]
fn evaluation_time_is_recorded_within_a_fifth_of_a_known_one() {
    // Wall-clock evaluation of a known length that no CPU load can stretch: the
    // evaluator waits 4 s for `sleep` (builtins.exec), then the build follows. Nix's own
    // start-up comes on top (100-350 ms on a loaded machine): a longer sleep leaves
    // room for it within the fifth.
    let env = TestEnv::new("trends-eval");
    let fixture = repo().join("tests/fixtures/evaltime.nix");
    for (attr, extra) in [
        (
            "exec",
            &[
                "--option",
                "allow-unsafe-native-code-during-evaluation",
                "true",
            ][..],
        ),
        ("ifd", &[][..]),
    ] {
        run_ok(
            Command::new(crate::util::ledger_bin())
                .arg("build")
                .arg("-f")
                .arg(&fixture)
                .arg(attr)
                .args(["--argstr", "salt", &env.salt])
                .args(["--no-link", "--option", "substituters", ""])
                .args(extra)
                .env("NIX_LEDGER_HOME", env.home()),
        );
    }
    let sessions = env.query(
        "SELECT eval_ms, ifd_ms, finished_ms - started_ms AS wall FROM sessions ORDER BY id",
    );
    eprintln!("sessions (exec, ifd): {sessions:?}");
    let eval = |i: usize| sessions[i]["eval_ms"].as_i64().unwrap();
    let ifd = |i: usize| sessions[i]["ifd_ms"].as_i64().unwrap();
    // builtins.exec: 4 s of evaluation, no import-from-derivation.
    let within_a_fifth = 4_000..=4_800;
    assert!(within_a_fifth.contains(&eval(0)), "{sessions:?}");
    assert_eq!(ifd(0), 0, "{sessions:?}");
    // An import-from-derivation that sleeps 4 s is evaluation time, and said so.
    assert!(within_a_fifth.contains(&eval(1)), "{sessions:?}");
    assert!(within_a_fifth.contains(&ifd(1)), "{sessions:?}");
    // The 1 s build after it is not.
    for s in &sessions {
        let wall = s["wall"].as_i64().unwrap();
        assert!(wall >= s["eval_ms"].as_i64().unwrap() + 1_000, "{s}");
    }
}
