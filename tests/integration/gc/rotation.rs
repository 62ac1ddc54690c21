//! The maintenance job's spool rotation (filled in with `nix-ledger maintain`).
