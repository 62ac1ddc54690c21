//! Profile generations: `--keep-generations N` keeps the current one and N-1 before it,
//! `--keep-since` keeps the recent ones, and both remove the rest through nix-env.

use super::Store;
use crate::util::run_ok;

fn generations(s: &Store, profile: &std::path::Path) -> Vec<u64> {
    let out = run_ok(
        s.command("nix-env")
            .arg("-p")
            .arg(profile)
            .arg("--list-generations"),
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

fn planned(v: &serde_json::Value) -> Vec<u64> {
    v["plan"]["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["generation"].as_u64().unwrap())
        .collect()
}

#[test]
fn keep_generations_and_keep_since_remove_old_generations() {
    let s = Store::new("gens", "");
    let profile = s.state_dir().join("profiles/main");
    let mut apps = Vec::new();
    for v in 1..=6 {
        let app = s.build("app", &["--argstr", "v", &v.to_string()], None);
        run_ok(
            s.command("nix-env")
                .arg("-p")
                .arg(&profile)
                .args(["--set", &app[0]]),
        );
        apps.push(app[0].clone());
    }
    // Generations 1-3 are old; 4-6 were made just now.
    for (n, age) in [(1, "40 days ago"), (2, "20 days ago"), (3, "5 hours ago")] {
        let link = s.state_dir().join(format!("profiles/main-{n}-link"));
        run_ok(
            Command::new("touch")
                .arg("-h")
                .arg("-d")
                .arg(age)
                .arg(&link),
        );
    }
    assert_eq!(generations(&s, &profile), [1, 2, 3, 4, 5, 6]);

    let keep_two = s.nb_json(&["gc", "--dry-run", "--keep-generations", "2"]);
    assert_eq!(planned(&keep_two), [1, 2, 3, 4]);
    let recent = s.nb_json(&["gc", "--dry-run", "--keep-since", "1h"]);
    assert_eq!(planned(&recent), [1, 2, 3]);
    assert_eq!(
        generations(&s, &profile),
        [1, 2, 3, 4, 5, 6],
        "a dry run removes nothing"
    );

    let done = s.nb_json(&["gc", "--yes", "--keep-since", "1h"]);
    assert_eq!(done["status"], "finished");
    assert_eq!(generations(&s, &profile), [4, 5, 6]);
    let deleted = super::strings(&done["deleted"]);
    for old in &apps[..3] {
        assert!(
            deleted.contains(old),
            "{old} went with its generation: {deleted:?}"
        );
        assert!(!s.is_valid(old));
    }

    let done = s.nb_json(&["gc", "--yes", "--keep-generations", "2"]);
    assert_eq!(done["generations_removed"].as_array().unwrap().len(), 1);
    assert_eq!(generations(&s, &profile), [5, 6]);
    assert!(!s.is_valid(&apps[3]));
    for kept in &apps[4..] {
        assert!(s.is_valid(kept));
    }
    let runs = s.env_query(
        "SELECT generation FROM gc_generations WHERE removed_ms IS NOT NULL ORDER BY generation",
    );
    assert_eq!(runs, [1, 2, 3, 4]);
    s.verify();
}

use std::process::Command;

impl Store {
    /// One integer column of a query on this test's ledger.
    pub fn env_query(&self, sql: &str) -> Vec<i64> {
        let text = self.nb_ok(&["query", "--json", sql]);
        let rows: serde_json::Value = serde_json::from_str(&text).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_object()
                    .unwrap()
                    .values()
                    .next()
                    .unwrap()
                    .as_i64()
                    .unwrap()
            })
            .collect()
    }
}
