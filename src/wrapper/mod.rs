//! `nix-ledger build`: runs `nix build` with Nix's JSON log on stderr, shows live
//! progress, samples each build's memory and CPU, and records the session and every
//! build in the ledger.
//!
//! The supervisor is a single-threaded tokio loop: it reads Nix's stderr (stamping each
//! event on arrival, as the stream carries no times), forwards SIGINT/SIGTERM to Nix's
//! process group and redraws the progress. The sampler is its own thread so that reading
//! procfs never delays the stream. Nothing is written to the ledger per line: the session
//! row is opened before Nix starts; the builds are written in one transaction, on a
//! thread of their own, as soon as Nix has stopped all its activities (at the end it then
//! only tears down, for tens of milliseconds), or else at the end, also after an
//! interrupt; the session row is closed at the end.
//!
//! - [`args`]: the options read from the user's arguments, and the `nix` command line.
//! - `supervisor`: the event loop, signals and the child's process group.
//! - [`reader`]: Nix's stderr, read in stamped chunks on a thread of its own.
//! - [`events`]: parsing the JSON log.
//! - [`evaltime`]: how long Nix evaluated, from the order of its activities.
//! - [`builddir`]: where Nix builds, and which build user runs a build.
//! - [`state`]: what the log says happened.
//!   [`state::remote`]: builds on remote builders, and the activities they forward.
//! - [`progress`]: rendering on stderr.
//! - [`sampler`]: memory and CPU of running builds.
//! - [`contention`]: the load each build competed with, and its CPU time to the end.
//! - `record`: the early record and the end of the session.
//! - [`session`]: what the wrapper saw, as the ledger's records.
//! - [`summary`]: the summary after every build.

pub mod args;
pub mod builddir;
pub mod contention;
pub mod evaltime;
pub mod events;
pub mod progress;
pub mod reader;
mod record;

pub mod sampler;
pub mod session;
pub mod state;
pub mod summary;
mod supervisor;

use std::ffi::{OsStr, OsString};

use crate::ledger::model::SessionKind;
use crate::paths::Layout;
use crate::{Error, Result};
use summary::Summary;

pub use args::{nix_command, ArgsInfo};

/// One wrapped `nix build`.
#[derive(Debug, Clone)]
pub struct Request {
    /// The session kind recorded.
    pub kind: SessionKind,
    /// The arguments after `nix build`, passed through unchanged.
    pub args: Vec<OsString>,
}

/// How a wrapped build ended.
#[derive(Debug)]
pub struct Outcome {
    /// The exit status to leave with: Nix's, or 130 after SIGINT (143 after SIGTERM).
    pub exit_code: i32,
    pub interrupted: bool,
    /// The session's row; `None` when the ledger could not be opened or written.
    pub session_id: Option<i64>,
    pub summary: Summary,
    /// Why what was built before rebuilt ([`crate::why::summary_after_session`]): the
    /// text, `None` when nothing was rebuilt, or why it could not be told.
    pub rebuild_causes: Result<Option<String>>,
}

/// Runs the request to the end and records it. Errors are only those before Nix runs or
/// when the ledger cannot be written; Nix's own failure is an [`Outcome`].
pub fn run(layout: &Layout, req: &Request) -> Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(supervisor::supervise(layout, req))
}

/// `OsStr` helper for callers building requests.
pub fn os_args<I, S>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    args.into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect()
}
