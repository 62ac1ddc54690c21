//! A multi-user install: the hook runs as root inside nix-daemon, with the daemon's
//! environment, and writes the system spool; an unprivileged user's `nix-ledger` ingests
//! it into that user's own ledger without sudo, and measures the memory of the builds
//! its `nix-ledger build` asks the daemon for.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{drv_outputs, entry_outputs, graph_nix, hook_bin, ledger_bin, run_ok, TestEnv};

const NOBODY: &str = "65534";

/// A nix-daemon on a private socket, stopped (and its socket removed) on drop. Its hook
/// writes the system spool into `system_dir`, never the host's /var/lib/nix-ledger.
struct Daemon {
    child: Child,
    socket: std::path::PathBuf,
    system_dir: std::path::PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let socket = dir.join("socket");
        let system_dir = dir.join("system");
        // The daemon's own environment: no NIX_LEDGER_HOME, as on a real system.
        let child = Command::new("nix-daemon")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            // An untrusted client's `--option substituters ''` is ignored: without this
            // the daemon would try cache.nixos.org for every path.
            .env("NIX_CONFIG", "substituters =")
            .env("NIX_DAEMON_SOCKET_PATH", &socket)
            .env("NIX_LEDGER_SYSTEM_DIR", &system_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "nix-daemon did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child,
            socket,
            system_dir,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// User `nobody`, with a copy of the binary it can execute and a home it owns, in `dir`.
struct Unprivileged {
    binary: std::path::PathBuf,
    home: std::path::PathBuf,
}

impl Unprivileged {
    fn new(dir: &Path) -> Unprivileged {
        let home = dir.join("home");
        std::fs::create_dir(&home).unwrap();
        let binary = dir.join("nix-ledger");
        std::fs::copy(ledger_bin(), &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Command::new("chown")
            .args([&format!("{NOBODY}:{NOBODY}"), home.to_str().unwrap()])
            .status()
            .unwrap()
            .success());
        Unprivileged { binary, home }
    }

    /// `nix-ledger ARGS` as nobody, with a clean environment but for where the test's
    /// daemon keeps the system spool.
    fn ledger(&self, daemon: &Daemon, args: &[&str]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
            .arg(&self.binary)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("NIX_LEDGER_SYSTEM_DIR", &daemon.system_dir);
        cmd
    }
}

fn can_run() -> Result<(), String> {
    for tool in ["nix-daemon", "setpriv"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return Err(format!("{tool} is not installed"));
        }
    }
    Ok(())
}

/// The test's environment, a directory every user can enter, and a daemon whose socket is
/// in it. The tests are ignored unless built as root; a missing tool then fails them.
fn with_daemon(test: &str) -> (TestEnv, tempfile::TempDir, Daemon) {
    if let Err(why) = can_run() {
        panic!("multi-user daemon test {test}: {why}");
    }
    let env = TestEnv::new(test);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = Daemon::start(dir.path());
    (env, dir, daemon)
}

#[test]
#[cfg_attr(
    not(root_tests),
    ignore = "needs root: runs nix-daemon and an unprivileged user"
)]
fn the_hook_in_the_daemon_writes_the_system_spool_that_an_unprivileged_user_ingests() {
    let (env, sandbox, daemon) = with_daemon("multiuser");

    run_ok(
        Command::new("nix-build")
            .arg(graph_nix())
            .args(["--argstr", "salt", &env.salt, "--arg", "n", "6"])
            .args(["--no-out-link", "--option", "substituters", ""])
            .args(["--option", "post-build-hook", hook_bin()])
            .env("NIX_REMOTE", "daemon")
            .env("NIX_DAEMON_SOCKET_PATH", &daemon.socket)
            // Set for the client only: the hook must not see it inside the daemon.
            .env("NIX_LEDGER_HOME", env.home()),
    );
    assert!(
        !env.spool().exists(),
        "the hook ran with the client's environment"
    );
    let system_spool = daemon.system_dir.join("spool.jsonl");
    let mode = std::fs::metadata(&system_spool)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o644,
        "the system spool is readable by all, writable by root"
    );

    let user = Unprivileged::new(sandbox.path());
    let out = run_ok(&mut user.ledger(&daemon, &["history", "--json"]));
    let history: Vec<Value> = serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    for drv in env.graph_drvs(6, &[]) {
        let matching: Vec<&Value> = history
            .iter()
            .filter(|e| e["drv_path"] == drv.as_str())
            .collect();
        assert_eq!(matching.len(), 1, "{drv} once in the user's ledger");
        assert_eq!(entry_outputs(matching[0]), drv_outputs(&drv));
    }
    let ledger_dir = user.home.join(".local/state/nix-ledger");
    let meta = std::fs::metadata(&ledger_dir).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o700,
        "the user's ledger is private"
    );
}

#[test]
#[cfg_attr(
    not(root_tests),
    ignore = "needs root: runs nix-daemon and an unprivileged user"
)]
fn an_unprivileged_users_wrapper_measures_the_memory_of_the_daemons_build() {
    let (env, sandbox, daemon) = with_daemon("multiuser-memory");
    let user = Unprivileged::new(sandbox.path());
    let fixture = sandbox.path().join("wrapper.nix");
    std::fs::copy(crate::util::wrapper_fixture(), &fixture).unwrap();
    // The build runs as a nixbld user under the daemon; nobody may not read its working
    // directory, only stat its build directory and read /proc/<pid>/stat.
    let out = run_ok(
        user.ledger(
            &daemon,
            &["build", "-f", fixture.to_str().unwrap(), "memory"],
        )
        .args(["--argstr", "salt", &env.salt, "--no-link"])
        .env("NIX_REMOTE", "daemon")
        .env("NIX_DAEMON_SOCKET_PATH", &daemon.socket),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("peak memory: 3"), "{stderr}");
    let out = run_ok(&mut user.ledger(&daemon, &["history", "--json"]));
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    let build = &history[0];
    assert_eq!(build["name"], "wrapper-memory", "{history:#}");
    let rss = build["peak_rss_bytes"].as_i64().unwrap_or(0) as f64;
    let expected = (300u64 << 20) as f64;
    assert!(
        (rss - expected).abs() <= expected * 0.2,
        "peak RSS {rss}, expected {expected} ± 20%: {build:#}"
    );
}

#[test]
#[cfg_attr(
    not(root_tests),
    ignore = "needs root: runs nix-daemon and an unprivileged user"
)]
fn one_users_output_linking_to_a_fifo_never_hangs_another_users_commands() {
    let (env, sandbox, daemon) = with_daemon("multiuser-fifo");
    // Root's build (through the daemon) links its output to a directory holding a FIFO
    // that nobody ever writes: hashing it by following the link would block for ever.
    let outside = sandbox.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("plain"), b"plain\n").unwrap();
    run_ok(Command::new("mkfifo").arg(outside.join("fifo")));
    run_ok(
        Command::new("nix-build")
            .arg(crate::faults::faults_nix())
            .args(["-A", "linkOut", "--argstr", "salt", &env.salt])
            .args(["--argstr", "target", outside.to_str().unwrap()])
            .args(["--no-out-link", "--option", "substituters", ""])
            .args(["--option", "post-build-hook", hook_bin()])
            .env("NIX_REMOTE", "daemon")
            .env("NIX_DAEMON_SOCKET_PATH", &daemon.socket),
    );
    let user = Unprivileged::new(sandbox.path());
    for args in [&["history", "--json"][..], &["doctor", "--json"]] {
        let out =
            crate::util::output_within(&mut user.ledger(&daemon, args), Duration::from_secs(30));
        assert!(out.status.code().is_some(), "{args:?}");
    }
    let out = run_ok(&mut user.ledger(&daemon, &["history", "--json"]));
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(history[0]["name"], "faults-link", "{history:#}");
}
