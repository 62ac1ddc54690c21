//! Benchmarks of `nix-ledger build`, side by side with plain `nix build` in one run:
//!
//! 1. `events`: JSON-stream throughput of the parser and the state it feeds (lines/s).
//! 2. `graph`: the 200-derivation example graph: plain `nix build`, the wrapper, and Nix's
//!    JSON log into `cat`; fresh salt per run, order rotated each round.
//! 3. `lines`: a build printing 1M log lines: plain `nix build -L`, the wrapper `-L`, and
//!    Nix alone with its JSON log.
//! 4. `sampler`: the sampler thread's CPU time during parallel builds, as a share of
//!    one core.
//!
//! `cargo bench --bench wrapper [-- SECTION…]`; `RUNS=N` sets the rounds per comparison.
//! Results go to stdout as Markdown table rows for docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix_ledger::wrapper::builddir::BuildRoots;
use nix_ledger::wrapper::events::{parse_line, Line};
use nix_ledger::wrapper::state::State;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ledger_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nix-ledger")
}

fn salt(tag: &str, i: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("bench-{tag}-{i}-{nanos}")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn timed(cmd: &mut Command) -> f64 {
    let start = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn");
    let secs = start.elapsed().as_secs_f64();
    assert!(status.success(), "{cmd:?} failed: {status}");
    secs
}

/// A synthetic stream shaped like a real build: mostly log lines, with activity starts,
/// stops, progress results and messages.
fn synthetic_stream(lines: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines * 80);
    let drv = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bench.drv";
    out.extend_from_slice(
        b"@nix {\"action\":\"start\",\"id\":1,\"level\":0,\"text\":\"\",\"type\":104}\n",
    );
    for i in 0..lines {
        let id = 100 + (i / 1000) as u64;
        match i % 1000 {
            0 => out.extend_from_slice(format!("@nix {{\"action\":\"start\",\"fields\":[\"{drv}\",\"\",1,1],\"id\":{id},\"level\":3,\"parent\":1,\"text\":\"building '{drv}'\",\"type\":105}}\n").as_bytes()),
            999 => out.extend_from_slice(format!("@nix {{\"action\":\"stop\",\"id\":{id}}}\n").as_bytes()),
            500 => out.extend_from_slice(format!("@nix {{\"action\":\"result\",\"fields\":[{},{},1,0],\"id\":1,\"type\":105}}\n", i / 1000, lines / 1000).as_bytes()),
            250 => out.extend_from_slice(b"@nix {\"action\":\"msg\",\"level\":4,\"msg\":\"evaluating file '/x.nix'\"}\n"),
            _ => out.extend_from_slice(format!("@nix {{\"action\":\"result\",\"fields\":[\"checking for \\\"{i}\\\"... yes\"],\"id\":{id},\"type\":101}}\n").as_bytes()),
        }
    }
    out
}

fn bench_events() {
    let n = 2_000_000;
    let stream = synthetic_stream(n);
    let lines: Vec<&[u8]> = stream
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut best_parse = f64::MAX;
    let mut best_state = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let mut events = 0usize;
        for line in &lines {
            if let Line::Event(_) = parse_line(line) {
                events += 1;
            }
        }
        assert_eq!(events, lines.len());
        best_parse = best_parse.min(start.elapsed().as_secs_f64());

        let root = std::env::temp_dir().join("nix-ledger-bench-no-builds");
        let mut state = State::new(BuildRoots::new(vec![root.clone()]));
        let start = Instant::now();
        let now = Instant::now();
        for line in &lines {
            if let Line::Event(event) = parse_line(line) {
                state.apply(&event, now, 0);
            }
        }
        best_state = best_state.min(start.elapsed().as_secs_f64());
        assert!(!state.finished.is_empty());
    }
    let rate = |secs: f64| lines.len() as f64 / secs / 1e6;
    println!(
        "| JSON stream: parse only | {} lines | {:.2} M lines/s |",
        lines.len(),
        rate(best_parse)
    );
    println!(
        "| JSON stream: parse + build state | {} lines | {:.2} M lines/s |",
        lines.len(),
        rate(best_state)
    );
}

/// `nix-ledger build` (with its own ledger in `home`) or plain `nix build`, before the
/// arguments both take.
fn build_cmd(wrapped: bool, home: &Path) -> Command {
    if wrapped {
        let mut c = Command::new(ledger_bin());
        c.arg("build").env("NIX_LEDGER_HOME", home);
        c
    } else {
        let mut c = Command::new("nix");
        c.args(["--extra-experimental-features", "nix-command", "build"]);
        c
    }
}

fn graph_cmd(wrapped: bool, home: &Path, salt: &str) -> Command {
    let mut cmd = build_cmd(wrapped, home);
    cmd.arg("-f")
        .arg(repo().join("examples/graph.nix"))
        .args(["--argstr", "salt", salt, "--arg", "n", "200", "-j", "2"])
        .args(["--no-link", "--option", "substituters", ""]);
    cmd
}

/// Times the `labels.len()` commands `make(k, i)` side by side: in round `i` each runs
/// once, in an order rotated every round so that drift on a shared machine hits all
/// alike. Reports each one's median and, against the first, the ratio of the medians and
/// the median of the per-round ratios (the paired figure, less sensitive to drift).
fn compare(
    name: &str,
    labels: &[&str],
    runs: usize,
    mut make: impl FnMut(usize, usize) -> Command,
) {
    let n = labels.len();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); n];
    // Warm-up (evaluation caches, page cache), not counted.
    for k in 0..n {
        timed(&mut make(k, 1000 + k));
    }
    for i in 0..runs {
        for j in 0..n {
            let k = (i + j) % n;
            times[k].push(timed(&mut make(k, i)));
        }
    }
    let base = median(times[0].clone());
    let mut cells = vec![format!("{} {base:.3} s", labels[0])];
    let mut ratios = Vec::new();
    for k in 1..n {
        let m = median(times[k].clone());
        let paired = median(times[k].iter().zip(&times[0]).map(|(t, b)| t / b).collect());
        cells.push(format!("{} {m:.3} s", labels[k]));
        ratios.push(format!(
            "{}: {:.3} (paired {paired:.3})",
            labels[k],
            m / base
        ));
    }
    println!(
        "| {name} | {} (medians of {runs}) | {} |",
        cells.join(", "),
        ratios.join("; ")
    );
    for (label, t) in labels.iter().zip(&times) {
        eprintln!("  {name}: {label} {t:.3?}");
    }
}

/// `cmd` as one line for `sh -c`, every word quoted.
fn shell_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `cmd` with its stdout and stderr on a terminal, as when a user types it: run by
/// `script` on a pseudo-terminal whose output `script` copies (to /dev/null, see `timed`).
/// Nix draws its progress bar only there.
fn on_terminal(cmd: Command) -> Command {
    let mut term = Command::new("script");
    term.args(["-qfec", &shell_line(&cmd), "/dev/null"]);
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            term.env(key, value);
        }
    }
    term
}

fn bench_graph(runs: usize, home: &Path) {
    // Beside plain `nix build` and the wrapper: Nix writing its JSON log to a pipe read
    // by `cat`, which is what any JSON-log reader makes Nix do, without the wrapper.
    let json = |salt: &str| {
        let line = shell_line(&graph_cmd(false, home, salt))
            + " --log-format internal-json 2>&1 | cat >/dev/null";
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &line]);
        cmd
    };
    compare(
        "200-derivation graph, -j 2",
        &["plain", "wrapper", "nix JSON | cat"],
        runs,
        |k, i| match k {
            0 => graph_cmd(false, home, &salt("gp", i)),
            1 => graph_cmd(true, home, &salt("gw", i)),
            _ => json(&salt("gj", i)),
        },
    );
    compare(
        "200-derivation graph, -j 2, on a terminal",
        &["plain", "wrapper"],
        runs,
        |k, i| on_terminal(graph_cmd(k == 1, home, &salt(&format!("gt{k}"), i))),
    );
}

/// What runs the 1M-line build: plain `nix build -L`, the same with Nix's JSON log (what
/// the wrapper makes Nix do, so the floor for any JSON-log reader), or the wrapper.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LinesRun {
    Plain,
    NixJson,
    Wrapper,
}

fn lines_cmd(run: LinesRun, home: &Path, salt: &str) -> Command {
    let fixture = repo().join("tests/fixtures/wrapper.nix");
    let mut cmd = build_cmd(run == LinesRun::Wrapper, home);
    cmd.arg("-f")
        .arg(&fixture)
        .arg("chatty")
        .args(["--argstr", "salt", salt, "-L"])
        .args(["--no-link", "--option", "substituters", ""]);
    if run == LinesRun::NixJson {
        cmd.args(["--log-format", "internal-json"]);
    }
    cmd
}

fn bench_lines(runs: usize, home: &Path) {
    let runs_of = [LinesRun::Plain, LinesRun::Wrapper, LinesRun::NixJson];
    compare(
        "1M log lines, -L, output to /dev/null",
        &["plain", "wrapper", "nix JSON"],
        runs,
        |k, i| lines_cmd(runs_of[k], home, &salt(&format!("l{k}"), i)),
    );
    compare(
        "1M log lines, -L, on a terminal",
        &["plain", "wrapper"],
        runs,
        |k, i| on_terminal(lines_cmd(runs_of[k], home, &salt(&format!("lt{k}"), i))),
    );
}

/// utime + stime of the thread named `name` in process `pid`, in clock ticks.
fn thread_ticks(pid: u32, name: &str) -> Option<u64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            return Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?);
        }
    }
    None
}

fn bench_sampler(home: &Path) {
    // Four parallel builds, each a small process tree, for about 10 s.
    let nix = format!(
        "let mk = i: derivation {{ name = \"sampler-bench-${{toString i}}\"; system = builtins.currentSystem; builder = \"/bin/sh\"; PATH = \"/usr/bin:/bin\"; salt = \"{}\"; args = [\"-c\" \"for j in 1 2 3 4 5; do sleep 10 & done; wait; echo > $out\"]; }}; in map mk [1 2 3 4]",
        salt("sampler", 0)
    );
    let file = home.join("sampler-bench.nix");
    std::fs::write(&file, nix).expect("write");
    let mut child = Command::new(ledger_bin())
        .arg("build")
        .arg("-f")
        .arg(&file)
        .args(["-j", "4", "--no-link", "--option", "substituters", ""])
        .env("NIX_LEDGER_HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let mut last = 0;
    while child.try_wait().expect("wait").is_none() {
        if let Some(t) = thread_ticks(child.id(), "nix-ledger-samp") {
            last = t;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = start.elapsed().as_secs_f64();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = last as f64 / hz;
    let procs = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0);
    println!(
        "| sampler, 4 builds × 6 processes, {procs} processes on the machine | {:.2} s CPU in {:.1} s | {:.2}% of one core |",
        cpu,
        wall,
        cpu / wall * 100.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    let home = std::env::temp_dir().join(format!("nix-ledger-bench-{}", std::process::id()));
    std::fs::create_dir_all(&home).expect("home");
    let home: PathBuf = home;
    println!("| benchmark | measured | result |\n|---|---|---|");
    if want("events") {
        bench_events();
    }
    if want("graph") {
        bench_graph(runs, &home);
    }
    if want("lines") {
        bench_lines(runs.min(4), &home);
    }
    if want("sampler") {
        bench_sampler(&home);
    }
    let _ = std::fs::remove_dir_all(&home);
}
