//! Store paths: `<store dir>/<32 nixbase32 chars>-<name>`. This module owns their syntax
//! (what Nix accepts as a hash part and a name) and the `.drv` naming convention;
//! it never touches the file system, so it works for paths of other machines' stores.

use std::fmt;

use super::nixbase32;
use crate::{Error, Result};

/// The store directory unless a store says otherwise.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";

/// Characters in the hash part: 160 bits of Nix base-32.
pub const HASH_PART_LEN: usize = 32;

/// Nix's limit on the name (`StorePath::MaxPathLen`): with the hash and dash the base
/// name stays under 255 bytes, the usual file-name limit.
pub const MAX_NAME_LEN: usize = 211;

/// The suffix that makes a store path a derivation.
pub const DRV_EXTENSION: &str = ".drv";

/// A syntactically valid store path, borrowed from the text it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath<'a> {
    store_dir: &'a str,
    hash_part: &'a str,
    name: &'a str,
}

impl<'a> StorePath<'a> {
    /// Parses a path in the default store (`/nix/store`).
    pub fn parse(path: &'a str) -> Result<StorePath<'a>> {
        Self::parse_in(DEFAULT_STORE_DIR, path)
    }

    /// Parses a path in `store_dir` (a trailing `/` on it is ignored). The path must be
    /// the store object itself, not a file inside it.
    pub fn parse_in(store_dir: &'a str, path: &'a str) -> Result<StorePath<'a>> {
        let not = || Error::NotStorePath(path.to_string());
        let store_dir = store_dir.trim_end_matches('/');
        let base = path
            .strip_prefix(store_dir)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(not)?;
        Self::from_base_name(store_dir, base).ok_or_else(not)
    }

    /// Parses `<hash>-<name>` (a store path without its directory), e.g. a file name
    /// from a listing of the store.
    pub fn from_base_name(store_dir: &'a str, base: &'a str) -> Option<StorePath<'a>> {
        let hash_part = base.get(..HASH_PART_LEN)?;
        let name = base.get(HASH_PART_LEN..)?.strip_prefix('-')?;
        if !hash_part.bytes().all(nixbase32::is_digit) || !is_valid_name(name) {
            return None;
        }
        Some(StorePath {
            store_dir: store_dir.trim_end_matches('/'),
            hash_part,
            name,
        })
    }

    /// The store directory, without a trailing `/`.
    pub fn store_dir(&self) -> &'a str {
        self.store_dir
    }

    /// The 32-character hash part.
    pub fn hash_part(&self) -> &'a str {
        self.hash_part
    }

    /// The 20 bytes the hash part encodes.
    pub fn digest(&self) -> [u8; 20] {
        let mut digest = [0u8; 20];
        // 32 checked digits are exactly 160 bits, so decoding cannot fail here.
        if let Ok(bytes) = nixbase32::decode(self.hash_part.as_bytes()) {
            digest.copy_from_slice(&bytes);
        }
        digest
    }

    /// The name after the dash, e.g. `hello-2.12.1` or `hello-2.12.1.drv`.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// `<hash>-<name>`: the file name in the store directory.
    pub fn base_name(&self) -> String {
        format!("{}-{}", self.hash_part, self.name)
    }

    /// Whether this is a derivation (`.drv`) path.
    pub fn is_drv(&self) -> bool {
        self.name.ends_with(DRV_EXTENSION) && self.name.len() > DRV_EXTENSION.len()
    }

    /// For a derivation, its name without `.drv` (the name its outputs carry, before any
    /// `-<output>` suffix); `None` for other paths.
    pub fn drv_name(&self) -> Option<&'a str> {
        if self.is_drv() {
            self.name.strip_suffix(DRV_EXTENSION)
        } else {
            None
        }
    }
}

impl fmt::Display for StorePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}-{}", self.store_dir, self.hash_part, self.name)
    }
}

/// Whether Nix accepts `name` as a store path name: 1 to 211 of `A-Za-z0-9+-._?=`, and
/// not `.`, `..`, nor starting with `.-` or `..-` (which current Nix rejects so that no
/// name can be mistaken for a relative directory).
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME_LEN {
        return false;
    }
    if name == "." || name == ".." || name.starts_with(".-") || name.starts_with("..-") {
        return false;
    }
    bytes
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c))
}

/// For a `.drv` path in the default store, the derivation's name without `.drv`.
pub fn drv_name(path: &str) -> Result<&str> {
    StorePath::parse(path)?
        .drv_name()
        .ok_or_else(|| Error::NotStorePath(path.to_string()))
}

/// The name in a store path, without its hash part and without `.drv`:
/// `/nix/store/<hash>-hello-2.12.drv` → `hello-2.12`. Anything that is not a store path
/// comes back as its last component.
pub fn path_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    let name = match base.get(HASH_PART_LEN..).and_then(|r| r.strip_prefix('-')) {
        Some(name) if base.len() > HASH_PART_LEN => name,
        _ => base,
    };
    name.strip_suffix(DRV_EXTENSION).unwrap_or(name)
}

/// `path` as a store path in whatever store directory it names: an absolute path whose
/// last component is a valid store path name (hash part, `-`, name). The store
/// directory is not checked, so that a store elsewhere than /nix/store works too.
pub fn parse_any_store(path: &str) -> Option<StorePath<'_>> {
    let (dir, base) = path.rsplit_once('/')?;
    if !path.starts_with('/') {
        return None;
    }
    StorePath::from_base_name(if dir.is_empty() { "/" } else { dir }, base)
}

/// Whether `path` is a derivation's path in some store (see [`parse_any_store`]).
pub fn is_drv_path(path: &str) -> bool {
    parse_any_store(path).is_some_and(|p| p.is_drv())
}

/// `s` with the hash part of every `/nix/store/` path blanked (`<hash>`): what is left
/// of a string once the paths, which change whenever any input changes, say nothing.
pub fn normalise(s: &str) -> std::borrow::Cow<'_, str> {
    let prefix = "/nix/store/";
    if !s.contains(prefix) {
        return std::borrow::Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut from = 0;
    for at in memchr::memmem::find_iter(bytes, prefix.as_bytes()) {
        if at < from {
            continue;
        }
        let hash_start = at + prefix.len();
        let hash = bytes.get(hash_start..hash_start + HASH_PART_LEN);
        if hash.is_some_and(|h| h.iter().all(|&c| nixbase32::is_digit(c))) {
            out.push_str(s.get(from..hash_start).unwrap_or_default());
            out.push_str("<hash>");
            from = hash_start + HASH_PART_LEN;
        }
    }
    out.push_str(s.get(from..).unwrap_or_default());
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-pytest-hook";

    #[test]
    fn parses_parts() {
        let p = StorePath::parse(HELLO).unwrap();
        assert_eq!(p.hash_part(), "3i27k1r82vx3adixspdm2b1a754fy9fq");
        assert_eq!(p.name(), "pytest-hook");
        assert_eq!(p.store_dir(), "/nix/store");
        assert_eq!(p.to_string(), HELLO);
        assert_eq!(
            p.base_name(),
            "3i27k1r82vx3adixspdm2b1a754fy9fq-pytest-hook"
        );
        assert!(!p.is_drv());
        assert_eq!(p.drv_name(), None);
        assert_eq!(nixbase32::encode(&p.digest()), p.hash_part());
    }

    #[test]
    fn drv_helpers() {
        let path = "/nix/store/2jc2zxjrcca3afg5ycw4j1gi91254s6s-gss-serv.c.patch?id=a75.drv";
        let p = StorePath::parse(path).unwrap();
        assert!(p.is_drv());
        assert_eq!(p.drv_name(), Some("gss-serv.c.patch?id=a75"));
        assert_eq!(drv_name(path).unwrap(), "gss-serv.c.patch?id=a75");
        assert!(matches!(drv_name(HELLO), Err(Error::NotStorePath(_))));
    }

    #[test]
    fn other_store_dirs() {
        let path = "/gnu/store/3i27k1r82vx3adixspdm2b1a754fy9fq-x.drv";
        let p = StorePath::parse_in("/gnu/store/", path).unwrap();
        assert_eq!(p.store_dir(), "/gnu/store");
        assert_eq!(p.to_string(), path);
        assert!(StorePath::parse(path).is_err());
        // The store dir must end at a path separator.
        assert!(StorePath::parse_in("/gnu/sto", path).is_err());
    }

    #[test]
    fn rejects_non_store_paths() {
        for bad in [
            "",
            "/nix/store",
            "/nix/store/",
            "nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-x",
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9f-x",
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fqq-x",
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fe-x",
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-",
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq_x",
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-x/bin/sh",
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-a b",
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-..",
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-.-x",
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-é",
        ] {
            let err = StorePath::parse(bad).unwrap_err();
            assert!(matches!(&err, Error::NotStorePath(p) if p == bad), "{bad}");
            assert_eq!(err.to_string(), format!("{bad}: not a store path"));
        }
        let long = format!(
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-{}",
            "a".repeat(212)
        );
        assert!(StorePath::parse(&long).is_err());
        assert!(StorePath::parse(&long[..long.len() - 1]).is_ok());
        assert!(StorePath::parse("/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-.x").is_ok());
    }

    #[test]
    fn names_and_normalisation() {
        assert_eq!(
            path_name("/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-hello-2.1.drv"),
            "hello-2.1"
        );
        assert_eq!(
            path_name("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello-2.12.1.drv"),
            "hello-2.12.1"
        );
        assert_eq!(path_name("garbage"), "garbage");
        assert_eq!(
            normalise("a /nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-x/bin b"),
            "a /nix/store/<hash>-x/bin b"
        );
        assert_eq!(normalise("/nix/store/short"), "/nix/store/short");
    }

    #[test]
    fn drv_paths_are_recognised_in_any_store() {
        assert!(is_drv_path(
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-hello-2.1.drv"
        ));
        assert!(is_drv_path(
            "/gnu/store/3i27k1r82vx3adixspdm2b1a754fy9fq-x.drv"
        ));
        for bad in [
            "",
            "garbage; rm -rf /",
            "/nix/store/\u{fffd}\u{fffd}.drv",
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-hello",
            "nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-x.drv",
            "/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-.drv",
        ] {
            assert!(!is_drv_path(bad), "{bad}");
        }
    }
}
