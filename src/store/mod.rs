//! The Nix store as it is on this machine: its database (valid paths, sizes, origins),
//! manifests of store paths (what every file under a path hashes to), and the temporary
//! roots Nix processes list (what a running Nix evaluated). Above the Nix
//! readers, below the ledger: errors are returned, and callers choose to be best-effort.

pub mod db;
pub mod manifest;
pub mod temproots;
