//! The library's error type and the process exit codes. Messages are lowercase, name the
//! input that was bad, and fit on one line; [`Error::exit_code`] maps each kind to one of
//! the documented [`exit`] codes.

use std::path::PathBuf;

/// The exit codes of `nix-ledger`, as README.md lists them. `nix-ledger build` and the
/// system commands exit with Nix's own status instead (130 after Ctrl-C).
pub mod exit {
    /// Everything worked.
    pub const SUCCESS: i32 = 0;
    /// A failure of I/O, of the ledger's database, or of a Nix command it ran.
    pub const FAILURE: i32 = 1;
    /// Bad input: a usage error, a bad path, duration, size, query or target.
    pub const USAGE: i32 = 2;
    /// The input was understood, but the ledger has nothing recorded for it.
    pub const NOT_FOUND: i32 = 3;
    /// `sync`: the fleet hub could not be reached or refused (connection, password, TLS,
    /// a timeout, a server error). The local ledger is as it was, or holds what was
    /// synced before the failure, each part complete.
    pub const HUB: i32 = 4;
    /// `trends --fail-on-regression` was given and a regression was found.
    pub const REGRESSION: i32 = 5;
}

/// Longer inputs are cut to this many characters in messages: an error line names its
/// input, but a 120 KB argument would bury the message.
const SHOWN_INPUT_CHARS: usize = 120;

/// `input` as an error message shows it: whole when short, else its start and an
/// ellipsis saying how much was left out.
pub fn shorten(input: &str) -> String {
    let count = input.chars().count();
    if count <= SHOWN_INPUT_CHARS {
        return input.to_string();
    }
    let head: String = input.chars().take(SHOWN_INPUT_CHARS).collect();
    format!("{head}… ({} more characters)", count - SHOWN_INPUT_CHARS)
}

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ledger {path}: {source}")]
    Ledger {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("ledger {path} has schema version {found}, newer than this nix-ledger knows ({known}); upgrade nix-ledger")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("{0}")]
    Sql(String),
    #[error("query refused: {0}")]
    QueryRefused(String),
    #[error("{path}: not a derivation: {source}")]
    Drv {
        path: PathBuf,
        source: crate::nix::drv::DrvParseError,
    },
    #[error("{}: not a store path", shorten(.0))]
    NotStorePath(String),
    #[error("nothing recorded for {}", shorten(.0))]
    NotFound(String),
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed: {message}")]
    Command { program: String, message: String },
    #[error("{program} did not finish within {limit}; stopped it")]
    Timeout { program: String, limit: String },
    #[error("{}: {reason}", shorten(.target))]
    BadTarget { target: String, reason: String },
    #[error("{input}: not a duration (try 7d, 24h, 90m, 1mo or \"2 weeks\")")]
    BadDuration { input: String },
    #[error("{input}: not a size (try 512M, 2G or 40MiB)")]
    BadSize { input: String },
    #[error("store database {path}: {source}")]
    Store {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{0} panicked (a bug: please report it)")]
    Panicked(&'static str),
    #[error("cannot set up the wrapper's event loop: {0}")]
    Runtime(std::io::Error),
    #[error("cannot draw the chart {chart}: {message}")]
    Chart { chart: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("no home directory: set HOME, XDG_STATE_HOME or NIX_LEDGER_HOME")]
    NoHome,
    /// The fleet hub failed; the message names the hub without its password.
    #[error("{0}")]
    Hub(String),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit status for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::QueryRefused(_)
            | Error::Usage(_)
            | Error::Sql(_)
            | Error::NotStorePath(_)
            | Error::Drv { .. }
            | Error::BadTarget { .. }
            | Error::BadDuration { .. }
            | Error::BadSize { .. } => exit::USAGE,
            Error::NotFound(_) => exit::NOT_FOUND,
            Error::Hub(_) => exit::HUB,
            _ => exit::FAILURE,
        }
    }

    /// Whether this is a ledger that is not (or no longer) a SQLite database.
    pub fn is_damaged_ledger(&self) -> bool {
        matches!(
            self,
            Error::Ledger {
                source: rusqlite::Error::SqliteFailure(failure, _),
                ..
            } if matches!(
                failure.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            )
        )
    }

    /// Wraps a rusqlite error with the ledger's path.
    pub fn ledger(path: &std::path::Path, source: rusqlite::Error) -> Self {
        Error::Ledger {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_inputs_are_cut_in_messages() {
        assert_eq!(shorten("7d"), "7d");
        let long = "x".repeat(120_000);
        let shown = shorten(&long);
        assert!(shown.len() < 200, "{shown}");
        assert!(shown.ends_with("(119880 more characters)"), "{shown}");
    }
}
