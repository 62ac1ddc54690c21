//! Errors of the tuner's pure parts (model, simulator, sweep): a workload or a setting
//! that cannot be simulated. Everything else there is total.

use thiserror::Error;

/// Why a workload or a setting was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TuneError {
    /// A job names a dependency index that does not exist.
    #[error("job {job} ({name}) depends on job {dep}, but the workload has {len} jobs")]
    UnknownDependency {
        job: usize,
        name: String,
        dep: usize,
        len: usize,
    },
    /// The dependency graph has a cycle; Nix would never build it either.
    #[error("the dependency graph has a cycle through {name}")]
    Cycle { name: String },
    /// A setting that cannot describe a machine or a Nix configuration.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
}

impl TuneError {
    /// The library's error for this one. Not a `From` impl: a second conversion into
    /// `crate::Error` would make `?` ambiguous in generic closures elsewhere.
    pub fn into_error(self) -> crate::Error {
        let e = self;
        match e {
            TuneError::InvalidSetting(_) => crate::Error::Usage(e.to_string()),
            TuneError::Cycle { ref name } | TuneError::UnknownDependency { ref name, .. } => {
                crate::Error::BadTarget {
                    target: name.clone(),
                    reason: e.to_string(),
                }
            }
        }
    }
}
