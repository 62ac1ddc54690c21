//! `nix-ledger`: the command-line front end. STUB.
fn main() {}
