//! nix-ledger's integration tests: one test binary, a module per area. They drive the real
//! `nix-ledger` and `nix-ledger-hook` binaries against the real Nix, each test in its own
//! `NIX_LEDGER_HOME` with salted derivations so that Nix really builds.

mod builders_tune;
mod cli_surface;
mod drv_corpus;
mod faults;
mod gc;
mod hook;
mod layers;
mod multi_user;
mod nix_module;
mod remote;
mod report;
mod servers;
mod sim;
mod switch;
mod sync;
mod trends;
mod tune;
mod util;
mod why;
mod wrapper;
