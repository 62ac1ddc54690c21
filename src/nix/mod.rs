//! Readers of Nix's own data: derivation files, store paths, the store database, and the
//! `nix` command line.

pub mod drv;
pub mod nixbase32;
pub mod store_path;
