//! Deleting store paths, only ever through Nix: `nix-store --delete P…`.
//!
//! Nix checks liveness itself under its GC lock, so a path that became live since
//! nix-ledger planned (a new root, a running build) is refused, never deleted. Measured
//! on Nix 2.8: it goes through the paths in sorted order and stops at the first it may
//! not delete (`Cannot delete path '…' since it is still alive`); those before are gone,
//! the rest untouched. A dead path is refused too when something that keeps it alive
//! backwards (its referrers; with keep-outputs/keep-derivations a .drv and its outputs)
//! is not deleted in the same command. Each path is invalidated in the database before
//! its files go, so a kill at any moment leaves a store `nix-store --verify` accepts.

use std::time::Duration;

use super::command::NixCommand;
use crate::Result;

/// How long one `nix-store --delete` may run: it waits for the GC lock another
/// collection holds, and then deletes at disk speed.
pub const DELETE_LIMIT: Duration = Duration::from_secs(30 * 60);

/// What one `nix-store --delete` did, as it said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// The paths it reported deleting (`deleting '…'`).
    pub deleted: Vec<String>,
    /// The path it refused, if it stopped at one.
    pub refused: Option<String>,
    /// Its last error line when it failed for another reason.
    pub error: Option<String>,
}

/// The command line deleting `paths`.
pub fn command(paths: &[&str]) -> NixCommand {
    NixCommand::program("nix-store").arg("--delete").args(paths)
}

/// Reads what `nix-store --delete` printed on stderr.
pub fn parse(stderr: &str, success: bool) -> Deleted {
    let mut done = Deleted::default();
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("deleting '") {
            if let Some(path) = rest.strip_suffix('\'') {
                done.deleted.push(path.to_string());
            }
        } else if let Some(at) = line.find("Cannot delete path '") {
            let rest = &line[at + "Cannot delete path '".len()..];
            if let Some(end) = rest.find('\'') {
                done.refused = Some(rest[..end].to_string());
            }
        }
    }
    if !success && done.refused.is_none() {
        done.error = Some(
            stderr
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("failed without a message")
                .trim()
                .to_string(),
        );
    }
    done
}

/// Deletes `paths` (one command) and reports what Nix said it did.
pub fn delete(paths: &[&str]) -> Result<Deleted> {
    let done = command(paths).run_within(DELETE_LIMIT)?;
    Ok(parse(
        &String::from_utf8_lossy(&done.stderr),
        done.status.success(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletions_and_the_refusal_are_read_from_stderr() {
        let stderr = "finding garbage collector roots...\n\
            deleting '/s/aaa-big-0'\n\
            deleting '/s/bbb-tool-0'\n\
            error: Cannot delete path '/s/ccc-git-1' since it is still alive. To find out why, use: nix-store --query --roots\n";
        let done = parse(stderr, false);
        assert_eq!(done.deleted, ["/s/aaa-big-0", "/s/bbb-tool-0"]);
        assert_eq!(done.refused.as_deref(), Some("/s/ccc-git-1"));
        assert_eq!(done.error, None);

        let other = parse(
            "error: opening lock file '/x/gc.lock': Permission denied\n",
            false,
        );
        assert_eq!(
            other.error.as_deref(),
            Some("error: opening lock file '/x/gc.lock': Permission denied")
        );
        assert_eq!(
            parse("deleting unused links...\n", true),
            Deleted::default()
        );
    }
}
