//! The library's error type. Messages are lowercase, name the input that was bad, and fit
//! on one line; [`Error::exit_code`] maps each kind to the process exit status.

use std::path::PathBuf;

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
    #[error("{path}: not a derivation: {reason}")]
    Drv { path: PathBuf, reason: String },
    #[error("{0}: not a store path")]
    NotStorePath(String),
    #[error("nothing recorded for {0}")]
    NotFound(String),
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed: {message}")]
    Command { program: String, message: String },
    #[error("{target}: {reason}")]
    BadTarget { target: String, reason: String },
    #[error("{input}: not a duration (try 7d, 24h, 90m or \"2 weeks\")")]
    BadDuration { input: String },
    #[error("cannot set up the wrapper's event loop: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error("no home directory: set HOME, XDG_STATE_HOME or NIX_LEDGER_HOME")]
    NoHome,
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit status for this error: 2 for bad input, 3 for a missing record,
    /// 1 for everything else (I/O, database, Nix).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::QueryRefused(_)
            | Error::Usage(_)
            | Error::Sql(_)
            | Error::NotStorePath(_)
            | Error::Drv { .. }
            | Error::BadTarget { .. }
            | Error::BadDuration { .. } => 2,
            Error::NotFound(_) => 3,
            _ => 1,
        }
    }

    /// Wraps a rusqlite error with the ledger's path.
    pub fn ledger(path: &std::path::Path, source: rusqlite::Error) -> Self {
        Error::Ledger {
            path: path.to_path_buf(),
            source,
        }
    }
}
