//! Where Nix builds a derivation, and so which build user runs it.
//!
//! Nix creates a temporary directory per build, `nix-build-<name>.drv-<n>` with the lowest
//! free `n` (measured on 2.8.0: in its `TMPDIR`, usually `/tmp`; Nix from 2.30 and Lix
//! default to `/nix/var/nix/builds`), and gives it to the build user the build alone runs
//! as. Since the fix for CVE-2024-38531 a sandboxed build's directory is root's, mode
//! 0700, and its `build` subdirectory is the build user's: only root can see who that is.
//! The state uses these directories to tell which build ended, the sampler to find a
//! build's processes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How many directory numbers are tried. Nix takes the lowest free `-<n>`, so a higher
/// one means as many same-name directories at once (other Nix processes, kept failed
/// builds).
const PROBES: u32 = 8;

/// A directory whose inode changed more than this before the build was seen to start is
/// not its directory but one left behind (`--keep-failed`): the build is stamped when
/// its start event is read, up to the reader's coalescing pause after Nix created the
/// directory.
const CREATED_BEFORE_START_SLACK_MS: i64 = 2_000;

/// The directories Nix may create build directories in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildRoots(Vec<PathBuf>);

impl BuildRoots {
    /// Exactly these roots.
    pub fn new(roots: Vec<PathBuf>) -> BuildRoots {
        BuildRoots(roots)
    }

    /// Where this machine's Nix builds: our `TMPDIR` (a single-user Nix's), `/tmp` (a
    /// daemon's, whatever ours is) and `/nix/var/nix/builds` (newer Nix), those that exist.
    pub fn of_this_machine() -> BuildRoots {
        let tmpdir = std::env::var_os("TMPDIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let mut roots: Vec<PathBuf> = Vec::new();
        for root in tmpdir
            .into_iter()
            .chain(["/tmp".into(), "/nix/var/nix/builds".into()])
        {
            if root.is_dir() && !roots.contains(&root) {
                roots.push(root);
            }
        }
        BuildRoots(roots)
    }

    /// The directories of the build of derivation `name` (`hello-2.12`) that exist,
    /// leaving out any older than a build that started at `started_ms` (Unix ms) can have.
    pub fn dirs(&self, name: &str, started_ms: Option<i64>) -> Vec<BuildDir> {
        let mut found = Vec::new();
        for root in &self.0 {
            for n in 0..PROBES {
                let path = root.join(format!("nix-build-{name}.drv-{n}"));
                let Ok(meta) = path.symlink_metadata() else {
                    continue;
                };
                let changed_ms = meta.ctime() * 1000 + meta.ctime_nsec() / 1_000_000;
                if started_ms.is_some_and(|s| changed_ms < s - CREATED_BEFORE_START_SLACK_MS) {
                    continue;
                }
                found.push(BuildDir {
                    owner: meta.uid(),
                    path,
                });
            }
        }
        found
    }
}

/// One build directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildDir {
    pub path: PathBuf,
    pub owner: u32,
}

impl BuildDir {
    /// The build user running this build, if another user than `me` and visible to us: the
    /// owner of the directory, or for a root-owned one (the sandbox layout since
    /// CVE-2024-38531) the owner of its `build` subdirectory. Root never: a root-owned
    /// directory whose inside we cannot see tells nothing, and counting all of root's
    /// processes as the build's would be worse than nothing.
    pub fn build_user(&self, me: u32) -> Option<u32> {
        let user = if self.owner == 0 {
            owner(&self.path.join("build"))?
        } else {
            self.owner
        };
        (user != 0 && user != me).then_some(user)
    }
}

fn owner(path: &Path) -> Option<u32> {
    path.symlink_metadata().ok().map(|m| m.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_directory_is_found_under_any_of_the_first_numbers_and_roots() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let roots = BuildRoots::new(vec![a.path().into(), b.path().into()]);
        assert!(roots.dirs("t-b", None).is_empty());
        // -0 held by another Nix when this build started: Nix took -3.
        std::fs::create_dir(b.path().join("nix-build-t-b.drv-3")).unwrap();
        let dirs = roots.dirs("t-b", None);
        assert_eq!(dirs.len(), 1);
        assert_eq!(dirs[0].path, b.path().join("nix-build-t-b.drv-3"));
        assert!(roots.dirs("t", None).is_empty());
        assert!(roots.dirs("t-b.drv", None).is_empty());
    }

    #[test]
    fn a_directory_older_than_the_build_is_a_leftover() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("nix-build-t.drv-0")).unwrap();
        let roots = BuildRoots::new(vec![root.path().into()]);
        let now_ms = crate::time::now_ms();
        assert_eq!(roots.dirs("t", Some(now_ms)).len(), 1);
        assert_eq!(roots.dirs("t", Some(now_ms - 60_000)).len(), 1);
        assert!(roots.dirs("t", Some(now_ms + 60_000)).is_empty());
    }

    #[test]
    fn root_is_never_the_build_user() {
        let dir = |owner| BuildDir {
            path: PathBuf::from("/nonexistent/nix-build-t.drv-0"),
            owner,
        };
        assert_eq!(dir(30001).build_user(1000), Some(30001));
        assert_eq!(
            dir(1000).build_user(1000),
            None,
            "our own: not a build user"
        );
        // Root's, and its `build` subdirectory cannot be seen.
        assert_eq!(dir(0).build_user(1000), None);
    }

    #[test]
    #[cfg_attr(
        not(root_tests),
        ignore = "needs root: it makes a directory another user owns"
    )]
    fn as_root_the_build_user_of_a_root_owned_layout_is_its_builds_owner() {
        // Root's, with the build user's `build` inside: as the wrapper running as root
        // sees a sandboxed build of a Nix with the CVE-2024-38531 layout.
        let top = tempfile::tempdir().unwrap();
        let inner = top.path().join("build");
        std::fs::create_dir(&inner).unwrap();
        std::os::unix::fs::chown(&inner, Some(65534), None).unwrap();
        let layout = BuildDir {
            path: top.path().into(),
            owner: 0,
        };
        assert_eq!(layout.build_user(0), Some(65534));
    }
}
