//! Which store paths a binary cache has: one `nix path-info --json --store URL P…` per
//! cache for all the paths at once (Nix answers `"valid": false` for those it lacks),
//! bounded so that an unreachable cache costs seconds, never a stalled GC.
//!
//! Nix's own retries are turned off (`download-attempts 1`, `connect-timeout 2`,
//! `stalled-download-timeout 3`, measured: a refused connection answers in 0.1 s, a
//! silent host in ~3 s instead of minutes), its negative narinfo cache too (a path pushed
//! after a miss would stay "missing" for an hour), and the whole call has a wall-clock
//! limit. A cache that does not answer is "unknown", never "has it".

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::command::NixCommand;
use crate::{Error, Result};

/// The wall-clock limit of one query (all its paths).
pub const QUERY_LIMIT: Duration = Duration::from_secs(60);
/// Paths per `nix path-info` call: far below the kernel's argument limit, and small
/// enough that a slow cache (an HTTP request per path) answers some before the limit.
pub const PATHS_PER_CALL: usize = 500;

/// The command line asking `url` about `paths`.
pub fn query_command(url: &str, paths: &[&str]) -> NixCommand {
    NixCommand::nix()
        .args(["path-info", "--json", "--store", url])
        .option("connect-timeout", "2")
        .option("stalled-download-timeout", "3")
        .option("download-attempts", "1")
        .option("narinfo-cache-negative-ttl", "0")
        .args(paths)
}

#[derive(Deserialize)]
struct Entry {
    path: String,
    #[serde(default = "yes")]
    valid: bool,
}

fn yes() -> bool {
    true
}

/// Parses `nix path-info --json` output: path → whether the store has it.
pub fn parse(json: &str) -> Result<HashMap<String, bool>> {
    let entries: Vec<Entry> = serde_json::from_str(json).map_err(|e| Error::Command {
        program: "nix path-info".into(),
        message: format!("unreadable JSON: {e}"),
    })?;
    Ok(entries.into_iter().map(|e| (e.path, e.valid)).collect())
}

/// What a cache answered: path → whether it has it, for the paths it answered about
/// (the others are unknown), and why it stopped early, if it did.
#[derive(Debug, Default)]
pub struct Answers {
    pub has: HashMap<String, bool>,
    pub stopped: Option<Error>,
}

/// Asks the cache at `url` which of `paths` it has (most important first: asked in
/// order), in calls of [`PATHS_PER_CALL`], within `limit` in all. What the calls before a
/// failure or the limit answered is kept.
pub fn query(url: &str, paths: &[&str], limit: Duration) -> Answers {
    let deadline = std::time::Instant::now() + limit;
    let mut answers = Answers::default();
    for chunk in paths.chunks(PATHS_PER_CALL) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            answers.stopped = Some(Error::Timeout {
                program: format!("nix path-info --store {url}"),
                limit: format!("{} s", limit.as_secs()),
            });
            break;
        }
        let done = match query_command(url, chunk).run_within(left) {
            Ok(done) => done,
            Err(e) => {
                answers.stopped = Some(e);
                break;
            }
        };
        if !done.status.success() {
            answers.stopped = Some(Error::Command {
                program: format!("nix path-info --store {url}"),
                message: done.last_error_line(),
            });
            break;
        }
        match parse(&String::from_utf8_lossy(&done.stdout)) {
            Ok(has) => answers.has.extend(has),
            Err(e) => {
                answers.stopped = Some(e);
                break;
            }
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_and_missing_paths_are_told_apart() {
        let json = r#"[{"path":"/s/a-x","valid":false},
            {"path":"/s/b-y","narHash":"sha256-X","narSize":616,"references":[],"url":"nar/1.nar.xz"}]"#;
        let answers = parse(json).unwrap();
        assert!(!answers["/s/a-x"]);
        assert!(answers["/s/b-y"]);
        assert!(parse("garbage").is_err());
    }

    #[test]
    fn an_unreachable_cache_fails_fast() {
        let started = std::time::Instant::now();
        let result = query(
            "http://127.0.0.1:9",
            &["/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x"],
            Duration::from_secs(30),
        );
        assert!(
            result.has.is_empty() && result.stopped.is_some(),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
