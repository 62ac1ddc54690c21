//! Profiles and their generations, read the way Nix reads them, and removed the way
//! `nix-env --delete-generations` removes them.
//!
//! A profile `P` is a symlink to `P-N-link` beside it (its current generation), and each
//! `P-N-link` points at the generation's store path; a generation's time is the link's
//! own modification time (lstat). Removing generations goes through `nix-env`, never
//! `unlink`: it takes the profile's lock, and refuses (removing nothing) when asked to
//! remove the current generation, which may have changed since nix-ledger looked.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::command::NixCommand;
use super::roots::generation_link;
use crate::{Error, Result};

/// How long `nix-env --delete-generations` may take (it waits for the profile's lock).
pub const DELETE_LIMIT: Duration = Duration::from_secs(120);

/// One generation of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Generation {
    pub number: u64,
    /// `P-N-link`.
    pub link: PathBuf,
    /// When it was made: the link's modification time, unix milliseconds.
    pub time_ms: i64,
    /// The store path it points at.
    pub path: String,
    pub current: bool,
}

/// The number of `profile`'s current generation (what `profile` links to).
pub fn current(profile: &Path) -> Option<u64> {
    let target = std::fs::read_link(profile).ok()?;
    let beside = profile.with_file_name(target.file_name()?);
    generation_link(&beside)
        .filter(|(p, _)| p == profile)
        .map(|(_, n)| n)
}

/// Every generation of `profile`, oldest first.
pub fn generations(profile: &Path) -> Result<Vec<Generation>> {
    let dir = profile.parent().unwrap_or(Path::new("/"));
    let current = current(profile);
    let read_err = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let link = entry.path();
        let Some((owner, number)) = generation_link(&link) else {
            continue;
        };
        if owner != profile {
            continue;
        }
        // A link that vanished meanwhile (another nix-env) is simply not a generation.
        let (Ok(meta), Ok(target)) = (std::fs::symlink_metadata(&link), std::fs::read_link(&link))
        else {
            continue;
        };
        found.push(Generation {
            number,
            time_ms: meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000,
            path: target.to_string_lossy().into_owned(),
            current: current == Some(number),
            link,
        });
    }
    found.sort_by_key(|g| g.number);
    Ok(found)
}

/// `nix-env --profile PROFILE --delete-generations N…`.
pub fn delete_command(profile: &Path, numbers: &[u64]) -> NixCommand {
    NixCommand::program("nix-env")
        .arg("--profile")
        .arg(profile)
        .arg("--delete-generations")
        .args(numbers.iter().map(|n| n.to_string()))
}

/// Removes the generations `numbers` of `profile` through nix-env (all or none: nix-env
/// refuses the whole list when it holds the current generation).
pub fn delete(profile: &Path, numbers: &[u64]) -> Result<()> {
    if numbers.is_empty() {
        return Ok(());
    }
    delete_command(profile, numbers)
        .output_within(DELETE_LIMIT)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn generations_are_read_from_the_links_beside_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("main");
        for n in [1, 2, 10] {
            symlink(
                format!("/s/{n}-x"),
                dir.path().join(format!("main-{n}-link")),
            )
            .unwrap();
        }
        symlink("/s/other", dir.path().join("other-1-link")).unwrap();
        symlink("main-2-link", &profile).unwrap();
        let gens = generations(&profile).unwrap();
        let numbers: Vec<(u64, bool)> = gens.iter().map(|g| (g.number, g.current)).collect();
        assert_eq!(numbers, [(1, false), (2, true), (10, false)]);
        assert_eq!(gens[2].path, "/s/10-x");
        assert!(gens[0].time_ms > 0);
        assert_eq!(current(&profile), Some(2));
        assert_eq!(current(&dir.path().join("none")), None);
    }

    #[test]
    fn the_delete_command_names_the_profile_and_numbers() {
        let argv = delete_command(Path::new("/p/main"), &[1, 3]).argv();
        assert_eq!(
            argv,
            [
                "nix-env",
                "--profile",
                "/p/main",
                "--delete-generations",
                "1",
                "3"
            ]
        );
    }
}
