//! Where this machine's Nix keeps its store and its state, decided the way Nix decides:
//! from `NIX_STORE_DIR` (or the older `NIX_STORE`) and `NIX_STATE_DIR`, else the
//! defaults. A relocated store (one kept elsewhere, as every GC test uses) is found the
//! same way, so nix-ledger reads and collects the store the `nix` commands it runs see.

use std::path::PathBuf;

use super::store_path::DEFAULT_STORE_DIR;

/// Nix's state directory unless `NIX_STATE_DIR` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/nix/var/nix";

/// The store directory: `NIX_STORE_DIR`, else `NIX_STORE`, else `/nix/store`; without a
/// trailing `/`.
pub fn store_dir() -> String {
    let chosen = ["NIX_STORE_DIR", "NIX_STORE"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|v| !v.is_empty());
    match chosen {
        Some(dir) => {
            let trimmed = dir.trim_end_matches('/');
            if trimmed.is_empty() {
                "/".to_string()
            } else {
                trimmed.to_string()
            }
        }
        None => DEFAULT_STORE_DIR.to_string(),
    }
}

/// The state directory (database, GC roots, profiles, temporary roots): `NIX_STATE_DIR`,
/// else `/nix/var/nix`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("NIX_STATE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// The store database: `<state dir>/db/db.sqlite`.
pub fn store_db() -> PathBuf {
    state_dir().join("db/db.sqlite")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_nix_defaults() {
        // The test environment may relocate the store; the defaults are what is left
        // when nothing does.
        if std::env::var_os("NIX_STORE_DIR").is_none() && std::env::var_os("NIX_STORE").is_none() {
            assert_eq!(store_dir(), "/nix/store");
        }
        if std::env::var_os("NIX_STATE_DIR").is_none() {
            assert_eq!(state_dir(), PathBuf::from("/nix/var/nix"));
            assert_eq!(store_db(), PathBuf::from("/nix/var/nix/db/db.sqlite"));
        }
    }
}
