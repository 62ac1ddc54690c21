//! Build timing from Nix's build logs, for builds nobody watched.
//!
//! Nix writes a build's log to `<log dir>/drvs/<2 chars>/<rest of the .drv name>[.bz2]`,
//! creating it when the build starts and closing it when the build ends, so for a first
//! build the file's birth time is the start and its modification time the end (the hook
//! runs after). A rebuild reuses the inode, so its birth time belongs to the first build.

use std::path::PathBuf;
use std::time::UNIX_EPOCH;

/// When a build ran, as far as its log file tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTiming {
    /// `None` when the birth time cannot be trusted (a rebuild, or no birth time).
    pub started_ms: Option<i64>,
    pub finished_ms: i64,
}

/// The log directory: `NIX_LOG_DIR`, else Nix's default.
pub fn log_dir() -> PathBuf {
    std::env::var_os("NIX_LOG_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/nix/var/log/nix"))
}

/// The log file of `drv_path`, if one exists (compressed or not).
pub fn log_file(drv_path: &str) -> Option<PathBuf> {
    let base = drv_path.rsplit('/').next()?;
    if base.len() < 3 || !base.is_char_boundary(2) {
        return None;
    }
    let dir = log_dir().join("drvs").join(&base[..2]);
    let rest = &base[2..];
    [format!("{rest}.bz2"), rest.to_string()]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// The timing of the build of `drv_path` whose hook ran at `hook_ms`. `earlier_finish_ms`
/// is the end of the latest earlier recorded build of the same .drv, if any: a birth time
/// before it belongs to that build.
pub fn timing(drv_path: &str, hook_ms: i64, earlier_finish_ms: Option<i64>) -> Option<LogTiming> {
    let meta = std::fs::metadata(log_file(drv_path)?).ok()?;
    let finished_ms = millis(meta.modified().ok()?)?;
    // A log written after the hook ran belongs to a later rebuild of the same .drv.
    if finished_ms > hook_ms + 1_000 {
        return None;
    }
    let started_ms = meta
        .created()
        .ok()
        .and_then(millis)
        .filter(|&birth| birth <= finished_ms)
        .filter(|&birth| earlier_finish_ms.is_none_or(|earlier| birth > earlier));
    Some(LogTiming {
        started_ms,
        finished_ms,
    })
}

fn millis(t: std::time::SystemTime) -> Option<i64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}
