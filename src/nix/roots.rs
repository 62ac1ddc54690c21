//! The garbage collector's roots, as Nix itself finds them: `nix-store --gc --print-roots`
//! run once, its output parsed and each root classified.
//!
//! Nix's own scan is the only one that agrees with its GC in every corner (symlinked
//! directories not followed, stale `gcroots/auto` links, links into a file inside a store
//! path, runtime roots from `/proc`, temporary roots of builds in progress), and it costs
//! one process (~30–90 ms). Its output is one `LINK -> STOREPATH` per line, sorted; a link
//! may contain spaces, ` -> ` and even newlines, a store path none of them, so a line is
//! split at its last ` -> ` and a line that does not end in a store path continues on the
//! next one.
//!
//! The scan also removes stale links in `gcroots/auto` (as every Nix GC does): that is
//! the one thing it changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::command::{NixCommand, Running};
use super::store_path::StorePath;
use crate::{Error, Result};

/// How long the root scan may take before nix-ledger gives up on it (it takes well under
/// a second; a store lock held elsewhere must not hang a report).
pub const SCAN_LIMIT: Duration = Duration::from_secs(120);

/// What keeps a root alive, by where its link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootKind {
    /// A generation of a profile (`<profile>-<N>-link`), in the state directory's
    /// `profiles/` or (found through `gcroots/auto`) anywhere else.
    Profile,
    /// Found through `gcroots/auto`: a `result` link of `nix-build`, `nix build`,
    /// `--add-root --indirect`, direnv's roots…
    Indirect,
    /// A link (or file) in the state directory's `gcroots/` itself.
    Gcroot,
    /// A running process uses the path (`/proc/<pid>/…`; `{censored}` when Nix would
    /// not say which, for users other than root).
    Runtime,
    /// A build or evaluation in progress holds it (`{temp:<pid>}`).
    Temp,
}

impl RootKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RootKind::Profile => "profile",
            RootKind::Indirect => "indirect",
            RootKind::Gcroot => "gcroot",
            RootKind::Runtime => "runtime",
            RootKind::Temp => "temp",
        }
    }
}

/// One line of `--print-roots`: a link and the store path it keeps alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Root {
    pub link: String,
    pub path: String,
    pub kind: RootKind,
}

impl Root {
    /// For a profile generation, the profile's path and the generation's number.
    pub fn generation(&self) -> Option<(PathBuf, u64)> {
        if self.kind != RootKind::Profile {
            return None;
        }
        generation_link(Path::new(&self.link))
    }
}

/// `<dir>/<name>-<N>-link` → (`<dir>/<name>`, N).
pub fn generation_link(link: &Path) -> Option<(PathBuf, u64)> {
    let base = link.file_name()?.to_str()?;
    let rest = base.strip_suffix("-link")?;
    let (name, number) = rest.rsplit_once('-')?;
    if name.is_empty() || number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: u64 = number.parse().ok()?;
    Some((link.with_file_name(name), number))
}

/// Parses `nix-store --gc --print-roots` for a store in `store_dir` whose state is in
/// `state_dir`. Lines that never end in a store path (a message, damage) are dropped.
pub fn parse(text: &str, store_dir: &str, state_dir: &Path) -> Vec<Root> {
    let mut roots = Vec::new();
    let mut pending = String::new();
    for line in text.split('\n') {
        if line.is_empty() && pending.is_empty() {
            continue;
        }
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(line);
        let Some((link, target)) = pending.rsplit_once(" -> ") else {
            continue;
        };
        if StorePath::parse_in(store_dir, target).is_err() {
            continue;
        }
        let kind = classify(link, state_dir);
        roots.push(Root {
            link: link.to_string(),
            path: target.to_string(),
            kind,
        });
        pending.clear();
    }
    roots
}

fn classify(link: &str, state_dir: &Path) -> RootKind {
    if link.starts_with("{temp:") {
        return RootKind::Temp;
    }
    if link == "{censored}" || link.starts_with("/proc/") {
        return RootKind::Runtime;
    }
    let path = Path::new(link);
    if path.starts_with(state_dir.join("profiles")) {
        return RootKind::Profile;
    }
    if path.starts_with(state_dir.join("gcroots")) {
        return RootKind::Gcroot;
    }
    // Found through gcroots/auto. A profile kept elsewhere (`nix-env -p /x/p`) gets an
    // auto root per generation: its link is `p-N-link` and `p` points at one of them.
    if is_profile_generation(path) {
        RootKind::Profile
    } else {
        RootKind::Indirect
    }
}

/// Whether `link` is a generation of a profile: `<dir>/<name>-<N>-link`, with
/// `<dir>/<name>` a symlink to some `<name>-<M>-link` beside it.
fn is_profile_generation(link: &Path) -> bool {
    let Some((profile, _)) = generation_link(link) else {
        return false;
    };
    let Ok(target) = std::fs::read_link(&profile) else {
        return false;
    };
    let current = profile.with_file_name(target.file_name().unwrap_or_default());
    generation_link(&current).is_some_and(|(p, _)| p == profile)
}

/// The `nix-store --gc --print-roots` command line.
pub fn command() -> NixCommand {
    NixCommand::program("nix-store").args(["--gc", "--print-roots"])
}

/// Starts the root scan in the background, so that the store database can be read
/// while Nix scans `/proc` and the roots.
pub fn spawn() -> Result<Running> {
    command().spawn()
}

/// Waits for a scan started by [`spawn`] and parses it.
pub fn collect(running: Running, store_dir: &str, state_dir: &Path) -> Result<Vec<Root>> {
    let done = running.wait_within(SCAN_LIMIT)?;
    if !done.status.success() {
        return Err(Error::Command {
            program: "nix-store --gc --print-roots".into(),
            message: done.last_error_line(),
        });
    }
    Ok(parse(
        &String::from_utf8_lossy(&done.stdout),
        store_dir,
        state_dir,
    ))
}

/// Takes the roots now.
pub fn scan(store_dir: &str, state_dir: &Path) -> Result<Vec<Root>> {
    collect(spawn()?, store_dir, state_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "/t/store";
    const A: &str = "/t/store/0123456789abcdfghijklmnpqrsvwxyz-a";
    const B: &str = "/t/store/1123456789abcdfghijklmnpqrsvwxyz-b.drv";

    #[test]
    fn every_kind_of_line_parses() {
        let text = format!(
            "/home/u/result -> {A}\n\
             /t/var/profiles/main-3-link -> {A}\n\
             /t/var/gcroots/direct -> {B}\n\
             /proc/42/cwd -> {A}\n\
             {{censored}} -> {A}\n\
             {{temp:77}} -> {B}\n\
             /home/u/a b -> c -> {A}\n\
             /home/u/two\nlines -> {A}\n\
             not a root at all\n"
        );
        let roots = parse(&text, S, Path::new("/t/var"));
        let kinds: Vec<(&str, RootKind)> =
            roots.iter().map(|r| (r.link.as_str(), r.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("/home/u/result", RootKind::Indirect),
                ("/t/var/profiles/main-3-link", RootKind::Profile),
                ("/t/var/gcroots/direct", RootKind::Gcroot),
                ("/proc/42/cwd", RootKind::Runtime),
                ("{censored}", RootKind::Runtime),
                ("{temp:77}", RootKind::Temp),
                ("/home/u/a b -> c", RootKind::Indirect),
                ("/home/u/two\nlines", RootKind::Indirect),
            ]
        );
        assert_eq!(roots[2].path, B);
        assert_eq!(
            roots[1].generation(),
            Some((PathBuf::from("/t/var/profiles/main"), 3))
        );
        assert_eq!(roots[0].generation(), None);
    }

    #[test]
    fn generation_links_are_recognised() {
        assert_eq!(
            generation_link(Path::new("/p/per-user/u/profile-12-link")),
            Some((PathBuf::from("/p/per-user/u/profile"), 12))
        );
        for not in [
            "/p/x-link",
            "/p/-3-link",
            "/p/a-3x-link",
            "/p/a-3-lin",
            "/p/a--link",
        ] {
            assert_eq!(generation_link(Path::new(not)), None, "{not}");
        }
    }

    #[test]
    fn a_profile_elsewhere_is_told_from_a_result_link_by_its_current_link() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("myprof-2-link");
        std::os::unix::fs::symlink(A, &link).unwrap();
        assert!(!is_profile_generation(&link), "no profile link yet");
        std::os::unix::fs::symlink("myprof-2-link", dir.path().join("myprof")).unwrap();
        assert!(is_profile_generation(&link));
        let text = format!("{} -> {A}\n", link.display());
        assert_eq!(
            parse(&text, S, Path::new("/t/var"))[0].kind,
            RootKind::Profile
        );
    }
}
