//! nix-ledger: a ledger of every Nix build.
//!
//! The library holds everything; the two binaries (`nix-ledger` from `src/main.rs`,
//! `nix-ledger-hook` from `hook/main.rs`) are thin entry points. Modules are by feature:
//!
//! - [`hook`]: the post-build-hook's hot path (one spool line per build, always exit 0).
//! - [`spool`]: the append-only line format shared by the hook and ingest.
//! - [`ledger`]: the SQLite ledger, its migrations, ingest and read-only queries.
//! - [`nix`]: readers of Nix's own data (.drv files, store paths, the store DB, config).
//! - [`report`]: listing and showing what the ledger knows (`history`, `show`, `query`).
//! - [`doctor`]: checks of the installation and of lost records.
//! - [`paths`]: where the ledger and the spools live.
//! - [`why`]: why something rebuilt (root causes, source manifests) and wasted rebuilds.
//! - [`switch`]: `nix-ledger switch|boot|test|build-system`, for NixOS and nix-darwin.
//! - [`wrapper`]: `nix-ledger build`, the recorded `nix build` with live progress.

pub mod doctor;
pub mod error;
pub mod hook;
pub mod ledger;
pub mod nix;
pub mod paths;
pub mod report;
pub mod spool;
pub mod switch;
pub mod timefmt;
pub mod why;
pub mod wrapper;

pub use error::{Error, Result};
