//! `nix-ledger why` and `rebuilds` with the real Nix: a project rebuilt after a README
//! edit, an env change, a change deep in a 30-derivation graph, a rebuild with identical
//! output, and a diff against a build that Nix has already garbage-collected.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{instantiate, run_ok, TestEnv};
use nix_ledger::ledger::Ledger;

/// A small project with `src = ./src`, salted through a file in the source.
struct Project {
    dir: tempfile::TempDir,
}

const DEFAULT_NIX: &str = r#"{ flavour ? "plain", comment ? "" }:
derivation {
  name = "why-app";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  inherit flavour comment;
  src = ./src;
  args = [ "-c" ''mkdir "$out" && cp "$src/main.c" "$out/" && echo "$flavour" > "$out/flavour" && echo "$out" > "$out/self"'' ];
}
"#;

impl Project {
    fn new(env: &TestEnv) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("default.nix"), DEFAULT_NIX).unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let project = Project { dir };
        project.write("README.md", "# why-app\n");
        project.write("main.c", "int main(void) { return 0; }\n");
        project.write("salt", &env.salt);
        project
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("default.nix")
    }

    fn write(&self, rel: &str, body: &str) {
        std::fs::write(self.dir.path().join("src").join(rel), body).unwrap();
    }

    /// Builds with the hook; returns the output path.
    fn build(&self, env: &TestEnv, args: &[&str]) -> String {
        let out = run_ok(&mut env.nix_build(&self.file(), args));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

fn root_causes(report: &Value) -> &Vec<Value> {
    report["root_causes"].as_array().unwrap()
}

#[test]
fn why_a_readme_only_change_is_an_avoidable_rebuild_naming_the_file() {
    let env = TestEnv::new("why-readme");
    let project = Project::new(&env);
    project.build(&env, &[]);
    project.write("README.md", "# why-app\n\nNow with more words.\n");
    project.build(&env, &[]);
    let new = instantiate(&project.file(), &[]);

    let report = env.ledger_json(&["why", &new]);
    assert_eq!(report["target"], new.as_str());
    let causes = root_causes(&report);
    assert_eq!(causes.len(), 1, "{report:#}");
    let cause = &causes[0];
    assert_eq!(cause["name"], "why-app");
    let sources = cause["changes"]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0]["name"], "src");
    let files = sources[0]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["path"], "README.md");
    assert_eq!(files[0]["change"], "modified");
    // Only the source changed: the `src` variable's new store path is not an env change.
    assert!(cause["changes"].get("env").is_none(), "{cause:#}");
    let verdict = &cause["verdict"];
    assert_eq!(verdict["kind"], "avoidable");
    assert_eq!(verdict["files"], serde_json::json!(["README.md"]));
    assert!(verdict["advice"]
        .as_str()
        .unwrap()
        .contains("lib.fileset.toSource"));
    assert!(
        verdict["cost_ms"].is_i64(),
        "the new build's time: {verdict}"
    );

    // The .nix file itself is an accepted target, instantiated to the same .drv.
    let by_file = env.ledger_json(&["why", project.file().to_str().unwrap()]);
    assert_eq!(by_file["target"], new.as_str());
    let text = env.ledger_ok(&["why", &new]);
    assert!(
        text.contains("AVOIDABLE") && text.contains("modified README.md"),
        "{text}"
    );

    let rebuilds = env.ledger_json(&["rebuilds", "--since", "1h"]);
    let entries = rebuilds["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{rebuilds:#}");
    assert_eq!(entries[0]["kind"], "avoidable");
    assert_eq!(entries[0]["drv_path"], new.as_str());
    assert!(entries[0]["detail"].as_str().unwrap().contains("README.md"));
    assert_eq!(rebuilds["wasted_ms"], entries[0]["duration_ms"]);
}

#[test]
fn why_names_a_changed_env_var_with_its_old_and_new_values() {
    let env = TestEnv::new("why-env");
    let project = Project::new(&env);
    project.build(&env, &["--argstr", "flavour", "plain"]);
    let out = project.build(&env, &["--argstr", "flavour", "spicy"]);

    // An output path is accepted: its deriver comes from the ledger.
    let report = env.ledger_json(&["why", &out]);
    let causes = root_causes(&report);
    assert_eq!(causes.len(), 1, "{report:#}");
    assert_eq!(
        causes[0]["changes"]["env"],
        serde_json::json!([{"name": "flavour", "old": "plain", "new": "spicy"}])
    );
    assert!(causes[0]["changes"].get("sources").is_none());
    assert_eq!(causes[0]["verdict"]["kind"], "change");
    assert_eq!(causes[0]["verdict"]["outputs_identical"], false);
    let text = env.ledger_ok(&["why", &out]);
    assert!(text.contains(r#"env flavour: "plain" → "spicy""#), "{text}");
    // Not wasted: nothing to list.
    let rebuilds = env.ledger_json(&["rebuilds"]);
    assert_eq!(rebuilds["entries"], serde_json::json!([]));
}

#[test]
fn why_a_rebuild_with_identical_output_is_a_no_op() {
    let env = TestEnv::new("why-noop");
    let project = Project::new(&env);
    let old_out = project.build(&env, &["--argstr", "comment", "first"]);
    let new_out = project.build(&env, &["--argstr", "comment", "second"]);
    assert_ne!(old_out, new_out);
    // Each output names itself in `self`: not byte-identical, identical once normalised.
    let old_self = std::fs::read_to_string(Path::new(&old_out).join("self")).unwrap();
    assert_eq!(old_self.trim(), old_out);

    let new = instantiate(&project.file(), &["--argstr", "comment", "second"]);
    let report = env.ledger_json(&["why", &new]);
    let causes = root_causes(&report);
    assert_eq!(causes.len(), 1, "{report:#}");
    assert_eq!(causes[0]["changes"]["env"][0]["name"], "comment");
    assert_eq!(causes[0]["verdict"]["kind"], "no-op");
    assert_eq!(causes[0]["verdict"]["outputs_identical"], true);

    let rebuilds = env.ledger_json(&["rebuilds", "--since", "2h"]);
    let entries = rebuilds["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{rebuilds:#}");
    assert_eq!(entries[0]["kind"], "no-op");
    assert_eq!(rebuilds["no_op"], 1);
}

/// The .drv files of a derivation's closure.
fn drv_closure(drv: &str) -> HashSet<String> {
    let out = run_ok(Command::new("nix-store").args(["--query", "--requisites", drv]));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(".drv"))
        .map(str::to_string)
        .collect()
}

#[test]
fn why_finds_one_root_cause_four_levels_down_a_30_derivation_graph() {
    let env = TestEnv::new("why-graph");
    let graph = crate::util::graph_nix();
    let base = [
        "--argstr", "salt", &env.salt, "--arg", "n", "29", "--arg", "top", "true",
    ];
    let changed: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--arg", "changeNode", "2", "--argstr", "changeValue", "new"])
        .collect();
    run_ok(&mut env.nix_build(&graph, &base));
    let old = instantiate(&graph, &base);
    let new = instantiate(&graph, &changed);
    assert_eq!(drv_closure(&new).len(), 30, "29 nodes and the top");
    run_ok(&mut env.nix_build(&graph, &changed));

    // What Nix itself says changed: the new closure's .drv files not in the old one.
    let old_closure = drv_closure(&old);
    let differing: Vec<String> = drv_closure(&new)
        .into_iter()
        .filter(|d| !old_closure.contains(d))
        .collect();
    assert!(
        differing.len() > 5,
        "node 2 has many dependents: {differing:?}"
    );

    let report = env.ledger_json(&["why", &new]);
    assert_eq!(
        report["against"],
        old.as_str(),
        "the previous build of the top"
    );
    let causes = root_causes(&report);
    assert_eq!(causes.len(), 1, "{report:#}");
    assert_eq!(causes[0]["name"], "ledger-example-2");
    assert_eq!(
        causes[0]["changes"]["env"],
        serde_json::json!([{"name": "change", "old": null, "new": "new"}])
    );
    assert_eq!(causes[0]["downstream"], differing.len() - 1);
    assert_eq!(causes[0]["downstream_shared"], 0);
    assert_eq!(causes[0]["verdict"]["kind"], "no-op");
    assert_eq!(report["changed_derivations"], differing.len());

    // The wrapper's summary after the second build: one root cause, its downstream count.
    let ledger = Ledger::open(&env.home().join("ledger.sqlite")).unwrap();
    let summary = nix_ledger::why::summary_after_build(&ledger, &differing)
        .unwrap()
        .expect("rebuilt derivations were built before");
    assert!(
        summary.contains(&format!(
            "{} derivations rebuilt that were built before; 1 root cause",
            differing.len()
        )),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            // The nodes write only their name and salt, so the extra variable changes
            // nothing in node 2's output: a no-op.
            "ledger-example-2 [no-op]: env change (+{} downstream)",
            differing.len() - 1
        )),
        "{summary}"
    );
    assert!(summary.lines().count() <= 24);
    // The first build's derivations had never been built before it.
    let first: Vec<String> = old_closure.into_iter().collect();
    assert_eq!(
        nix_ledger::why::summary_after_build(&ledger, &first).unwrap(),
        None
    );
}

#[test]
fn why_diffs_files_of_a_source_that_nix_already_garbage_collected() {
    let env = TestEnv::new("why-gc");
    let project = Project::new(&env);
    let old_out = project.build(&env, &[]);
    let old_drv = instantiate(&project.file(), &[]);
    let old_src = nix_ledger::nix::drv::read(Path::new(&old_drv))
        .unwrap()
        .input_srcs
        .into_iter()
        .find(|s| s.ends_with("-src"))
        .unwrap();
    // Ingest now, while the old build is still in the store.
    env.ledger_ok(&["ingest"]);
    // The whole dead build goes in one command (see notes: its parts keep each other alive).
    run_ok(Command::new("nix-store").args(["--delete", &old_drv, &old_out, &old_src]));
    for gone in [&old_drv, &old_out, &old_src] {
        assert!(!Path::new(gone).exists(), "{gone} still there");
    }

    project.write("main.c", "int main(void) { return 1; }\n");
    project.write("extra.h", "#define X 1\n");
    project.build(&env, &[]);
    let new = instantiate(&project.file(), &[]);
    let report = env.ledger_json(&["why", &new]);
    assert_eq!(report["against"], old_drv.as_str());
    let causes = root_causes(&report);
    assert_eq!(causes.len(), 1, "{report:#}");
    let source = &causes[0]["changes"]["sources"][0];
    assert_eq!(source["old_path"], old_src.as_str());
    let files: Vec<(&str, &str)> = source["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["change"].as_str().unwrap()))
        .collect();
    assert_eq!(files, [("extra.h", "added"), ("main.c", "modified")]);
    assert_eq!(causes[0]["verdict"]["kind"], "change");
}

#[test]
fn why_rejects_bad_targets_with_one_line_naming_them() {
    let env = TestEnv::new("why-bad");
    for (target, expect) in [
        ("not-a-thing", "not-a-thing: not a .drv"),
        (
            "/nix/store/00000000000000000000000000000000-none.drv",
            "00000000000000000000000000000000-none.drv: neither in the store nor in the ledger",
        ),
    ] {
        let out = env.ledger(&["why", target]);
        assert!(!out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expect), "{stderr}");
    }
    let out = env.ledger(&["rebuilds", "--since", "lately"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("lately: not a duration"));
}

#[test]
fn nb_build_after_a_one_node_change_prints_its_root_cause() {
    let env = TestEnv::new("why-nb");
    let build = |extra: &[&str]| -> String {
        let mut cmd = Command::new(crate::util::ledger_bin());
        cmd.arg("build")
            .arg("-f")
            .arg(crate::util::graph_nix())
            .args(["--argstr", "salt", &env.salt, "--arg", "n", "12"])
            .args([
                "--arg",
                "top",
                "true",
                "--no-link",
                "--option",
                "substituters",
                "",
            ])
            .args(extra)
            .env("NIX_LEDGER_HOME", env.home());
        String::from_utf8(run_ok(&mut cmd).stderr).unwrap()
    };
    let first = build(&[]);
    assert!(
        !first.contains("root cause"),
        "nothing was built before: {first}"
    );
    let second = build(&["--arg", "changeNode", "3", "--argstr", "changeValue", "x"]);
    assert!(second.contains("1 root cause"), "{second}");
    // Node 3's output holds only its name and salt: the extra variable changed nothing.
    assert!(second.contains("ledger-example-3 [no-op]"), "{second}");
    // The wrapper alone (no hook here) still records every output of every build.
    for entry in env.history() {
        assert_eq!(entry["source"], "wrapper");
        let drv = entry["drv_path"].as_str().unwrap();
        assert_eq!(
            crate::util::entry_outputs(&entry),
            crate::util::drv_outputs(drv),
            "{drv}"
        );
        assert_eq!(
            entry["system"],
            std::env::consts::ARCH.to_string() + "-linux"
        );
    }
}

#[test]
fn the_summary_after_a_wide_rebuild_counts_every_rebuild_and_every_target() {
    let env = TestEnv::new("why-wide");
    let n = 60;
    let build = |salt: &str| -> String {
        let mut cmd = Command::new(crate::util::ledger_bin());
        cmd.arg("build")
            .arg("-f")
            .arg(crate::util::graph_nix())
            .args(["--argstr", "salt", salt, "--arg", "n", &n.to_string()])
            .args(["-j", "2", "--no-link", "--option", "substituters", ""])
            .env("NIX_LEDGER_HOME", env.home());
        String::from_utf8(run_ok(&mut cmd).stderr).unwrap()
    };
    build(&format!("{}-a", env.salt));
    let second = build(&format!("{}-b", env.salt));
    // The graph's roots, as examples/graph.nix wires it: node i depends on (i-1)/2 and,
    // for every third i > 2, on i-2.
    let depended_on: HashSet<u32> = (1..n)
        .map(|i| (i - 1) / 2)
        .chain((3..n).filter(|i| i % 3 == 0).map(|i| i - 2))
        .collect();
    let roots = (0..n).filter(|i| !depended_on.contains(i)).count();
    assert!(roots > 16, "the graph must have more roots than are shown");
    assert!(
        second.contains(&format!("{n} derivations rebuilt that were built before")),
        "{second}"
    );
    assert!(
        second.contains(&format!(
            "causes of the first 16 of {roots} rebuilt targets"
        )),
        "{second}"
    );
}
