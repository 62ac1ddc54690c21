//! `nix-ledger tune`: `max-jobs` and `cores` from what the ledger measured, by
//! simulating Nix's build loop.

pub mod critical;
pub mod error;
pub mod eta;
pub mod grid;
pub mod model;
pub mod observe;
pub mod oom;
pub mod share;
pub mod sim;
pub mod sweep;
pub mod workload;
