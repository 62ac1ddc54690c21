//! The states the ledger stores, as types: who recorded a build, how it ended, what kind
//! of session ran it and how that ended. Each maps to the exact text the schema's CHECK
//! constraints allow (docs/schema.md), so SQL elsewhere never spells them by hand.

use serde::Serialize;

/// Who recorded a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Hook,
    Wrapper,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hook => "hook",
            Source::Wrapper => "wrapper",
        }
    }
}

/// How a derivation was realised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    Built,
    Failed,
    Substituted,
}

impl BuildStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Built => "built",
            BuildStatus::Failed => "failed",
            BuildStatus::Substituted => "substituted",
        }
    }

    /// The status a stored text stands for.
    pub fn parse(text: &str) -> Option<BuildStatus> {
        match text {
            "built" => Some(BuildStatus::Built),
            "failed" => Some(BuildStatus::Failed),
            "substituted" => Some(BuildStatus::Substituted),
            _ => None,
        }
    }
}

/// What a wrapper session ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionKind {
    /// `nix-ledger build`.
    Build,
    /// `nix-ledger switch|boot|test|build-system`.
    Switch,
    Boot,
    Test,
    BuildSystem,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Build => "build",
            SessionKind::Switch => "switch",
            SessionKind::Boot => "boot",
            SessionKind::Test => "test",
            SessionKind::BuildSystem => "build-system",
        }
    }
}

/// How a wrapper session ended (`Running` until it does, or forever after a crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Running => "running",
            SessionStatus::Succeeded => "succeeded",
            SessionStatus::Failed => "failed",
            SessionStatus::Interrupted => "interrupted",
        }
    }
}

/// Where a build's start and end times came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimingSource {
    /// The wrapper saw the build start and stop in Nix's log.
    Wrapper,
    /// The build log's birth and modification times (hook records).
    BuildLog,
}

impl TimingSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TimingSource::Wrapper => "wrapper",
            TimingSource::BuildLog => "build-log",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_texts_round_trip_and_match_serde() {
        for s in [
            BuildStatus::Built,
            BuildStatus::Failed,
            BuildStatus::Substituted,
        ] {
            assert_eq!(BuildStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::from(s.as_str())
            );
        }
        assert_eq!(
            serde_json::to_value(SessionKind::BuildSystem).unwrap(),
            "build-system"
        );
        assert_eq!(
            serde_json::to_value(TimingSource::BuildLog).unwrap(),
            TimingSource::BuildLog.as_str()
        );
        assert_eq!(
            serde_json::to_value(SessionStatus::Interrupted).unwrap(),
            SessionStatus::Interrupted.as_str()
        );
    }
}

/// Whose builds a read covers: each machine's times are its own, so this machine's and a
/// fleet machine's are never mixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// This ledger's own builds.
    Here,
    /// The builds the fleet machine of this name made, pulled by `sync`.
    Fleet(&'a str),
}

impl<'a> Scope<'a> {
    /// The fleet machine's name, `None` for this ledger's own builds: the value bound to
    /// [`Scope::filter`]'s parameter.
    pub fn machine(self) -> Option<&'a str> {
        match self {
            Scope::Here => None,
            Scope::Fleet(m) => Some(m),
        }
    }

    /// A condition on the builds aliased `b` that selects this scope, with parameter
    /// `?n` bound to [`Scope::machine`].
    pub(crate) fn filter(n: usize) -> String {
        Scope::filter_on("b.", n)
    }

    /// [`Scope::filter`] on the rows of a builds or sessions table named by `prefix`
    /// (`"b."`, or `""` for the only table of the query).
    pub(crate) fn filter_on(prefix: &str, n: usize) -> String {
        format!(
            "(CASE WHEN ?{n} IS NULL THEN {prefix}origin IS NULL \
              ELSE {prefix}origin IS NOT NULL AND {prefix}origin_machine = ?{n} END)"
        )
    }
}
