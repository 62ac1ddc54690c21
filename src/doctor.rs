//! `nix-ledger doctor`. STUB.
