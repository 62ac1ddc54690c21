//! Readers of Nix's own data and the `nix` command line: derivation files, store paths
//! and their names (with the version in a name: [`name`]), nixbase32, build logs, Nix's
//! configuration, the derivation graph, and the commands garbage collection runs (roots,
//! profiles, binary caches, deletion).
//! The lowest layer: it imports nothing else of nix-ledger but errors and time.

pub mod build_log;
pub mod command;
pub mod config;
pub mod delete;
pub mod dirs;
pub mod drv;
pub mod graph;
pub mod machines;
pub mod name;
pub mod nixbase32;
pub mod profiles;
pub mod roots;
pub mod store_path;
pub mod substituters;
