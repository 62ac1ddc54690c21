//! Our .drv reader against `nix show-derivation` on the 1,708-file darwin corpus.
//!
//! The corpus is aarch64-darwin and not in the local /nix/store, and Nix only shows
//! derivations that are valid store paths, so the files go into a throw-away chroot store
//! (`<tmp>/root/nix/store`) registered with `nix-store --load-db`. Nix 2.8's
//! `--register-validity` cannot do it: it stats and canonicalises the logical path
//! (`/nix/store/...`, absent here) even with `--hash-given`; `--load-db` reads the same
//! "path, hash, size, deriver, references" lines and skips that step. Before timing, the
//! registered store's `nix show-derivation` must equal the fixture's JSON.
//!
//! Timed, alternating (ours, nix, ours, nix, ...):
//! - ours: `std::fs::read` + `drv::parse` of every file, in this process;
//! - nix: one `nix show-derivation` process given all 1,708 paths, stdout to /dev/null.
//!
//! Then `parse_outputs` alone, per file, as the post-build hook calls it.
//!
//! Run: `cargo bench --bench drv_reader` (optionally `-- --runs N`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix_ledger::nix::drv;

/// Counts allocations, to show what `parse_outputs` costs the hook beyond time.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; the counter has no effect on allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/darwin-drv-corpus.tar.zst"
);
const NO_SUBSTITUTERS: [&str; 3] = ["--option", "substituters", ""];

fn main() {
    if let Err(e) = run() {
        eprintln!("drv_reader bench: {e}");
        std::process::exit(1);
    }
}

type Res<T> = Result<T, String>;

fn run() -> Res<()> {
    let runs = runs_from_args()?;
    let tmp = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let (root, names) = chroot_store(tmp.path())?;
    let store = root.join("nix/store");
    let files: Vec<PathBuf> = names.iter().map(|n| store.join(n)).collect();
    let store_paths: Vec<String> = names.iter().map(|n| format!("/nix/store/{n}")).collect();

    verify_nix_agrees(
        &root,
        &store_paths,
        &tmp.path().join("show-derivation.json"),
    )?;
    let nix_version = output(Command::new("nix").arg("--version"))?;

    // Warm the page cache and both code paths before anything is timed.
    ours(&files)?;
    nix(&root, &store_paths)?;
    let (mut ours_times, mut nix_times) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ours_times.push(ours(&files)?);
        nix_times.push(nix(&root, &store_paths)?);
    }
    // What a Nix process costs before it reads any derivation: one path instead of all.
    let mut nix_one = Vec::new();
    for _ in 0..runs {
        nix_one.push(nix(&root, &store_paths[..1])?);
    }

    let bytes: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).map_err(|e| format!("{}: {e}", f.display())))
        .collect::<Res<_>>()?;
    let total_bytes: usize = bytes.iter().map(Vec::len).sum();
    let mut parse_only: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for b in &bytes {
                std::hint::black_box(
                    drv::parse(std::hint::black_box(b)).map_err(|e| e.to_string())?,
                );
            }
            Ok(start.elapsed())
        })
        .collect::<Res<_>>()?;
    let outputs = parse_outputs_per_file(&bytes)?;
    let hook = hook_head_read_per_file(&files)?;

    let (ours_runs, nix_runs) = (list(&ours_times), list(&nix_times));
    let ours_med = median(&mut ours_times);
    let nix_med = median(&mut nix_times);
    println!(
        "drv_reader: {} files, {:.1} MiB, {runs} alternating runs each",
        files.len(),
        total_bytes as f64 / 1048576.0
    );
    println!(
        "{}; {} CPUs",
        nix_version.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "ours  read+parse all files:         median {}  (runs: {ours_runs})",
        ms(ours_med)
    );
    println!(
        "nix   show-derivation all files:    median {}  (runs: {nix_runs})",
        ms(nix_med)
    );
    println!(
        "nix   show-derivation of 1 file:    median {}  (process start-up floor)",
        ms(median(&mut nix_one))
    );
    println!(
        "ratio nix / ours: {:.1}x",
        nix_med.as_secs_f64() / ours_med.as_secs_f64()
    );
    println!(
        "ours  parse only, files in memory:  median {}",
        ms(median(&mut parse_only))
    );
    println!(
        "ours  per file (read+parse):        {:.1} us",
        ours_med.as_secs_f64() * 1e6 / files.len() as f64
    );
    println!(
        "parse_outputs alone, per file:      median {:.2} us, p99 {:.2} us, max {:.2} us; {:.1} allocations per call (median {})",
        outputs.median_us, outputs.p99_us, outputs.max_us, outputs.allocs_mean, outputs.allocs_median
    );
    println!(
        "hook path (open + read 64 KiB head + parse_outputs): median {:.2} us, p99 {:.2} us",
        hook.0, hook.1
    );
    Ok(())
}

fn runs_from_args() -> Res<usize> {
    // `cargo bench` passes `--bench`; only `--runs N` is ours.
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--runs") {
        None => Ok(9),
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .filter(|&n: &usize| n >= 5)
            .ok_or_else(|| "--runs needs a number of at least 5".into()),
    }
}

/// Unpacks the corpus and registers its files in a chroot store at `<tmp>/root`.
/// Returns the root and the file names.
fn chroot_store(tmp: &Path) -> Res<(PathBuf, Vec<String>)> {
    if !Path::new(FIXTURE).is_file() {
        return Err(format!("corpus fixture missing: {FIXTURE}"));
    }
    run_ok(
        Command::new("tar")
            .args(["--zstd", "-xf", FIXTURE, "-C"])
            .arg(tmp),
    )?;
    let root = tmp.join("root");
    let store = root.join("nix/store");
    std::fs::create_dir_all(&store).map_err(|e| format!("{}: {e}", store.display()))?;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(tmp.join("drv")).map_err(|e| format!("drv/: {e}"))? {
        let entry = entry.map_err(|e| format!("drv/: {e}"))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| format!("non-UTF-8 file name {n:?}"))?;
        std::fs::copy(entry.path(), store.join(&name)).map_err(|e| format!("copy {name}: {e}"))?;
        names.push(name);
    }
    names.sort();

    // The NAR hash is Nix's own (nix-hash hashes the NAR serialisation); the NAR size of
    // a regular file is fixed framing (112 bytes) plus its contents padded to 8.
    let hashes = output(
        Command::new("nix-hash")
            .args(NO_SUBSTITUTERS)
            .args(["--type", "sha256"])
            .args(names.iter().map(|n| store.join(n))),
    )?;
    let hashes: Vec<&str> = hashes.lines().collect();
    if hashes.len() != names.len() {
        return Err(format!(
            "nix-hash gave {} hashes for {} files",
            hashes.len(),
            names.len()
        ));
    }
    let mut db = String::new();
    for (name, hash) in names.iter().zip(hashes) {
        let size = std::fs::metadata(store.join(name))
            .map_err(|e| format!("{name}: {e}"))?
            .len();
        let nar_size = 112 + size.div_ceil(8) * 8;
        // path, NAR hash, NAR size, deriver (none), number of references (none: the
        // inputs' validity is not needed to show a derivation).
        db.push_str(&format!("/nix/store/{name}\n{hash}\n{nar_size}\n\n0\n"));
    }
    let mut child = Command::new("nix-store")
        .arg("--store")
        .arg(&root)
        .args(NO_SUBSTITUTERS)
        .arg("--load-db")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nix-store: {e}"))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or("no stdin for nix-store")?;
        stdin
            .write_all(db.as_bytes())
            .map_err(|e| format!("writing to nix-store --load-db: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nix-store: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nix-store --load-db failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok((root, names))
}

fn show_derivation(root: &Path, paths: &[String]) -> Command {
    let mut cmd = Command::new("nix");
    cmd.arg("show-derivation")
        .arg("--store")
        .arg(root)
        .args(NO_SUBSTITUTERS)
        .args(["--extra-experimental-features", "nix-command"])
        .args(paths);
    cmd
}

/// The registered store must make Nix say exactly what the fixture says it said.
fn verify_nix_agrees(root: &Path, paths: &[String], fixture_json: &Path) -> Res<()> {
    let ours = output(&mut show_derivation(root, paths))?;
    let want = std::fs::read_to_string(fixture_json).map_err(|e| format!("fixture JSON: {e}"))?;
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).map_err(|e| e.to_string());
    if parse(&ours)? != parse(&want)? {
        return Err(
            "nix show-derivation on the chroot store differs from show-derivation.json".into(),
        );
    }
    println!(
        "verified: chroot store's show-derivation equals the fixture's JSON{}",
        if ours == want {
            " byte for byte"
        } else {
            " (as JSON)"
        }
    );
    Ok(())
}

fn ours(files: &[PathBuf]) -> Res<Duration> {
    let start = Instant::now();
    let mut outputs = 0;
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let d = drv::parse(&bytes).map_err(|e| format!("{}: {e}", f.display()))?;
        outputs += d.outputs.len();
    }
    let took = start.elapsed();
    std::hint::black_box(outputs);
    Ok(took)
}

fn nix(root: &Path, paths: &[String]) -> Res<Duration> {
    let start = Instant::now();
    run_ok(show_derivation(root, paths).stdout(Stdio::null()))?;
    Ok(start.elapsed())
}

struct PerCall {
    median_us: f64,
    p99_us: f64,
    max_us: f64,
    allocs_mean: f64,
    allocs_median: usize,
}

/// Per file: the best of 5 timings of a batch of calls, so one preemption on a shared
/// machine does not count as the file's cost.
fn parse_outputs_per_file(files: &[Vec<u8>]) -> Res<PerCall> {
    const BATCH: u32 = 50;
    let mut per_file = Vec::with_capacity(files.len());
    let mut allocs = Vec::with_capacity(files.len());
    for bytes in files {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        std::hint::black_box(drv::parse_outputs(bytes).map_err(|e| e.to_string())?);
        allocs.push(ALLOCATIONS.load(Ordering::Relaxed) - before);
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..BATCH {
                std::hint::black_box(
                    drv::parse_outputs(std::hint::black_box(bytes)).map_err(|e| e.to_string())?,
                );
            }
            best = best.min(start.elapsed() / BATCH);
        }
        per_file.push(best);
    }
    allocs.sort_unstable();
    Ok(PerCall {
        median_us: us(median(&mut per_file)),
        p99_us: us(percentile(&per_file, 99)),
        max_us: us(percentile(&per_file, 100)),
        allocs_mean: allocs.iter().sum::<usize>() as f64 / allocs.len() as f64,
        allocs_median: allocs[allocs.len() / 2],
    })
}

/// What the hook does per build: open the .drv, read at most 64 KiB, parse the outputs.
fn hook_head_read_per_file(files: &[PathBuf]) -> Res<(f64, f64)> {
    use std::io::Read;
    let mut per_file = Vec::with_capacity(files.len());
    for f in files {
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            let file = std::fs::File::open(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let mut head = Vec::with_capacity(4096);
            file.take(64 * 1024)
                .read_to_end(&mut head)
                .map_err(|e| format!("{}: {e}", f.display()))?;
            std::hint::black_box(drv::parse_outputs(&head).map_err(|e| e.to_string())?);
            best = best.min(start.elapsed());
        }
        per_file.push(best);
    }
    let med = median(&mut per_file);
    Ok((us(med), us(percentile(&per_file, 99))))
}

fn run_ok(cmd: &mut Command) -> Res<()> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn output(cmd: &mut Command) -> Res<String> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("{:?}: {e}", cmd.get_program()))
}

/// Sorts `times` and returns the middle one.
fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// `times` must be sorted.
fn percentile(times: &[Duration], p: usize) -> Duration {
    let i = (times.len() * p / 100).min(times.len().saturating_sub(1));
    times.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn list(times: &[Duration]) -> String {
    let v: Vec<String> = times
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
        .collect();
    v.join(" ")
}
