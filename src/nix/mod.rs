//! Readers of Nix's own data: derivation files, store paths, the store database, build
//! logs, and the `nix` command line.

pub mod build_log;
pub mod command;
pub mod drv;
pub mod nixbase32;
pub mod store_db;
pub mod store_path;
