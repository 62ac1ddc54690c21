//! `nix-ledger store` against `nix-store --gc --print-dead` on a store of more than
//! 20,000 paths, side by side in one run (docs/benchmarks.md).
//!
//! The store is relocated (NIX_STORE_DIR & co. under a temporary directory, never /nix):
//! `benches/gc_store.nix` is instantiated (8,200 derivations with their sources), every
//! output is created by hand and registered in one `nix-store --register-validity`
//! (building 20,000 derivations would cost minutes and measure nothing more), and 60 of
//! them get a GC root. Then the two commands run alternately, after one warm-up of each,
//! and their dead sets are compared once.
//!
//! Run: `cargo bench --bench gc_store` (optionally `-- --runs N --nodes N`). Needs a
//! release build of nix-ledger (the bench builds it first via cargo's bench profile).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

type Res<T> = Result<T, String>;

fn main() {
    if let Err(e) = run() {
        eprintln!("gc_store bench: {e}");
        std::process::exit(1);
    }
}

fn arg(name: &str, default: usize) -> Res<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .filter(|&n: &usize| n > 0)
            .ok_or_else(|| format!("{name} needs a number above 0")),
        None => Ok(default),
    }
}

/// One relocated store's environment.
struct Store {
    root: PathBuf,
}

impl Store {
    fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    fn command(&self, program: &str) -> Command {
        let r = &self.root;
        let mut c = Command::new(program);
        c.env("NIX_STORE_DIR", r.join("store"))
            .env("NIX_STATE_DIR", r.join("var/nix"))
            .env("NIX_LOG_DIR", r.join("var/log/nix"))
            .env("NIX_CONF_DIR", r.join("etc"))
            .env("NIX_USER_CONF_FILES", r.join("etc/user.conf"))
            .env("HOME", r.join("home"))
            .env("XDG_CACHE_HOME", r.join("home/.cache"))
            .env("TMPDIR", r.join("tmp"))
            .env("NIX_LEDGER_HOME", r.join("ledger"))
            .env("NIX_LEDGER_SYSTEM_DIR", r.join("system"))
            .env_remove("NIX_CONFIG")
            .env_remove("NIX_REMOTE")
            .env_remove("NIX_PATH");
        c
    }
}

fn output(cmd: &mut Command) -> Res<Vec<u8>> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

fn make_store(root: &Path, nodes: usize) -> Res<Store> {
    for dir in [
        "store",
        "var/nix",
        "var/log/nix",
        "etc",
        "home",
        "tmp",
        "ledger",
    ] {
        std::fs::create_dir_all(root.join(dir)).map_err(|e| e.to_string())?;
    }
    std::fs::write(
        root.join("etc/nix.conf"),
        "sandbox = false\nbuild-users-group =\nsubstituters =\nrequire-sigs = false\nexperimental-features = nix-command\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(root.join("etc/user.conf"), "").map_err(|e| e.to_string())?;
    let store = Store {
        root: root.to_path_buf(),
    };
    let t = Instant::now();
    let nix_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/gc_store.nix");
    let drvs = output(store.command("nix-instantiate").arg(&nix_file).args([
        "--arg",
        "n",
        &nodes.to_string(),
    ]))?;
    let drvs: Vec<String> = String::from_utf8_lossy(&drvs)
        .lines()
        .map(str::to_string)
        .collect();
    println!(
        "instantiated {} derivations in {:.1} s",
        drvs.len(),
        t.elapsed().as_secs_f64()
    );
    // Outputs by hand: each refers to its inputs' outputs, as a build's would.
    let t = Instant::now();
    let mut registration = String::new();
    let mut outputs_of = std::collections::HashMap::new();
    for drv in &drvs {
        let d = nix_ledger::nix::drv::read(Path::new(drv)).map_err(|e| e.to_string())?;
        let outs: Vec<String> = d.outputs.values().map(|o| o.path.clone()).collect();
        outputs_of.insert(
            drv.clone(),
            (outs, d.input_drvs.keys().cloned().collect::<Vec<_>>()),
        );
    }
    for drv in &drvs {
        let (outs, inputs) = &outputs_of[drv];
        let refs: Vec<&String> = inputs
            .iter()
            .filter_map(|i| outputs_of.get(i))
            .flat_map(|(o, _)| o.iter())
            .collect();
        for out in outs {
            std::fs::create_dir_all(out).map_err(|e| format!("{out}: {e}"))?;
            let text: Vec<&str> = refs.iter().map(|s| s.as_str()).collect();
            std::fs::write(Path::new(out).join("refs"), text.join("\n"))
                .map_err(|e| e.to_string())?;
            registration.push_str(&format!("{out}\n{drv}\n{}\n", refs.len()));
            for r in &refs {
                registration.push_str(r);
                registration.push('\n');
            }
        }
    }
    let mut child = store
        .command("nix-store")
        .arg("--register-validity")
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(registration.as_bytes())
        .map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("nix-store --register-validity failed".into());
    }
    println!(
        "registered the outputs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let gcroots = root.join("var/nix/gcroots");
    std::fs::create_dir_all(&gcroots).map_err(|e| e.to_string())?;
    for k in 0..60 {
        let drv = &drvs[(k * 7_919 + 13) % drvs.len()];
        let out = &outputs_of[drv].0[0];
        std::os::unix::fs::symlink(out, gcroots.join(format!("root-{k}")))
            .map_err(|e| e.to_string())?;
    }
    Ok(store)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run() -> Res<()> {
    let runs = arg("--runs", 11)?;
    let nodes = arg("--nodes", 8_200)?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    // For profiling by hand: GC_BENCH_DIR (a new directory) keeps the store afterwards.
    let root = match std::env::var_os("GC_BENCH_DIR") {
        Some(dir) if !Path::new(&dir).exists() => PathBuf::from(dir),
        Some(dir) => return Err(format!("GC_BENCH_DIR {dir:?} exists; give a new directory")),
        None => tmp.path().to_path_buf(),
    };
    let store = make_store(&root, nodes)?;
    let nb = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/nix-ledger");
    if !nb.exists() {
        return Err(format!(
            "{} missing: run cargo build --release first",
            nb.display()
        ));
    }
    let count = std::fs::read_dir(store.store_dir())
        .map_err(|e| e.to_string())?
        .count();
    println!(
        "store: {count} entries; {runs} runs each, alternating, after a warm-up; load {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let nb_cmd = || {
        let mut c = store.command(nb.to_str().unwrap_or("nix-ledger"));
        c.args(["store", "--json", "--paths"]);
        c
    };
    let nix_cmd = || {
        let mut c = store.command("nix-store");
        c.args(["--gc", "--print-dead"]);
        c
    };
    // Same answer first (and warm-ups).
    let report: serde_json::Value =
        serde_json::from_slice(&output(&mut nb_cmd())?).map_err(|e| e.to_string())?;
    let mut ours: Vec<String> = report["dead"]
        .as_array()
        .ok_or("no dead list")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let mut theirs: Vec<String> = String::from_utf8_lossy(&output(&mut nix_cmd())?)
        .lines()
        .map(str::to_string)
        .collect();
    ours.sort();
    theirs.sort();
    if ours != theirs {
        return Err(format!(
            "dead sets differ: nix-ledger {} paths, Nix {}",
            ours.len(),
            theirs.len()
        ));
    }
    println!(
        "valid paths {}, live {}, dead {} (equal to Nix's)",
        report["paths"], report["live_paths"], report["dead_paths"]
    );
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        output(&mut nb_cmd())?;
        let ours = t.elapsed().as_secs_f64();
        let t = Instant::now();
        output(&mut nix_cmd())?;
        let theirs = t.elapsed().as_secs_f64();
        a.push(ours);
        b.push(theirs);
        ratios.push(theirs / ours);
    }
    let (ma, mb) = (median(&mut a.clone()), median(&mut b.clone()));
    println!(
        "nix-ledger store --json --paths: median {:.3} s (min {:.3}, max {:.3})",
        ma,
        a.iter().copied().fold(f64::MAX, f64::min),
        a.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "nix-store --gc --print-dead:     median {:.3} s (min {:.3}, max {:.3})",
        mb,
        b.iter().copied().fold(f64::MAX, f64::min),
        b.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "ratio of medians {:.1}×; paired ratios median {:.1}× (range {:.1}–{:.1}×)",
        mb / ma,
        median(&mut ratios.clone()),
        ratios.iter().copied().fold(f64::MAX, f64::min),
        ratios.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "nix-ledger's own timings (first run): {}, analysis {} ms",
        report["timings_ms"], report["analysis_ms"]
    );
    Ok(())
}
