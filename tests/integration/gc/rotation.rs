//! The maintenance job rotates the system spool; a user's ledger reads on through the
//! rotation (the rest of the file it was reading, then the newer ones), and when it fell
//! behind more rotations than are kept, `doctor` says records were lost. The system's
//! ledger gets every record first. Nothing touches the host's /var/lib/nix-ledger.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{fake_hash, ledger_bin, run_ok};

struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn system(&self) -> PathBuf {
        self.dir.path().join("system")
    }

    fn spool(&self) -> PathBuf {
        self.system().join("spool.jsonl")
    }

    /// The hook's line for build `n`, appended to the system spool.
    fn hook_writes(&self, n: u32) {
        let drv = format!("/nix/store/{}-rot-{n}.drv", fake_hash(&format!("rot{n}")));
        let line = format!(
            "{{\"v\":1,\"t\":{},\"drv\":\"{drv}\",\"outputs\":[]}}\n",
            1_700_000_000_000u64 + u64::from(n)
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.spool())
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
    }

    /// `nix-ledger ARGS` as a user (ledger under its own XDG_STATE_HOME, reading the
    /// system spool), or as root's maintenance job when `user` is false.
    fn nb(&self, args: &[&str]) -> Command {
        let mut c = Command::new(ledger_bin());
        c.args(args)
            .env_remove("NIX_LEDGER_HOME")
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("NIX_LEDGER_SYSTEM_DIR", self.system());
        c
    }

    fn user_builds(&self) -> usize {
        let out = run_ok(&mut self.nb(&["history", "--json"]));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    }

    fn maintain(&self) -> serde_json::Value {
        let out = run_ok(&mut self.nb(&["maintain", "--rotate-bytes", "1", "--json"]));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn count(ledger: &Path) -> i64 {
    rusqlite::Connection::open(ledger)
        .unwrap()
        .query_row("SELECT count(*) FROM builds", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_rotated_spool_is_read_on_and_a_ledger_that_fell_behind_is_told() {
    let m = Machine {
        dir: tempfile::tempdir().unwrap(),
    };
    std::fs::create_dir_all(m.system()).unwrap();
    for n in 1..=3 {
        m.hook_writes(n);
    }
    assert_eq!(m.user_builds(), 3);
    m.hook_writes(4);
    m.hook_writes(5);

    let done = m.maintain();
    assert_eq!(done["ingested"]["recorded"], 5, "{done}");
    assert!(done["rotated"]["to"]
        .as_str()
        .unwrap()
        .ends_with("spool.jsonl.1"));
    assert_eq!(
        count(&m.system().join("ledger.sqlite")),
        5,
        "the system's ledger has all"
    );
    assert_eq!(
        std::fs::metadata(m.spool()).unwrap().len(),
        0,
        "a new spool"
    );
    m.hook_writes(6);
    assert_eq!(
        m.user_builds(),
        6,
        "4 and 5 from the rotated file, 6 from the new one"
    );

    // The user stops reading; three rotations later its file is gone.
    m.hook_writes(7);
    m.maintain();
    m.hook_writes(8);
    m.maintain();
    m.hook_writes(9);
    m.maintain();
    m.hook_writes(10);
    assert_eq!(count(&m.system().join("ledger.sqlite")), 9);
    // 8 and 9 are still kept (.2 and .1) and read; 7 went with the oldest file.
    assert_eq!(m.user_builds(), 9);
    let doctor = m.nb(&["doctor", "--json"]).output().unwrap();
    let doctor: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let check = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "spool rotation")
        .unwrap_or_else(|| panic!("no rotation check: {doctor}"));
    assert_eq!(check["status"], "warn");
    assert!(
        check["detail"].as_str().unwrap().contains("fell behind"),
        "{check}"
    );
}
