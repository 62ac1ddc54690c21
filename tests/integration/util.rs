//! Helpers shared by the integration tests: an isolated environment per test (its own
//! `NIX_LEDGER_HOME`, a unique salt), running the built binaries, and building the
//! example graph with the real Nix and the real hook.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The built `nix-ledger` binary.
pub fn ledger_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nix-ledger")
}

/// The built `nix-ledger-hook` binary.
pub fn hook_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nix-ledger-hook")
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The example graph every build test uses.
pub fn graph_nix() -> PathBuf {
    repo().join("examples/graph.nix")
}

/// Derivations with known sleeps, memory, failure and log volume.
pub fn wrapper_fixture() -> PathBuf {
    repo().join("tests/fixtures/wrapper.nix")
}

/// One test's world: its own ledger home and a salt no other test (or run) shares.
pub struct TestEnv {
    pub home: tempfile::TempDir,
    pub salt: String,
}

impl TestEnv {
    pub fn new(test: &str) -> TestEnv {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        TestEnv {
            home: tempfile::Builder::new()
                .prefix(&format!("nix-ledger-{test}-"))
                .tempdir()
                .unwrap(),
            salt: format!(
                "{test}-{}-{nanos}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn spool(&self) -> PathBuf {
        self.home().join("spool.jsonl")
    }

    /// `nix-ledger ARGS` in this environment.
    pub fn ledger(&self, args: &[&str]) -> Output {
        Command::new(ledger_bin())
            .args(args)
            .env("NIX_LEDGER_HOME", self.home())
            .output()
            .unwrap()
    }

    /// `nix-ledger ARGS`, which must succeed; its stdout.
    pub fn ledger_ok(&self, args: &[&str]) -> String {
        let out = self.ledger(args);
        assert!(
            out.status.success(),
            "nix-ledger {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `nix-ledger build ARGS` on a fixture of `tests/fixtures/wrapper.nix`, salted for this
    /// test, without a post-build-hook (unless `extra` sets one).
    pub fn wrapper_build(&self, attr: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(ledger_bin());
        cmd.arg("build")
            .arg("-f")
            .arg(wrapper_fixture())
            .arg(attr)
            .args(["--argstr", "salt", &self.salt])
            .args(["--no-link", "--option", "substituters", ""])
            .args(extra)
            .env("NIX_LEDGER_HOME", self.home());
        cmd
    }

    /// Plain `nix build` of the same fixture with a given salt.
    pub fn plain_build(&self, attr: &str, salt: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new("nix");
        cmd.args([
            "--extra-experimental-features",
            "nix-command",
            "build",
            "-f",
        ])
        .arg(wrapper_fixture())
        .arg(attr)
        .args(["--argstr", "salt", salt])
        .args(["--no-link", "--option", "substituters", ""])
        .args(extra);
        cmd
    }

    /// `nix-ledger query --json SQL`, parsed.
    pub fn query(&self, sql: &str) -> Vec<Value> {
        let text = self.ledger_ok(&["query", "--json", sql]);
        serde_json::from_str::<Value>(&text)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// `nix-ledger history --all --json`, parsed: every build recorded.
    pub fn history(&self) -> Vec<Value> {
        let text = self.ledger_ok(&["history", "--all", "--json"]);
        serde_json::from_str::<Value>(&text)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// A `nix-build` of the example graph with the real hook, salted for this test.
    pub fn graph_build(&self, n: u32, extra: &[&str]) -> Command {
        self.graph_build_with_hook(n, hook_bin(), extra)
    }

    /// As [`graph_build`] with another hook program (or "" for none).
    pub fn graph_build_with_hook(&self, n: u32, hook: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new("nix-build");
        cmd.arg(graph_nix())
            .args(["--argstr", "salt", &self.salt])
            .args(["--arg", "n", &n.to_string()])
            .args(["--no-out-link", "--option", "substituters", ""])
            .args(["--option", "post-build-hook", hook])
            .args(extra)
            .env("NIX_LEDGER_HOME", self.home());
        cmd
    }

    /// The .drv paths of the example graph for this salt (instantiated, not built).
    pub fn graph_drvs(&self, n: u32, extra: &[&str]) -> Vec<String> {
        let out = run_ok(
            Command::new("nix-instantiate")
                .arg(graph_nix())
                .args(["--argstr", "salt", &self.salt])
                .args(["--arg", "n", &n.to_string()])
                .args(extra),
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl TestEnv {
    /// `nix-build FILE ARGS` with the real hook, recording into this environment.
    pub fn nix_build(&self, file: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("nix-build");
        cmd.arg(file)
            .args(["--no-out-link", "--option", "substituters", ""])
            .args(["--option", "post-build-hook", hook_bin()])
            .args(args)
            .env("NIX_LEDGER_HOME", self.home());
        cmd
    }

    /// `nix-ledger ARGS` (which print JSON themselves, e.g. `--format json`), parsed.
    pub fn ledger_json_format(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ledger_ok(args)).unwrap()
    }

    /// `nix-ledger ARGS --json`, which must succeed, parsed.
    pub fn ledger_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ledger_ok(&all)).unwrap()
    }
}

/// `nix-instantiate FILE ARGS`: the one .drv it prints.
pub fn instantiate(file: &Path, args: &[&str]) -> String {
    let out = run_ok(Command::new("nix-instantiate").arg(file).args(args).args([
        "--option",
        "substituters",
        "",
    ]));
    let text = String::from_utf8(out.stdout).unwrap();
    let drvs: Vec<&str> = text.lines().collect();
    assert_eq!(drvs.len(), 1, "{text}");
    drvs[0].to_string()
}

/// Runs a command that must succeed.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `nix show-derivation` of one .drv: its outputs' names and paths.
pub fn drv_outputs(drv: &str) -> Vec<(String, String)> {
    let out = run_ok(Command::new("nix").args([
        "--extra-experimental-features",
        "nix-command",
        "show-derivation",
        drv,
    ]));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let outputs = json[drv]["outputs"].as_object().unwrap();
    let mut list: Vec<(String, String)> = outputs
        .iter()
        .map(|(name, o)| (name.clone(), o["path"].as_str().unwrap().to_string()))
        .collect();
    list.sort();
    list
}

/// A build's outputs from `history --json`, sorted.
pub fn entry_outputs(entry: &Value) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = entry["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_string(),
                o["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    list.sort();
    list
}

/// Runs a command that must end within `limit`: a hang is killed and fails the test.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes on threads, so that a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not end within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// A valid store path hash part made from `seed`, for fake derivations.
pub fn fake_hash(seed: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        state = (state ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    (0..32)
        .map(|i| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407 + i);
            char::from(ALPHABET[(state >> 59) as usize])
        })
        .collect()
}
