//! Nix's base-32 alphabet and encoding. STUB: replaced by the full reader.
