//! `nix-ledger store` agrees with Nix: its live and dead paths are exactly
//! `nix-store --gc --print-live` and `--print-dead`, with keep-outputs and
//! keep-derivations on and off, and its sizes are `nix path-info -S`'s.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{strings, Store};
use crate::util::run_ok;

/// A process whose working directory is a store path: a runtime root, killed on drop.
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Result links (one on one output of a 3-output build), a profile of 3 generations in
/// the state directory and one elsewhere, direct roots (one into a file inside a path),
/// a stale auto link, dead builds, an added path, an invalid leftover and a junk file,
/// and a running process holding a path.
fn scenario(s: &Store) -> Sleeper {
    let out = s.path("out");
    s.build("docs", &[], Some(&out.join("r-docs")));
    s.build("multi.lib", &[], Some(&out.join("r-multi")));
    let stale = out.join("r-stale");
    s.build("tool", &["--argstr", "v", "stale"], Some(&stale));
    std::fs::remove_file(&stale).unwrap();
    for v in ["1", "2", "3"] {
        let app = s.build("app", &["--argstr", "v", v], None);
        run_ok(
            s.command("nix-env")
                .arg("-p")
                .arg(s.state_dir().join("profiles/main"))
                .args(["--set", &app[0]]),
        );
    }
    let tool1 = s.build("tool", &["--argstr", "v", "1"], None);
    run_ok(
        s.command("nix-env")
            .arg("-p")
            .arg(out.join("myprof"))
            .args(["--set", &tool1[0]]),
    );
    let tool2 = s.build("tool", &["--argstr", "v", "2"], None);
    std::os::unix::fs::symlink(&tool2[0], s.state_dir().join("gcroots/direct")).unwrap();
    let lib = s.build("lib", &[], None);
    std::os::unix::fs::symlink(
        format!("{}/id", lib[0]),
        s.state_dir().join("gcroots/into-file"),
    )
    .unwrap();
    s.build("tool", &["--argstr", "v", "dead"], None);
    s.build(
        "costly",
        &[
            "--argstr",
            "name",
            "dead-blob",
            "--argstr",
            "bytes",
            "20000",
        ],
        None,
    );
    let added = s.path("tmp/added.txt");
    std::fs::write(&added, "added by hand").unwrap();
    run_ok(s.command("nix-store").arg("--add").arg(&added));
    let hash = crate::util::fake_hash(&s.env.salt);
    std::fs::create_dir(s.store_dir().join(format!("{hash}-leftover"))).unwrap();
    let held = s.build("tool", &["--argstr", "v", "held"], None);
    Sleeper(
        s.command("sleep")
            .arg("120")
            .current_dir(&held[0])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `nix path-info -S --json --all`: path → (narSize, closureSize).
fn path_info(s: &Store) -> BTreeMap<String, (u64, u64)> {
    let out = run_ok(s.command("nix").args([
        "--extra-experimental-features",
        "nix-command",
        "path-info",
        "-S",
        "--json",
        "--all",
    ]));
    let infos: Value = serde_json::from_slice(&out.stdout).unwrap();
    infos
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["path"].as_str().unwrap().to_string(),
                (
                    i["narSize"].as_u64().unwrap(),
                    i["closureSize"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn live_and_dead_paths_and_sizes_are_nixs_with_every_keep_setting() {
    let s = Store::new("agree", "");
    let _sleeper = scenario(&s);
    let sizes = path_info(&s);
    for (outputs, derivations) in [(false, true), (false, false), (true, false), (true, true)] {
        s.write_conf(&format!(
            "keep-outputs = {outputs}\nkeep-derivations = {derivations}"
        ));
        // Nix's --print-live and --print-dead both list a junk entry (a name that is no
        // store path), and delete it: it is put back before each, and nix-ledger asked
        // first each time.
        let junk = s.store_dir().join("junkfile");
        std::fs::write(&junk, "junk").unwrap();
        let for_live = s.nb_json(&["store", "--paths"]);
        let nix_live = s.nix_store_lines(&["--gc", "--print-live"]);
        std::fs::write(&junk, "junk").unwrap();
        let report = s.nb_json(&["store", "--paths"]);
        let nix_dead = s.nix_store_lines(&["--gc", "--print-dead"]);
        let what = format!("keep-outputs {outputs}, keep-derivations {derivations}");
        assert!(
            nix_live.contains(&junk.display().to_string()),
            "Nix lists junk as live too"
        );
        assert_eq!(strings(&for_live["live"]), nix_live, "live, {what}");
        assert_eq!(strings(&report["dead"]), nix_dead, "dead, {what}");
        // The counts count junk as dead only.
        assert_eq!(report["live_paths"], nix_live.len() - 1, "{what}");
        assert_eq!(report["dead_paths"], nix_dead.len(), "{what}");
        assert_eq!(report["junk_entries"], 1);
        assert_eq!(report["keep_outputs"], outputs);
        assert_eq!(report["keep_derivations"], derivations);
        assert!(nix_dead.iter().any(|p| p.ends_with("-leftover")), "{what}");

        // Sizes: the store's, the live set's, and every root's closure.
        assert_eq!(report["paths"], sizes.len());
        assert_eq!(
            report["store_bytes"],
            sizes.values().map(|s| s.0).sum::<u64>()
        );
        let live_bytes: u64 = nix_live
            .iter()
            .filter_map(|p| sizes.get(p))
            .map(|s| s.0)
            .sum();
        assert_eq!(for_live["live_bytes"], live_bytes, "{what}");
        assert_eq!(report["live_bytes"], live_bytes, "{what}");
        let dead_bytes: u64 = nix_dead
            .iter()
            .filter_map(|p| sizes.get(p))
            .map(|s| s.0)
            .sum();
        assert_eq!(report["dead_bytes"], dead_bytes, "{what}");
        for root in report["root_list"].as_array().unwrap() {
            let path = root["path"].as_str().unwrap();
            assert_eq!(root["closure_bytes"], sizes[path].1, "closure of {path}");
        }
    }
    let report = s.nb_json(&["store"]);
    let kinds = &report["root_kinds"];
    assert_eq!(
        kinds["profile"], 4,
        "3 generations of main, 1 of myprof: {kinds}"
    );
    assert_eq!(kinds["indirect"], 2, "{kinds}");
    assert_eq!(kinds["gcroot"], 2, "{kinds}");
    assert!(kinds["runtime"].as_u64().unwrap_or(0) >= 1, "{kinds}");
    assert_eq!(
        report["roots"],
        report["root_list"].as_array().unwrap().len()
    );
    let profiles: Vec<&str> = report["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["profile"].as_str().unwrap())
        .collect();
    assert_eq!(profiles.len(), 2, "{profiles:?}");
    assert!(report["locally_built_bytes"].as_u64().unwrap() > 20_000);
    assert_eq!(report["substituted_bytes"], 0);
    // Nothing in the report's numbers may contradict the others.
    assert_eq!(
        report["live_paths"].as_u64().unwrap() + report["dead_paths"].as_u64().unwrap(),
        Command::new("ls")
            .arg("-A")
            .arg(s.store_dir())
            .output()
            .map(|o| o
                .stdout
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty() && *l != b".links")
                .count() as u64)
            .unwrap(),
        "every store entry is live or dead"
    );
}
