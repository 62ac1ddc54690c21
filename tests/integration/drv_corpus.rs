//! The .drv reader against Nix itself: 1,708 real derivations and Nix 2.8's
//! `nix show-derivation` of each (see `shared/fixtures/README.md`). Every field of every
//! file must agree; then the same files, damaged at random, must never make the reader
//! panic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use nix_ledger::nix::drv::{self, Derivation};
use proptest::prelude::*;
use serde_json::Value;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/darwin-drv-corpus.tar.zst"
);
const FILES: usize = 1708;

struct Corpus {
    /// (file name, bytes), sorted by name.
    files: Vec<(String, Vec<u8>)>,
    /// `nix show-derivation` of all files, keyed by store path.
    nix: serde_json::Map<String, Value>,
}

/// Unpacks the fixture once per test binary and keeps it in memory, so the temporary
/// directory is gone before any test runs.
fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        // A missing fixture must fail the run: a corpus test that passes by skipping
        // proves nothing.
        assert!(
            Path::new(FIXTURE).is_file(),
            "\n\n*** .drv corpus fixture missing: {FIXTURE}\n\
             *** the agreement test with Nix cannot run; restore shared/fixtures.\n\n"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("tar")
            .args(["--zstd", "-xf", FIXTURE, "-C"])
            .arg(dir.path())
            .status()
            .expect("cannot run tar (with zstd) to unpack the .drv corpus");
        assert!(
            status.success(),
            "tar --zstd -xf {FIXTURE} failed: {status}"
        );

        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir.path().join("drv")).expect("corpus has drv/") {
            let entry = entry.expect("read drv/");
            let name = entry.file_name().into_string().expect("UTF-8 file name");
            files.push((name, std::fs::read(entry.path()).expect("read .drv")));
        }
        files.sort();
        let json = std::fs::read(dir.path().join("show-derivation.json")).expect("json");
        let nix = match serde_json::from_slice(&json).expect("show-derivation.json parses") {
            Value::Object(map) => map,
            other => panic!("show-derivation.json is not an object: {other:.80}"),
        };
        Corpus { files, nix }
    })
}

fn str_of(v: &Value) -> Option<&str> {
    v.as_str()
}

fn strings(v: &Value) -> Option<Vec<&str>> {
    v.as_array()?.iter().map(str_of).collect()
}

/// Compares our reading of one file with Nix's, field by field, appending differences.
fn compare(ours: &Derivation, nix: &Value, diffs: &mut Vec<String>) {
    let mut differ = |field: &str, ours: &dyn std::fmt::Debug, nix: &dyn std::fmt::Debug| {
        diffs.push(format!("{field}: ours {ours:?}, nix {nix:?}"));
    };
    let Some(nix) = nix.as_object() else {
        return differ("whole", &"object", &nix);
    };
    let keys: BTreeSet<&str> = nix.keys().map(String::as_str).collect();
    let known = BTreeSet::from([
        "outputs",
        "inputDrvs",
        "inputSrcs",
        "system",
        "builder",
        "args",
        "env",
    ]);
    if keys != known {
        differ("top-level keys", &known, &keys);
    }

    // outputs: Nix prints hashAlgo and hash only for content-addressed outputs and
    // path only when known; absent means empty in the .drv.
    let nix_outputs = nix.get("outputs").and_then(Value::as_object);
    let ours_names: Vec<&String> = ours.outputs.keys().collect();
    let nix_names: Vec<&String> = nix_outputs.map(|o| o.keys().collect()).unwrap_or_default();
    if ours_names != nix_names {
        differ("output names", &ours_names, &nix_names);
    }
    for (name, out) in &ours.outputs {
        let Some(n) = nix_outputs
            .and_then(|o| o.get(name))
            .and_then(Value::as_object)
        else {
            continue;
        };
        for key in n.keys() {
            if !["path", "hashAlgo", "hash"].contains(&key.as_str()) {
                differ(&format!("outputs.{name} key"), &"", key);
            }
        }
        for (field, ours_value) in [
            ("path", &out.path),
            ("hashAlgo", &out.hash_algo),
            ("hash", &out.hash),
        ] {
            let nix_value = n.get(field).and_then(str_of).unwrap_or("");
            if ours_value != nix_value {
                differ(&format!("outputs.{name}.{field}"), ours_value, &nix_value);
            }
        }
    }

    let nix_input_drvs: Option<BTreeMap<&str, BTreeSet<&str>>> = nix
        .get("inputDrvs")
        .and_then(Value::as_object)
        .and_then(|m| {
            m.iter()
                .map(|(k, v)| Some((k.as_str(), strings(v)?.into_iter().collect())))
                .collect()
        });
    let ours_input_drvs: BTreeMap<&str, BTreeSet<&str>> = ours
        .input_drvs
        .iter()
        .map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect()))
        .collect();
    if Some(&ours_input_drvs) != nix_input_drvs.as_ref() {
        differ("inputDrvs", &ours_input_drvs, &nix_input_drvs);
    }

    let nix_srcs: Option<BTreeSet<&str>> = nix
        .get("inputSrcs")
        .and_then(strings)
        .map(|v| v.into_iter().collect());
    let ours_srcs: BTreeSet<&str> = ours.input_srcs.iter().map(String::as_str).collect();
    if Some(&ours_srcs) != nix_srcs.as_ref() {
        differ("inputSrcs", &ours_srcs, &nix_srcs);
    }

    for (field, ours_value) in [("system", &ours.system), ("builder", &ours.builder)] {
        let nix_value = nix.get(field).and_then(str_of);
        if Some(ours_value.as_str()) != nix_value {
            differ(field, ours_value, &nix_value);
        }
    }

    let nix_args = nix.get("args").and_then(strings);
    let ours_args: Vec<&str> = ours.args.iter().map(String::as_str).collect();
    if Some(&ours_args) != nix_args.as_ref() {
        differ("args", &ours_args, &nix_args);
    }

    let nix_env: Option<BTreeMap<&str, &str>> =
        nix.get("env").and_then(Value::as_object).and_then(|m| {
            m.iter()
                .map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .collect()
        });
    let ours_env: BTreeMap<&str, &str> = ours
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    match &nix_env {
        Some(nix_env) if *nix_env == ours_env => {}
        Some(nix_env) => {
            let keys: BTreeSet<&&str> = ours_env.keys().chain(nix_env.keys()).collect();
            for key in keys {
                if ours_env.get(key) != nix_env.get(key) {
                    differ(&format!("env.{key}"), &ours_env.get(key), &nix_env.get(key));
                }
            }
        }
        None => differ("env", &ours_env, &nix_env),
    }
}

#[test]
fn every_corpus_file_agrees_with_nix_show_derivation() {
    let corpus = corpus();
    assert_eq!(corpus.files.len(), FILES, "files in the corpus");
    assert_eq!(corpus.nix.len(), FILES, "entries in show-derivation.json");

    let mut failures = Vec::new();
    let (mut fixed, mut multi, mut structured, mut outputs) = (0, 0, 0, 0);
    for (name, bytes) in &corpus.files {
        let store_path = format!("/nix/store/{name}");
        let Some(nix) = corpus.nix.get(&store_path) else {
            failures.push(format!("{name}: not in show-derivation.json"));
            continue;
        };
        let ours = match drv::parse(bytes) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let mut diffs = Vec::new();
        compare(&ours, nix, &mut diffs);

        // The hook's reader must see the same outputs, in file order.
        let expected: Vec<(String, String)> = ours
            .outputs
            .iter()
            .map(|(n, o)| (n.clone(), o.path.clone()))
            .collect();
        match drv::parse_outputs(bytes) {
            Ok(got) if got == expected => {}
            other => diffs.push(format!("parse_outputs: {other:?}, want {expected:?}")),
        }
        // Writing it back must give Nix's bytes: nothing was lost or reordered.
        if ours.to_aterm().as_bytes() != bytes.as_slice() {
            diffs.push("to_aterm differs from the file".into());
        }
        if let Some(json) = ours.env.get("__json") {
            structured += 1;
            let parsed: Option<Value> = serde_json::from_str(json).ok();
            if parsed.is_none() || ours.structured_attrs() != parsed {
                diffs.push("structured_attrs does not match __json".into());
            }
        }
        fixed += usize::from(ours.is_fixed_output());
        multi += usize::from(ours.outputs.len() > 1);
        outputs += ours.outputs.len();
        failures.extend(diffs.into_iter().map(|d| format!("{name}: {d}")));
    }
    assert!(
        failures.is_empty(),
        "{} disagreements with Nix, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    // The corpus covers what it claims to (README), so agreement means something.
    assert_eq!(structured, 8, "derivations with structured attrs");
    assert_eq!(outputs, 2340, "outputs in total");
    assert!(
        fixed > 500 && multi > 50,
        "fixed {fixed}, multi-output {multi}"
    );
}

/// The hook reads only the head of a .drv and re-reads the whole file when
/// `parse_outputs` fails on it, so every head that cuts into the outputs must fail and
/// every longer one must give the full answer.
#[test]
fn parse_outputs_on_every_truncation_of_the_outputs_section() {
    for (name, bytes) in &corpus().files {
        let full = drv::parse_outputs(bytes).expect("corpus file");
        let end = bytes
            .windows(3)
            .position(|w| w == b")],")
            .map(|i| i + 2)
            .expect("outputs end");
        for len in 0..end {
            assert!(
                drv::parse_outputs(&bytes[..len]).is_err(),
                "{name}: head of {len} bytes parsed"
            );
        }
        for len in end..(end + 64).min(bytes.len()) {
            assert_eq!(
                drv::parse_outputs(&bytes[..len]).as_ref(),
                Ok(&full),
                "{name}"
            );
        }
    }
}

fn mutated_corpus_file() -> impl Strategy<Value = Vec<u8>> {
    (
        0..FILES,
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(file, edits, cut)| {
            let mut bytes = corpus().files[file % corpus().files.len()].1.clone();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                // Favour the bytes the syntax turns on, or random ones would mostly
                // land inside strings and change nothing structural.
                bytes[i] = match byte % 4 {
                    0 => b"\"\\[](),"[usize::from(byte) % 7],
                    _ => byte,
                };
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn damaged_corpus_files_never_panic(bytes in mutated_corpus_file()) {
        let full = drv::parse(&bytes);
        let outputs = drv::parse_outputs(&bytes);
        // Whatever the damage, the two readers agree when both succeed (up to order:
        // a damaged name can move out of Nix's sorted order).
        if let (Ok(d), Ok(o)) = (&full, &outputs) {
            let from_full: Vec<(String, String)> =
                d.outputs.iter().map(|(n, x)| (n.clone(), x.path.clone())).collect();
            let mut o = o.clone();
            o.sort();
            prop_assert_eq!(from_full, o);
        }
        if let Err(e) = &full {
            let e = e.to_string();
            prop_assert!(!e.is_empty() && !e.contains('\n'));
        }
    }
}
