//! Nix's temporary GC roots: each Nix process lists in `<state>/temproots/<pid>` the
//! store paths it is using, which the garbage collector must keep: every .drv its
//! evaluation wrote or read (so the whole graph of what it evaluated) and the outputs it
//! is building, NUL-separated. Nix 2.8's `nix build` says nothing of what it is about to
//! build; this list is how the wrapper's ETA learns the graph. Under a daemon the list
//! belongs to the daemon's worker process, and only root may read it.

use std::path::{Path, PathBuf};

use super::db::state_dir;
use crate::{Error, Result};

/// Where temporary roots are listed.
pub fn dir() -> PathBuf {
    state_dir().join("temproots")
}

/// The .drv paths process `pid` holds; `None` when it lists none or the list cannot be
/// read by this user.
pub fn drvs_of_process(pid: u32) -> Result<Option<Vec<String>>> {
    read(&dir().join(pid.to_string()))
}

/// The .drv paths of the process whose list holds `drv`, among the lists changed since
/// `since` (a daemon's worker, whose pid the client does not know); `None` if none does.
pub fn drvs_of_holder(drv: &str, since: std::time::SystemTime) -> Result<Option<Vec<String>>> {
    let Ok(entries) = std::fs::read_dir(dir()) else {
        return Ok(None);
    };
    for entry in entries.flatten() {
        let recent = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if !recent {
            continue;
        }
        if let Some(drvs) = read(&entry.path())? {
            if drvs.iter().any(|d| d == drv) {
                return Ok(Some(drvs));
            }
        }
    }
    Ok(None)
}

fn read(path: &Path) -> Result<Option<Vec<String>>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            return Ok(None)
        }
        Err(source) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    Ok(Some(parse(&bytes)))
}

/// The distinct .drv paths of a list, in order.
fn parse(bytes: &[u8]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    bytes
        .split(|&b| b == 0 || b == b'\n')
        .filter_map(|p| std::str::from_utf8(p).ok())
        .filter(|p| p.ends_with(".drv") && p.starts_with('/'))
        .filter(|p| seen.insert(*p))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_gives_its_derivations_once() {
        let list = b"/nix/store/a-x.drv\0/nix/store/b-y.drv\0/nix/store/a-x.drv\0/nix/store/c-x\0";
        assert_eq!(parse(list), ["/nix/store/a-x.drv", "/nix/store/b-y.drv"]);
        assert!(parse(b"").is_empty());
    }

    #[test]
    fn a_missing_list_is_none() {
        assert_eq!(read(Path::new("/nonexistent/temproots/1")).unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("42");
        std::fs::write(&file, b"/nix/store/a-x.drv\0").unwrap();
        assert_eq!(read(&file).unwrap().unwrap(), ["/nix/store/a-x.drv"]);
    }
}
