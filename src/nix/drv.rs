//! Reading `.drv` files (Nix's ATerm derivation format). STUB: replaced by the full reader.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::{Error, Result};

/// One output of a derivation, as written in the .drv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivationOutput {
    /// The output's store path; empty for floating content-addressed outputs.
    pub path: String,
    /// `r:sha256` style hash algorithm for fixed-output derivations, else empty.
    pub hash_algo: String,
    /// The expected hash for fixed-output derivations, else empty.
    pub hash: String,
}

/// A parsed derivation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Derivation {
    pub outputs: BTreeMap<String, DerivationOutput>,
    pub input_drvs: BTreeMap<String, BTreeSet<String>>,
    pub input_srcs: BTreeSet<String>,
    pub system: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// Parses a whole derivation.
pub fn parse(_bytes: &[u8]) -> std::result::Result<Derivation, String> {
    Err("not implemented".into())
}

/// Parses only the outputs (name, path), stopping right after them: the hook's fast path.
pub fn parse_outputs(_bytes: &[u8]) -> std::result::Result<Vec<(String, String)>, String> {
    Err("not implemented".into())
}

/// Reads and parses the .drv at `path`.
pub fn read(path: &Path) -> Result<Derivation> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes).map_err(|reason| Error::Drv {
        path: path.to_path_buf(),
        reason,
    })
}
