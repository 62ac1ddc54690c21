//! The Nix store as it is on this machine: its database (valid paths, sizes, origins),
//! manifests of store paths (what every file under a path hashes to), the temporary
//! roots Nix processes list (what a running Nix evaluated: [`temproots`]), and the
//! analysis garbage collection needs: the whole database as a graph ([`graph`]), what is
//! live and dead exactly as Nix decides ([`live`]), what each root keeps ([`reach`]), and
//! dead paths grouped into what can be deleted together ([`units`]). Above the Nix
//! readers, below the ledger: errors are returned, and callers choose to be best-effort.

pub mod db;
pub mod graph;
pub mod live;
pub mod manifest;
pub mod reach;
pub mod temproots;
pub mod units;
