//! `nix-ledger store` and `gc` against the real Nix, each test in its own relocated store
//! (NIX_STORE_DIR, NIX_STATE_DIR, NIX_LOG_DIR, NIX_CONF_DIR, HOME… under a temporary
//! directory): nothing here runs a garbage collection anywhere near /nix. Builds run
//! without a sandbox and without build users (`build-users-group =`: a second store's
//! user pool would hand out the same nixbld uids as /nix's, and Nix kills every process
//! of a build user it takes).
//!
//! Modules: [`agreement`] (live/dead/sizes equal Nix's), [`cost`] (nb gc --max-freed
//! against nix-collect-garbage --max-freed), [`generations`], [`safety`] (dry run,
//! kill -9, a path that becomes live), [`rotation`] (the maintenance job's spool).

mod agreement;
mod cost;
mod generations;
mod rotation;
mod safety;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::{hook_bin, ledger_bin, repo, run_ok, TestEnv};

/// The GC fixture's derivations.
pub fn fixture() -> PathBuf {
    repo().join("tests/fixtures/gc.nix")
}

/// A relocated Nix store of one test, with its own ledger home.
pub struct Store {
    pub root: tempfile::TempDir,
    pub env: TestEnv,
}

impl Store {
    /// A fresh store; `conf` is added to its nix.conf.
    pub fn new(test: &str, conf: &str) -> Store {
        let env = TestEnv::new(test);
        let root = tempfile::Builder::new()
            .prefix(&format!("nix-ledger-gc-{test}-"))
            .tempdir()
            .unwrap();
        for dir in [
            "store",
            "var/nix/gcroots",
            "var/nix/profiles",
            "var/log/nix",
            "etc",
            "home",
            "tmp",
            "out",
            "system",
        ] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let store = Store { root, env };
        store.write_conf(conf);
        std::fs::write(store.path("etc/user.conf"), "").unwrap();
        // Create the database now: Nix processes that start together on a new store
        // race to write its schema file, and the losers find it "corrupt".
        run_ok(store.command("nix-store").arg("--init"));
        store
    }

    /// Replaces the store's nix.conf: the common settings plus `extra`.
    pub fn write_conf(&self, extra: &str) {
        std::fs::write(
            self.path("etc/nix.conf"),
            format!(
                "sandbox = false\nbuild-users-group =\nsubstituters =\nrequire-sigs = false\n\
                 experimental-features = nix-command\n{extra}\n"
            ),
        )
        .unwrap();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.path("store")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("var/nix")
    }

    /// `program` with this store's environment (and nothing of the host's Nix settings).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("NIX_STORE_DIR", self.store_dir())
            .env("NIX_STATE_DIR", self.state_dir())
            .env("NIX_LOG_DIR", self.path("var/log/nix"))
            .env("NIX_CONF_DIR", self.path("etc"))
            .env("NIX_USER_CONF_FILES", self.path("etc/user.conf"))
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("home/.config"))
            .env("XDG_CACHE_HOME", self.path("home/.cache"))
            .env("XDG_DATA_HOME", self.path("home/.local/share"))
            .env("XDG_STATE_HOME", self.path("home/.local/state"))
            .env("TMPDIR", self.path("tmp"))
            .env("NIX_LEDGER_HOME", self.env.home())
            .env("NIX_LEDGER_SYSTEM_DIR", self.path("system"))
            .env_remove("NIX_CONFIG")
            .env_remove("NIX_REMOTE")
            .env_remove("NIX_PATH");
        c
    }

    /// `nix-ledger ARGS` in this store.
    pub fn nb(&self, args: &[&str]) -> Command {
        let mut c = self.command(ledger_bin());
        c.args(args);
        c
    }

    /// `nix-ledger ARGS`, which must succeed: its stdout.
    pub fn nb_ok(&self, args: &[&str]) -> String {
        String::from_utf8(run_ok(&mut self.nb(args)).stdout).unwrap()
    }

    /// `nix-ledger ARGS --json`, which must succeed, parsed.
    pub fn nb_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.nb_ok(&all)).unwrap()
    }

    /// `nix-build` of the fixture's `attr` with the hook recording into this test's
    /// ledger; `out` is a result link (a GC root) or `None`. Returns the output paths.
    pub fn build(&self, attr: &str, args: &[&str], out: Option<&Path>) -> Vec<String> {
        let mut c = self.command("nix-build");
        c.arg(fixture())
            .args(["-A", attr, "--argstr", "salt", &self.env.salt])
            .args(["--option", "post-build-hook", hook_bin()])
            .args(args);
        match out {
            Some(link) => c.arg("-o").arg(link),
            None => c.arg("--no-out-link"),
        };
        let out = run_ok(&mut c);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `nix-store ARGS`, which must succeed: its stdout lines, sorted.
    pub fn nix_store_lines(&self, args: &[&str]) -> Vec<String> {
        let out = run_ok(self.command("nix-store").args(args));
        let mut lines: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    /// Whether `path` is a valid path of this store.
    pub fn is_valid(&self, path: &str) -> bool {
        self.command("nix-store")
            .args(["--check-validity", path])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// `nix-store --verify --check-contents` accepts the store.
    pub fn verify(&self) -> Output {
        run_ok(
            self.command("nix-store")
                .args(["--verify", "--check-contents"]),
        )
    }

    /// The valid paths, read from the store database (one read, not a process per path).
    pub fn valid_set(&self) -> std::collections::HashSet<String> {
        let conn = rusqlite::Connection::open_with_flags(
            self.state_dir().join("db/db.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut stmt = conn.prepare("SELECT path FROM ValidPaths").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Every row of ValidPaths, for "nothing changed".
    pub fn valid_paths(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open_with_flags(
            self.state_dir().join("db/db.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut stmt = conn
            .prepare("SELECT path || ' ' || hash || ' ' || coalesce(deriver, '') FROM ValidPaths ORDER BY path")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

/// The strings of a JSON array.
pub fn strings(v: &Value) -> Vec<String> {
    let mut list: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    list.sort();
    list
}
