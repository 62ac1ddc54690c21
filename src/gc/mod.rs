//! `nix-ledger store` and `nix-ledger gc`: the store as Nix's garbage collector sees it,
//! and garbage collection that knows what each build cost.
//!
//! - [`snapshot`]: one look at the store (roots from Nix, the database, the directory).
//! - [`cost`]: what getting a deleted build back would cost (the ledger, the caches).
//! - [`policy`]: the retention policy and which profile generations it removes.
//! - [`plan`]: what a policy deletes, in which order and why.
//! - [`execute`]: carrying a plan out through Nix, recorded batch by batch.
//! - [`report`]: `nix-ledger store`'s analysis.
//! - [`render`]: both as text.

pub mod cost;
pub mod execute;
pub mod plan;
pub mod policy;
pub mod render;
pub mod report;
pub mod snapshot;
