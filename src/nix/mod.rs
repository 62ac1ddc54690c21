//! Readers of Nix's own data and the `nix` command line: derivation files, store paths
//! and their names (with the version in a name: [`name`]), nixbase32, build logs, Nix's
//! configuration, and the derivation graph.
//! The lowest layer: it imports nothing else of nix-ledger but errors and time.

pub mod build_log;
pub mod command;
pub mod config;
pub mod drv;
pub mod graph;
pub mod name;
pub mod nixbase32;
pub mod store_path;
