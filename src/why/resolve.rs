//! What `why` was given, resolved to one derivation: a `.drv` store path; an output
//! path (its deriver from the ledger, else `nix-store --query --deriver`); a `.nix` file
//! or a directory with a `default.nix`, instantiated with `nix-instantiate` (`-A` picks
//! the attribute); or a flake reference (`nix eval --raw REF.drvPath`).

use std::path::Path;

use crate::ledger::Ledger;
use crate::nix::command::NixCommand;
use crate::nix::store_path::StorePath;
use crate::{Error, Result};

/// Resolves what `why` was given to a .drv path. Accepted: a `.drv` store path; an output
/// store path (its deriver from the ledger, else `nix-store --query --deriver`); a `.nix`
/// file or a directory with a `default.nix`, instantiated with `nix-instantiate` (`attr`
/// is its `-A`); or a flake reference (`nix eval --raw REF.drvPath`). The result must be
/// exactly one derivation.
/// How a `.nix` target is instantiated: the attribute (`-A`) and the arguments of its
/// function (`--arg NAME EXPR`, `--argstr NAME STRING`), as `nix-instantiate` takes them.
#[derive(Debug, Clone, Default)]
pub struct Instantiation {
    pub attr: Option<String>,
    /// (name, Nix expression)
    pub args: Vec<(String, String)>,
    /// (name, string)
    pub argstrs: Vec<(String, String)>,
}

impl Instantiation {
    fn is_empty(&self) -> bool {
        self.attr.is_none() && self.args.is_empty() && self.argstrs.is_empty()
    }
}

pub fn resolve_target(ledger: &Ledger, target: &str, how: &Instantiation) -> Result<String> {
    let bad = |reason: &str| Error::BadTarget {
        target: target.to_string(),
        reason: reason.to_string(),
    };
    if let Ok(path) = StorePath::parse(target) {
        if path.is_drv() {
            return Ok(target.to_string());
        }
        if let Some(drv) = ledger.deriver_of(target)? {
            return Ok(drv);
        }
        let out = NixCommand::program("nix-store")
            .args(["--query", "--deriver", target])
            .output()?;
        let drv = out.trim();
        if StorePath::parse(drv).is_ok_and(|p| p.is_drv()) {
            return Ok(drv.to_string());
        }
        return Err(bad(
            "no known deriver (not recorded, and Nix does not know it)",
        ));
    }
    let as_path = Path::new(target);
    if as_path.is_file() || as_path.join("default.nix").is_file() {
        let mut command = NixCommand::program("nix-instantiate").arg(as_path);
        if let Some(attr) = &how.attr {
            command = command.args(["-A", attr]);
        }
        for (name, expr) in &how.args {
            command = command.args(["--arg", name, expr]);
        }
        for (name, value) in &how.argstrs {
            command = command.args(["--argstr", name, value]);
        }
        return one_drv(target, &command.output()?);
    }
    if !how.is_empty() {
        return Err(bad("-A, --arg and --argstr need a .nix file"));
    }
    if target.contains('#') || target.contains(':') {
        let out = NixCommand::nix_with_flakes()
            .args(["eval", "--raw"])
            .arg(format!("{target}.drvPath"))
            .output()?;
        return one_drv(target, &out);
    }
    Err(bad(
        "not a .drv, an output path, a .nix file or a flake reference",
    ))
}

fn one_drv(target: &str, output: &str) -> Result<String> {
    let drvs: Vec<&str> = output.split_whitespace().collect();
    match drvs.as_slice() {
        [one] if StorePath::parse(one).is_ok_and(|p| p.is_drv()) => Ok(one.to_string()),
        _ => Err(Error::BadTarget {
            target: target.to_string(),
            reason: format!(
                "evaluates to {} derivations, not one (choose one with -A)",
                drvs.len()
            ),
        }),
    }
}
