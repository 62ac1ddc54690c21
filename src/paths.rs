//! Where things live.
//!
//! - `NIX_LEDGER_HOME=DIR` puts the ledger and the only spool in `DIR` (tests use it).
//! - Otherwise the per-user ledger and spool are under `$XDG_STATE_HOME/nix-ledger/`
//!   (default `~/.local/state/nix-ledger/`), and the hook, when it runs as root (inside
//!   nix-daemon on multi-user installs), writes the system spool under
//!   `/var/lib/nix-ledger/`, which every user's `nix-ledger` reads without sudo.
//! - The system's ledger (root's, kept by the maintenance job) is
//!   `/var/lib/nix-ledger/ledger.sqlite`, beside the system spool it is filled from.
//! - `NIX_LEDGER_SYSTEM_DIR=DIR` moves that system directory, for the test harness: its
//!   daemon tests must never write the host's. Inside nix-daemon the hook sees the
//!   daemon's environment, never a client's, so a client cannot move it.

use std::env;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The directory of the system spool, written by the hook when it runs as root.
pub const SYSTEM_DIR: &str = "/var/lib/nix-ledger";
/// The spool's file name inside its directory.
pub const SPOOL_FILE: &str = "spool.jsonl";
/// Where the hook notes why it could not write the spool, beside the spool.
pub const HOOK_ERRORS_FILE: &str = "hook-errors.log";
/// The ledger's file name inside the state directory.
pub const LEDGER_FILE: &str = "ledger.sqlite";

/// The places one `nix-ledger` process reads and writes.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The per-user state directory (or `NIX_LEDGER_HOME`).
    pub state_dir: PathBuf,
    /// The SQLite ledger.
    pub ledger: PathBuf,
    /// The spools to ingest, in order: the user's own, then the system's.
    pub spools: Vec<PathBuf>,
}

/// The directory of the system spool: [`SYSTEM_DIR`], or `NIX_LEDGER_SYSTEM_DIR`.
pub fn system_dir() -> PathBuf {
    env::var_os("NIX_LEDGER_SYSTEM_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SYSTEM_DIR))
}

impl Layout {
    /// Resolves the layout from the environment.
    pub fn from_env() -> Result<Layout> {
        if let Some(home) = env::var_os("NIX_LEDGER_HOME").filter(|v| !v.is_empty()) {
            let home = Path::new(&home);
            if home.exists() && !home.is_dir() {
                return Err(Error::Usage(format!(
                    "NIX_LEDGER_HOME={}: not a directory",
                    home.display()
                )));
            }
            return Ok(Layout::isolated(home));
        }
        let state_dir = user_state_dir().ok_or(Error::NoHome)?;
        let spools = vec![state_dir.join(SPOOL_FILE), system_dir().join(SPOOL_FILE)];
        Ok(Layout {
            ledger: state_dir.join(LEDGER_FILE),
            state_dir,
            spools,
        })
    }

    /// The system's ledger: `ledger.sqlite` beside the system spool (`/var/lib/nix-ledger`),
    /// root's, filled from the system spool, which carries every user's builds (the hook
    /// runs as root inside nix-daemon). The maintenance job keeps it, and garbage
    /// collection run as root prices builds with it.
    pub fn system() -> Layout {
        let dir = system_dir();
        Layout {
            ledger: dir.join(LEDGER_FILE),
            spools: vec![dir.join(SPOOL_FILE)],
            state_dir: dir,
        }
    }

    /// Everything in one directory: what `NIX_LEDGER_HOME` selects.
    pub fn isolated(dir: &Path) -> Layout {
        Layout {
            state_dir: dir.to_path_buf(),
            ledger: dir.join(LEDGER_FILE),
            spools: vec![dir.join(SPOOL_FILE)],
        }
    }
}

/// `$XDG_STATE_HOME/nix-ledger`, or `~/.local/state/nix-ledger`.
pub fn user_state_dir() -> Option<PathBuf> {
    if let Some(xdg) = env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        let xdg = PathBuf::from(xdg);
        // The XDG spec says relative values are invalid and must be ignored.
        if xdg.is_absolute() {
            return Some(xdg.join("nix-ledger"));
        }
    }
    let home = env::var_os("HOME").filter(|v| !v.is_empty())?;
    Some(PathBuf::from(home).join(".local/state/nix-ledger"))
}

/// The directory the hook writes to: `NIX_LEDGER_HOME`, the system directory when running
/// as root, else the user's state directory. `None` when none can be determined.
pub fn hook_spool_dir(is_root: bool) -> Option<PathBuf> {
    if let Some(home) = env::var_os("NIX_LEDGER_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(home));
    }
    if is_root {
        return Some(system_dir());
    }
    user_state_dir()
}
