//! A dry run changes nothing; kill -9 during `gc` leaves a store Nix verifies and a
//! ledger that says which deletions happened; a planned path that becomes live stays.

use std::time::{Duration, Instant};

use super::{strings, Store};
use crate::util::run_ok;

/// The names in the store directory.
fn listing(s: &Store) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(s.store_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_dry_run_changes_nothing() {
    let s = Store::new("dry", "");
    let profile = s.state_dir().join("profiles/main");
    for v in ["1", "2"] {
        let app = s.build("app", &["--argstr", "v", v], None);
        run_ok(
            s.command("nix-env")
                .arg("-p")
                .arg(&profile)
                .args(["--set", &app[0]]),
        );
    }
    s.build("tool", &["--argstr", "v", "dead"], None);
    s.build("docs", &[], None);
    // Once before, so that the ledger exists and ingest has nothing left to do.
    s.nb_ok(&["store"]);
    let (paths, names) = (s.valid_paths(), listing(&s));
    let profiles = || {
        let mut links: Vec<String> = std::fs::read_dir(s.state_dir().join("profiles"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        links.sort();
        links
    };
    let links = profiles();
    let plan = s.nb_json(&["gc", "--dry-run", "--keep-generations", "1"]);
    s.nb_ok(&["gc", "--dry-run", "--max-freed", "1K"]);
    assert_eq!(plan["dry_run"], true);
    assert!(
        plan["plan"]["planned_paths"].as_u64().unwrap() >= 5,
        "{plan}"
    );
    assert_eq!(plan["plan"]["generations"].as_array().unwrap().len(), 1);
    assert_eq!(s.valid_paths(), paths, "the store database is unchanged");
    assert_eq!(listing(&s), names, "the store directory is unchanged");
    assert_eq!(profiles(), links, "no generation removed");
    assert_eq!(
        s.env_query("SELECT count(*) FROM gc_runs"),
        [0],
        "a dry run is no run"
    );

    // A free-space target already met plans nothing.
    let met = s.nb_json(&["gc", "--dry-run", "--free-until", "1K"]);
    assert_eq!(met["plan"]["target_bytes"], 0, "{met}");
    assert_eq!(met["plan"]["planned_paths"], 0);
}

#[test]
fn an_unreachable_cache_does_not_stall_a_gc() {
    // Nothing listens on port 9: Nix's own retries would take seconds per path.
    let s = Store::new("nocache", "");
    s.build("tool", &["--argstr", "v", "x"], None);
    s.write_conf("substituters = http://127.0.0.1:9");
    let started = Instant::now();
    let out = crate::util::output_within(
        &mut s.nb(&["gc", "--dry-run", "--json"]),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes = plan["plan"]["notes"].to_string();
    assert!(
        notes.contains("http://127.0.0.1:9"),
        "the plan says the cache was not asked: {notes}"
    );
    assert!(
        plan["plan"]["builds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["cost_basis"] != "download"),
        "nothing counts as downloadable from a cache that did not answer"
    );
}

#[test]
fn kill_9_leaves_a_verified_store_and_a_ledger_that_knows_what_went() {
    let s = Store::new("kill", "");
    // 300 dead paths, deleted 10 at a time: time to be killed in the middle.
    let files: Vec<std::path::PathBuf> = (0..300)
        .map(|i| {
            let f = s.path(&format!("tmp/f{i}.txt"));
            std::fs::write(&f, format!("{} {i}", s.env.salt)).unwrap();
            f
        })
        .collect();
    let added = run_ok(s.command("nix-store").arg("--add").args(&files));
    let added: Vec<String> = String::from_utf8(added.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(added.len(), 300);
    s.nb_ok(&["store"]);

    let mut child = s.nb(&["gc", "--yes", "--batch-paths", "10"]);
    std::os::unix::process::CommandExt::process_group(&mut child, 0);
    let mut child = child
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ledger = s.env.home().join("ledger.sqlite");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let deleted: i64 = rusqlite::Connection::open_with_flags(
            &ledger,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM gc_deletions WHERE state = 'deleted'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap_or(0);
        if deleted >= 30 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "gc ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "gc did not get going");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The whole group: nix-ledger and the nix-store --delete it runs.
    let pgid = child.id() as i32;
    run_ok(std::process::Command::new("kill").args(["-s", "KILL", "--", &format!("-{pgid}")]));
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    s.verify();
    // The next command settles the killed run against the store.
    s.nb_ok(&["store"]);
    let run = s.nb_json(&["query", "SELECT status FROM gc_runs"]);
    assert_eq!(run[0]["status"], "interrupted", "{run}");
    let pending = s.env_query("SELECT count(*) FROM gc_deletions WHERE state = 'pending'");
    assert_eq!(pending, [0]);
    let rows = s.nb_json(&["query", "SELECT path, state FROM gc_deletions"]);
    let valid = s.valid_set();
    let mut said_deleted = 0;
    for row in rows.as_array().unwrap() {
        let path = row["path"].as_str().unwrap();
        let deleted = row["state"] == "deleted";
        said_deleted += usize::from(deleted);
        assert_eq!(
            !valid.contains(path),
            deleted,
            "{path}: the ledger says {}",
            row["state"]
        );
    }
    let still: usize = added.iter().filter(|p| valid.contains(*p)).count();
    assert_eq!(
        said_deleted + still,
        300,
        "every path is either deleted (and recorded) or still there"
    );
    assert!(
        still > 0 && said_deleted >= 30,
        "killed in the middle: {said_deleted} deleted, {still} left"
    );
    // A later run finishes the job.
    let done = s.nb_json(&["gc", "--yes"]);
    assert_eq!(done["status"], "finished");
    let valid = s.valid_set();
    assert!(added.iter().all(|p| !valid.contains(p)));
    s.verify();
}

#[test]
fn a_path_that_became_live_after_planning_stays_and_the_rest_goes() {
    let s = Store::new("race", "");
    let a = s.build("tool", &["--argstr", "v", "a"], None);
    let b = s.build("tool", &["--argstr", "v", "b"], None);
    let c = s.build("app", &["--argstr", "v", "c"], None);
    let plan_file = s.path("plan.json");
    std::fs::write(&plan_file, s.nb_ok(&["gc", "--dry-run", "--json"])).unwrap();
    // Between the plan and its execution, a becomes a root.
    std::os::unix::fs::symlink(&a[0], s.state_dir().join("gcroots/late")).unwrap();
    let done = s.nb_json(&["gc", "--yes", "--plan", plan_file.to_str().unwrap()]);
    assert_eq!(done["status"], "finished", "{done}");
    assert!(s.is_valid(&a[0]), "the new root's path stays");
    let refused: Vec<&str> = done["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    let kept = strings(&done["kept_alive"]);
    assert!(
        refused.contains(&a[0].as_str()) || kept.contains(&a[0]),
        "reported: refused {refused:?}, kept {kept:?}"
    );
    assert!(
        !refused.is_empty(),
        "Nix refused, and nix-ledger said so: {done}"
    );
    for gone in [&b[0], &c[0]] {
        assert!(!s.is_valid(gone), "{gone} went");
    }
    s.verify();
}
