//! The two `why` performance goals, measured against the real Nix:
//!
//! 1. manifest hashing: `manifest::hash_tree` (walkdir + blake3, files hashed in parallel)
//!    against `nix-hash --type sha256 DIR` on the same generated ~500 MB tree, alternating
//!    runs after one warm-up of each (so both read from the page cache);
//! 2. `why` between two ~2,000-derivation closures: `examples/graph.nix` with `n = 2000`
//!    and `top = true`, instantiated twice with one change (node 0, so every derivation
//!    differs and the walk is complete; and the last node, a single-path change), timed
//!    in-process and as a whole `nix-ledger why NEW --against OLD` process; and what
//!    ingest's `why::remember` costs for a new and for an already-known closure.
//!
//! Run: `cargo bench --bench why` (optionally `-- --runs N`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use nix_ledger::ledger::Ledger;
use nix_ledger::store::manifest;
use nix_ledger::why;

type Res<T> = Result<T, String>;

/// Target size of the generated tree.
const TREE_BYTES: u64 = 500 << 20;

fn main() {
    if let Err(e) = run() {
        eprintln!("why bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let runs = runs_from_args()?;
    let tmp = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    println!(
        "why bench: {} runs each; {} CPUs",
        runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    manifest_vs_nix_hash(tmp.path(), runs)?;
    why_closures(tmp.path(), runs)?;
    Ok(())
}

fn runs_from_args() -> Res<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--runs") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .filter(|&n: &usize| n > 0)
            .ok_or_else(|| "--runs needs a number above 0".to_string()),
        None => Ok(7),
    }
}

/// A deterministic tree of files of varied sizes: many small ones (source-like), some
/// medium, a few large, in nested directories.
fn generate_tree(root: &Path) -> Res<(u64, usize)> {
    let sizes: [u64; 6] = [300, 4 << 10, 40 << 10, 400 << 10, 4 << 20, 40 << 20];
    let weights: [usize; 6] = [6000, 4000, 1500, 300, 40, 5];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut total, mut files) = (0u64, 0usize);
    'outer: for (size, count) in sizes.iter().zip(weights) {
        for i in 0..count {
            let dir = root.join(format!("d{}/e{}", i % 37, i % 11));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let len = size / 2 + next() % size;
            let mut body = vec![0u8; len as usize];
            for chunk in body.chunks_mut(8) {
                let v = next().to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
            let path = dir.join(format!("f{size}-{i}"));
            std::fs::write(&path, &body).map_err(|e| format!("{}: {e}", path.display()))?;
            total += len;
            files += 1;
            if total >= TREE_BYTES {
                break 'outer;
            }
        }
    }
    Ok((total, files))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn show(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn manifest_vs_nix_hash(tmp: &Path, runs: usize) -> Res<()> {
    let root = tmp.join("tree");
    let (bytes, files) = generate_tree(&root)?;
    println!(
        "tree: {files} files, {:.0} MiB, under {}",
        bytes as f64 / (1 << 20) as f64,
        root.display()
    );
    let ours = || -> Res<f64> {
        let t = Instant::now();
        let entries = manifest::hash_tree(&root, &[], &manifest::Limits::DEFAULT)
            .map_err(|e| e.to_string())?
            .entries;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if entries.len() < files {
            return Err("manifest lost files".into());
        }
        Ok(ms)
    };
    let nix = || -> Res<f64> {
        let t = Instant::now();
        let status = Command::new("nix-hash")
            .args(["--type", "sha256"])
            .arg(&root)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("nix-hash: {e}"))?;
        if !status.success() {
            return Err(format!("nix-hash: {status}"));
        }
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    ours()?;
    nix()?;
    let (mut o, mut n) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        o.push(ours()?);
        n.push(nix()?);
    }
    let (mo, mn) = (median(o.clone()), median(n.clone()));
    println!(
        "ours  manifest (blake3, parallel):   median {mo:.0} ms  (runs: {})",
        show(&o)
    );
    println!(
        "nix   nix-hash --type sha256:        median {mn:.0} ms  (runs: {})",
        show(&n)
    );
    println!(
        "ours throughput {:.0} MiB/s; ratio nix / ours: {:.1}x",
        bytes as f64 / (1 << 20) as f64 / (mo / 1000.0),
        mn / mo
    );
    std::fs::remove_dir_all(&root).map_err(|e| e.to_string())?;
    Ok(())
}

fn instantiate(args: &[&str]) -> Res<String> {
    let graph = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/graph.nix");
    let out = Command::new("nix-instantiate")
        .arg(graph)
        .args(args)
        .args(["--option", "substituters", ""])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("nix-instantiate: {e}"))?;
    if !out.status.success() {
        return Err("nix-instantiate failed".into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn why_closures(tmp: &Path, runs: usize) -> Res<()> {
    // A fixed salt: every run reuses the same 6,000 .drv files instead of adding new ones
    // to a store (and a store database) that other people share.
    let salt = "why-bench";
    let base = [
        "--argstr", "salt", salt, "--arg", "n", "2000", "--arg", "top", "true",
    ];
    let with = |node: &str| -> Vec<String> {
        base.iter()
            .map(|s| s.to_string())
            .chain(["--arg", "changeNode", node, "--argstr", "changeValue", "x"].map(String::from))
            .collect()
    };
    let t = Instant::now();
    let old = instantiate(&base)?;
    let cases = [
        ("node 0 (everything differs)", "0"),
        ("node 1999 (one path)", "1999"),
    ];
    let mut news = Vec::new();
    for (label, node) in cases {
        let args = with(node);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        news.push((label, instantiate(&refs)?));
    }
    println!(
        "closures: instantiated in {:.1} s (graph.nix n=2000 top=true: 2,001 .drv each)",
        t.elapsed().as_secs_f64()
    );
    let home = tmp.join("home");
    let mut ledger = Ledger::open(&home.join("ledger.sqlite")).map_err(|e| e.to_string())?;
    // What ingest pays to remember a new 2,001-.drv closure, then an already-known one.
    for what in ["new closure", "known closure"] {
        let t = Instant::now();
        let done = ledger.remember(&old, &[]).map_err(|e| e.to_string())?;
        println!(
            "remember ({what}): {} .drv stored in {:.1} ms",
            done.derivations,
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    for (label, new) in &news {
        let report = why::why(&ledger, new, Some(&old)).map_err(|e| e.to_string())?;
        let (mut inproc, mut cli) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            let r = why::why(&ledger, new, Some(&old)).map_err(|e| e.to_string())?;
            inproc.push(t.elapsed().as_secs_f64() * 1000.0);
            if r.root_causes.len() != 1 {
                return Err(format!(
                    "expected one root cause, got {}",
                    r.root_causes.len()
                ));
            }
            let t = Instant::now();
            let status = Command::new(env!("CARGO_BIN_EXE_nix-ledger"))
                .args(["why", new, "--against", &old])
                .env("NIX_LEDGER_HOME", &home)
                .stdout(Stdio::null())
                .status()
                .map_err(|e| e.to_string())?;
            cli.push(t.elapsed().as_secs_f64() * 1000.0);
            if !status.success() {
                return Err(format!("nix-ledger why: {status}"));
            }
        }
        println!(
            "why, change at {label}: {} changed, 1 root cause ({} downstream); in-process median {:.1} ms (runs: {}); `nix-ledger why` process median {:.1} ms",
            report.changed_derivations,
            report.root_causes[0].downstream,
            median(inproc.clone()),
            inproc.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" "),
            median(cli)
        );
    }
    Ok(())
}
