//! Verdicts on a root cause, with advice: an *avoidable* rebuild (only files that cannot
//! matter to a typical build changed in a source), a *no-op* rebuild (the outputs are
//! identical to the previous build's once their own store paths are normalised), or a
//! real change. Also what a rebuild cost, from the ledger's recorded durations.
//!
//! The list of files that cannot matter is deliberately conservative: a file some builds
//! do read (`flake.lock`, `Makefile`, `*.txt`) is never on it, because calling a needed
//! rebuild avoidable would be worse advice than missing one.

use serde::Serialize;

use super::compare::{OwnChanges, SourceChange};
use crate::ledger::Ledger;
use crate::Result;

/// Directories whose contents no typical build reads: VCS metadata, CI, editors, direnv.
const IGNORABLE_DIRS: &[&str] = &[
    ".git", ".hg", ".svn", ".github", ".gitlab", ".direnv", ".vscode", ".idea",
];
/// Exact file names no typical build reads.
const IGNORABLE_NAMES: &[&str] = &[
    ".gitignore",
    ".gitattributes",
    ".gitmodules",
    ".editorconfig",
    ".envrc",
    ".DS_Store",
];
/// Name prefixes (documentation and legal files, any extension).
const IGNORABLE_PREFIXES: &[&str] = &["README", "LICENSE", "LICENCE", "COPYING", "CHANGELOG"];

/// Whether a change to `rel_path` (inside a source) cannot matter to a typical build.
/// `source_name` is used for a source that is a single file (`rel_path` empty).
pub fn is_ignorable(rel_path: &str, source_name: &str) -> bool {
    let path = if rel_path.is_empty() {
        source_name
    } else {
        rel_path
    };
    let components: Vec<&str> = path.split('/').collect();
    let dirs = components.len().saturating_sub(1);
    if components
        .iter()
        .take(dirs)
        .any(|c| IGNORABLE_DIRS.contains(c))
    {
        return true;
    }
    let Some(name) = components.last().copied() else {
        return false;
    };
    if IGNORABLE_DIRS.contains(&name) || IGNORABLE_NAMES.contains(&name) {
        return true;
    }
    if IGNORABLE_PREFIXES.iter().any(|p| name.starts_with(p)) || name.ends_with(".md") {
        return true;
    }
    // Editor backups and swap files.
    if name.ends_with('~')
        || (name.starts_with('.') && (name.ends_with(".swp") || name.ends_with(".swo")))
    {
        return true;
    }
    // `nix-build`'s out-links, at the top of a source only, where Nix puts them.
    dirs == 0
        && (name == "result"
            || name
                .strip_prefix("result-")
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('.')))
}

/// What kind of rebuild a root cause caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    /// Only ignorable files changed in a source: filtering the source avoids it.
    Avoidable,
    /// The outputs are the same as the previous build's.
    NoOp,
    /// Something that can matter changed.
    Change,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Avoidable => "avoidable",
            VerdictKind::NoOp => "no-op",
            VerdictKind::Change => "change",
        }
    }
}

impl Verdict {
    /// Not judged (yet): a plain change, nothing measured.
    pub fn unjudged() -> Verdict {
        Verdict {
            kind: VerdictKind::Change,
            files: Vec::new(),
            advice: None,
            outputs_identical: None,
            cost_ms: None,
            cost_builds: 0,
        }
    }
}

/// The verdict on one root cause.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// Avoidable: the ignorable files that changed (`source/path`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
    /// Whether the root cause's new outputs equal its old ones (normalised); `None` when
    /// the ledger has no output manifests of both builds.
    pub outputs_identical: Option<bool>,
    /// Recorded build time of this derivation and of those rebuilt only because of it.
    pub cost_ms: Option<i64>,
    /// How many of those builds have a recorded duration.
    pub cost_builds: usize,
}

/// The ignorable files of a root cause whose only changes are in sources, or `None` when
/// anything else changed (or a source's files are unknown).
pub fn avoidable_files(own: &OwnChanges) -> Option<Vec<String>> {
    let only_sources = OwnChanges {
        sources: own.sources.clone(),
        ..OwnChanges::default()
    };
    if own.sources.is_empty() || *own != only_sources {
        return None;
    }
    let mut files = Vec::new();
    for SourceChange {
        name,
        files: changes,
        ..
    } in &own.sources
    {
        let changes = changes.as_ref()?;
        if changes.is_empty() {
            return None;
        }
        for c in changes {
            if !is_ignorable(&c.path, name) {
                return None;
            }
            files.push(if c.path.is_empty() {
                name.clone()
            } else {
                c.path.clone()
            });
        }
    }
    Some(files)
}

/// The advice for an avoidable rebuild: exclude what changed (by its top-level entry,
/// so a changed `.git/index` excludes `.git`) from the source.
pub fn filter_advice(files: &[String]) -> String {
    let mut tops: Vec<String> = files
        .iter()
        .map(|f| format!("./{}", f.split('/').next().unwrap_or(f)))
        .collect();
    tops.sort();
    tops.dedup();
    tops.truncate(6);
    format!(
        "filter the source so these files cannot cause a rebuild: \
         `src = lib.fileset.toSource {{ root = ./.; fileset = lib.fileset.difference ./. \
         (lib.fileset.unions (map lib.fileset.maybeMissing [ {} ])); }};` \
         or `lib.cleanSourceWith` with a filter that drops them",
        tops.join(" ")
    )
}

/// Whether two builds' outputs are identical (normalised manifests, output by output);
/// `None` when a manifest is missing on either side.
pub fn outputs_identical(
    ledger: &Ledger,
    new: &[(String, String)],
    old: &[(String, String)],
) -> Result<Option<bool>> {
    if new.is_empty() || old.is_empty() {
        return Ok(None);
    }
    if new.len() != old.len() || new.iter().zip(old).any(|(n, o)| n.0 != o.0) {
        return Ok(Some(false));
    }
    for ((_, n), (_, o)) in new.iter().zip(old) {
        let (Some(n), Some(o)) = (ledger.manifest_digest(n)?, ledger.manifest_digest(o)?) else {
            return Ok(None);
        };
        if n != o {
            return Ok(Some(false));
        }
    }
    Ok(Some(true))
}

/// Judges one root cause: avoidable first (it comes with advice), then no-op.
pub fn judge(
    ledger: &Ledger,
    own: &OwnChanges,
    new_drv: &str,
    old_drv: &str,
    cost_drvs: &[&str],
) -> Result<Verdict> {
    let identical = outputs_identical(
        ledger,
        &ledger.latest_outputs(new_drv)?,
        &ledger.latest_outputs(old_drv)?,
    )?;
    let (cost_ms, cost_builds) = ledger.recorded_cost(cost_drvs)?;
    let mut verdict = Verdict {
        kind: VerdictKind::Change,
        files: Vec::new(),
        advice: None,
        outputs_identical: identical,
        cost_ms,
        cost_builds,
    };
    if let Some(files) = avoidable_files(own) {
        verdict.kind = VerdictKind::Avoidable;
        verdict.advice = Some(filter_advice(&files));
        verdict.files = files;
    } else if identical == Some(true) {
        verdict.kind = VerdictKind::NoOp;
        verdict.advice = Some(
            "the outputs are identical to the previous build's: whatever changed does not \
             reach them; consider not passing it to this derivation"
                .to_string(),
        );
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::why::files::{FileChange, FileChangeKind};

    #[test]
    fn documentation_vcs_and_editor_files_are_ignorable_and_code_is_not() {
        for yes in [
            "README.md",
            "README",
            "docs/guide.md",
            "LICENSE-MIT",
            "COPYING",
            "CHANGELOG.txt",
            ".git/HEAD",
            ".git",
            "sub/.github/workflows/ci.yml",
            ".gitignore",
            ".editorconfig",
            "src/main.c~",
            "src/.main.c.swp",
            "result",
            "result-dev",
            ".direnv/flake-profile",
            ".vscode/settings.json",
            ".idea/workspace.xml",
        ] {
            assert!(is_ignorable(yes, "src"), "{yes} should be ignorable");
        }
        for no in [
            "main.c",
            "flake.lock",
            "flake.nix",
            "Makefile",
            "src/result",
            "result-parser.c",
            "docs/conf.py",
            "notes.txt",
            "gitignore.c",
        ] {
            assert!(!is_ignorable(no, "src"), "{no} should matter");
        }
        assert!(is_ignorable("", "README.md"));
        assert!(!is_ignorable("", "patch.diff"));
    }

    fn source(files: Option<Vec<(&str, FileChangeKind)>>) -> SourceChange {
        SourceChange {
            name: "src".into(),
            old_path: "/nix/store/a-src".into(),
            new_path: "/nix/store/b-src".into(),
            files: files.map(|f| {
                f.into_iter()
                    .map(|(p, c)| FileChange {
                        path: p.into(),
                        change: c,
                        detail: None,
                    })
                    .collect()
            }),
            note: None,
        }
    }

    #[test]
    fn a_rebuild_is_avoidable_only_when_nothing_but_ignorable_files_changed() {
        let readme_only = OwnChanges {
            sources: vec![source(Some(vec![("README.md", FileChangeKind::Modified)]))],
            ..OwnChanges::default()
        };
        assert_eq!(
            avoidable_files(&readme_only),
            Some(vec!["README.md".to_string()])
        );

        let with_code = OwnChanges {
            sources: vec![source(Some(vec![
                ("README.md", FileChangeKind::Modified),
                ("main.c", FileChangeKind::Added),
            ]))],
            ..OwnChanges::default()
        };
        assert_eq!(avoidable_files(&with_code), None);

        let mut with_env = readme_only.clone();
        with_env.env.push(crate::why::compare::EnvChange {
            name: "x".into(),
            old: None,
            new: Some("1".into()),
        });
        assert_eq!(avoidable_files(&with_env), None);

        let unknown = OwnChanges {
            sources: vec![source(None)],
            ..OwnChanges::default()
        };
        assert_eq!(avoidable_files(&unknown), None);
        assert_eq!(avoidable_files(&OwnChanges::default()), None);
    }
}
