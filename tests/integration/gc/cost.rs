//! Cost-aware collection: dead local builds that took 1–20 s and dead 4 MiB blobs a
//! local binary cache holds. Freeing a target with `nix-ledger gc --max-freed` loses the
//! least rebuild time possible for it; `nix-collect-garbage --max-freed` on the same
//! setup, built again in a second store, loses what its directory order happens to
//! pick. Both numbers are printed (`--nocapture`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::Store;
use crate::util::run_ok;

/// Seconds each local build sleeps; each leaves 1 MiB.
const BUILD_SECONDS: [u32; 8] = [1, 2, 3, 5, 8, 12, 16, 20];
/// Blobs of 4 MiB, fetched back from the cache.
const BLOBS: usize = 8;
const TARGET: &str = "36M";
const TARGET_BYTES: u64 = 36 << 20;
const MIB: &str = "1048576";

/// Builds the setup in `s`: returns the local builds' outputs (name → path).
fn setup(s: &Store) -> BTreeMap<String, String> {
    // The costly builds run at once (they sleep, they do not compute).
    let locals: BTreeMap<String, String> = std::thread::scope(|scope| {
        let handles: Vec<_> = BUILD_SECONDS
            .iter()
            .map(|secs| {
                scope.spawn(move || {
                    let name = format!("build-{secs}s");
                    let out = s.build(
                        "costly",
                        &[
                            "--argstr",
                            "name",
                            &name,
                            "--argstr",
                            "seconds",
                            &secs.to_string(),
                            "--argstr",
                            "bytes",
                            MIB,
                        ],
                        None,
                    );
                    (name, out[0].clone())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let cache = format!("file://{}", s.path("cache").display());
    let blobs: Vec<String> = (0..BLOBS)
        .map(|i| {
            let bytes = (4 << 20).to_string();
            s.build(
                "costly",
                &[
                    "--argstr",
                    "name",
                    &format!("blob-{i}"),
                    "--argstr",
                    "bytes",
                    &bytes,
                ],
                None,
            )[0]
            .clone()
        })
        .collect();
    run_ok(
        s.command("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "copy",
                "--to",
            ])
            .arg(format!("{cache}?compression=none"))
            .args(&blobs),
    );
    run_ok(s.command("nix-store").arg("--delete").args(&blobs));
    for (i, blob) in blobs.iter().enumerate() {
        let bytes = (4 << 20).to_string();
        let fetched = s.build(
            "costly",
            &[
                "--argstr",
                "name",
                &format!("blob-{i}"),
                "--argstr",
                "bytes",
                &bytes,
                "--option",
                "substituters",
                &cache,
            ],
            None,
        );
        assert_eq!(&fetched[0], blob);
    }
    // From now on Nix (and nix-ledger) know the cache.
    s.write_conf(&format!("substituters = {cache}"));
    locals
}

/// narSize of every valid path.
fn sizes(s: &Store) -> BTreeMap<String, u64> {
    let out = run_ok(s.command("nix").args([
        "--extra-experimental-features",
        "nix-command",
        "path-info",
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
                i["narSize"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// What the ledger recorded for each local build: output → duration in ms.
fn durations(s: &Store) -> BTreeMap<String, i64> {
    let rows = s.nb_json(&[
        "query",
        "SELECT o.path, b.duration_ms FROM builds b JOIN build_outputs o ON o.build_id = b.id
         WHERE b.duration_ms IS NOT NULL",
    ]);
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["duration_ms"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Rebuild time lost: the recorded durations of the local builds now gone.
fn lost(
    s: &Store,
    locals: &BTreeMap<String, String>,
    recorded: &BTreeMap<String, i64>,
) -> (i64, Vec<String>) {
    let mut total = 0;
    let mut names = Vec::new();
    for (name, out) in locals {
        if !s.is_valid(out) {
            total += recorded[out];
            names.push(name.clone());
        }
    }
    (total, names)
}

#[test]
fn nb_gc_frees_a_target_losing_the_least_rebuild_time_nix_collect_garbage_loses_more() {
    let (ours, theirs) = (Store::new("cost-nb", ""), Store::new("cost-ncg", ""));
    let (locals_a, locals_b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| setup(&ours));
        let b = scope.spawn(|| setup(&theirs));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (rec_a, rec_b) = (durations(&ours), durations(&theirs));
    for (name, out) in &locals_a {
        let secs: i64 = name
            .trim_start_matches("build-")
            .trim_end_matches('s')
            .parse()
            .unwrap();
        assert!(
            (secs * 1000 - 500..secs * 1000 + 5_000).contains(&rec_a[out]),
            "{name}: {} ms",
            rec_a[out]
        );
    }

    // The least rebuild time that frees the target: everything free to get back (the
    // blobs, the .drv files) and then the cheapest set of local builds that is enough.
    let before = sizes(&ours);
    let dead: Vec<String> = super::strings(&ours.nb_json(&["store", "--paths"])["dead"]);
    let local_outs: Vec<&String> = locals_a.values().collect();
    let free_bytes: u64 = dead
        .iter()
        .filter(|p| !local_outs.contains(p))
        .map(|p| before[p])
        .sum();
    let need = TARGET_BYTES.saturating_sub(free_bytes);
    let mut best = i64::MAX;
    for mask in 0u32..(1 << local_outs.len()) {
        let chosen = (0..local_outs.len()).filter(|i| mask & (1 << i) != 0);
        let (bytes, ms) = chosen.fold((0u64, 0i64), |(b, m), i| {
            (b + before[local_outs[i]], m + rec_a[local_outs[i]])
        });
        if bytes >= need {
            best = best.min(ms);
        }
    }

    // --keep-costlier-than keeps the builds no cache has that took longer.
    let kept = ours.nb_json(&["gc", "--dry-run", "--keep-costlier-than", "10s"]);
    let mut kept_names: Vec<&str> = kept["plan"]["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    kept_names.sort();
    assert_eq!(
        kept_names,
        ["build-12s", "build-16s", "build-20s"],
        "{kept}"
    );
    let planned: Vec<&str> = kept["plan"]["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert!(
        planned.contains(&"build-8s") && planned.contains(&"blob-0"),
        "{planned:?}"
    );
    assert!(!planned.contains(&"build-20s"));

    let done = ours.nb_json(&["gc", "--yes", "--max-freed", TARGET]);
    assert_eq!(done["status"], "finished", "{done}");
    assert!(
        done["freed_bytes"].as_u64().unwrap() >= TARGET_BYTES,
        "{done}"
    );
    let plan = &done["plan"];
    let first_local = plan["builds"].as_array().unwrap().iter().position(|b| {
        b["cost_basis"] == "build" && b["name"].as_str().unwrap().starts_with("build-")
    });
    let last_blob = plan["builds"]
        .as_array()
        .unwrap()
        .iter()
        .rposition(|b| b["name"].as_str().unwrap().starts_with("blob-"));
    assert!(
        last_blob < first_local,
        "every blob (a download) goes before any build: {plan}"
    );
    let (nb_lost, nb_names) = lost(&ours, &locals_a, &rec_a);
    // The ledger's reports say what became of a build.
    let gone = &locals_a[&nb_names[0]];
    let shown = ours.nb_json(&["show", gone]);
    let deletion = &shown["gc_deletions"][0];
    assert_eq!(deletion["state"], "deleted", "{shown}");
    assert_eq!(deletion["cost_basis"], "build");
    assert_eq!(deletion["unit_cost_ms"], rec_a[gone]);

    run_ok(
        theirs
            .command("nix-collect-garbage")
            .args(["--max-freed", TARGET]),
    );
    let (ncg_lost, ncg_names) = lost(&theirs, &locals_b, &rec_b);
    eprintln!(
        "freeing {TARGET}: nix-ledger gc lost {:.1} s of rebuilds ({nb_names:?}); \
         nix-collect-garbage lost {:.1} s ({ncg_names:?}); least possible {:.1} s",
        nb_lost as f64 / 1000.0,
        ncg_lost as f64 / 1000.0,
        best as f64 / 1000.0
    );
    assert_eq!(nb_lost, best, "nix-ledger lost the least possible");
    assert!(nb_lost <= ncg_lost);
    assert!(
        done["cost_to_restore_ms"].as_i64().unwrap() >= nb_lost,
        "the recorded cost includes the rebuilds (and the downloads)"
    );
    ours.verify();
}
