//! nix-ledger: a ledger of every Nix build.
//!
//! The library holds everything; the two binaries (`nix-ledger` from `src/main.rs`,
//! `nix-ledger-hook` from `hook/main.rs`) are thin entry points. Modules are in layers,
//! each importing only from those below it (docs/architecture.md; a test checks it):
//!
//! 1. Base: [`error`], [`time`], [`size`], [`paths`], [`sys`] (the only `unsafe`),
//!    [`spool`] (the line format the hook writes and ingest reads), and [`machine`] (this
//!    machine's name in a fleet).
//! 2. [`nix`]: readers of Nix's own data (.drv files, store paths, build logs, Nix's
//!    configuration, the derivation graph) and the `nix` command-line builder.
//! 3. [`store`]: the store on this machine: its database and manifests of its paths.
//! 4. [`ledger`]: the SQLite ledger; it owns every table and every query.
//! 5. Features: [`hook`] (the post-build-hook's hot path), [`wrapper`] (`build`),
//!    [`switch`], [`why`] (why it rebuilt), [`trends`] (regressions over time),
//!    [`report`] (`history`, `show`, `builders`, `query`, and the report of everything),
//!    [`doctor`], [`sync`] (the fleet hub), [`gc`] (`store` and `gc`), [`maintenance`]
//!    (the periodic job), [`tune`] (`max-jobs` and `cores`, and the build's ETA).
//!
//! The command line (`src/cli`) sits on top, in the binary.

#![deny(unsafe_code)]

pub mod doctor;
pub mod error;
pub mod gc;
pub mod hook;
pub mod ledger;
pub mod machine;
pub mod maintenance;
pub mod nix;
pub mod paths;
pub mod report;
pub mod size;
pub mod spool;
pub mod store;
pub mod switch;
pub mod sync;
pub mod sys;
pub mod time;
pub mod trends;
pub mod tune;
pub mod why;
pub mod wrapper;

pub use error::{exit, Error, Result};
