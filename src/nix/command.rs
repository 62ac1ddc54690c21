//! A small builder for `nix` command lines, and the few queries every feature needs
//! (version, configuration). Every command gets `--extra-experimental-features
//! nix-command` where the Nix needs it and an empty substituter list on request, so no
//! caller has to remember either.

use std::ffi::{OsStr, OsString};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{Error, Result};

/// A `nix`-family command line under construction.
#[derive(Debug, Clone)]
pub struct NixCommand {
    program: OsString,
    args: Vec<OsString>,
}

impl NixCommand {
    /// `nix` with the experimental `nix-command` feature enabled (needed before 2.19's
    /// stabilisation of `nix build`/`show-config` and harmless after).
    pub fn nix() -> NixCommand {
        NixCommand::program("nix").args(["--extra-experimental-features", "nix-command"])
    }

    /// `nix` with flakes enabled too, for flake references.
    pub fn nix_with_flakes() -> NixCommand {
        NixCommand::nix().with_flakes()
    }

    /// Enables flakes for this command (after `nix-command`, which `nix()` enables).
    pub fn with_flakes(self) -> NixCommand {
        self.args(["--extra-experimental-features", "flakes"])
    }

    /// Any Nix program (`nix-build`, `nix-store`, ...).
    pub fn program(program: impl AsRef<OsStr>) -> NixCommand {
        NixCommand {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> NixCommand {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> NixCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// `--option NAME VALUE`.
    pub fn option(self, name: &str, value: impl AsRef<OsStr>) -> NixCommand {
        self.arg("--option").arg(name).arg(value)
    }

    /// The program and arguments, for display and for recording a session.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// A `std::process::Command` ready to spawn.
    pub fn to_command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command
    }

    /// Runs the command to completion and returns its stdout; a non-zero exit is an error
    /// carrying the last line of its stderr.
    pub fn output(&self) -> Result<String> {
        let program = self.program.to_string_lossy().into_owned();
        let out = self
            .to_command()
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn {
                program: program.clone(),
                source,
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let message = stderr
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no message")
                .trim()
                .to_string();
            return Err(Error::Command { program, message });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A Nix version, as `nix --version` prints it (`nix (Nix) 2.8.0`, `nix (Lix, like Nix) 2.91.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixVersion {
    pub raw: String,
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub is_lix: bool,
}

impl NixVersion {
    /// Parses the output of `nix --version`.
    pub fn parse(output: &str) -> Option<NixVersion> {
        let line = output.lines().next()?.trim();
        let number = line.split_whitespace().last()?;
        let mut parts = number
            .split(['.', '-', '+', 'p'])
            .map(|p| p.parse::<u32>().ok());
        Some(NixVersion {
            raw: line.to_string(),
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next().flatten().unwrap_or(0),
            is_lix: line.contains("Lix"),
        })
    }

    /// The version as `2.8.0`.
    pub fn number(&self) -> String {
        format!("{}.{}.{}", self.major, self.minor, self.patch)
    }

    /// Known ways this Nix passes an incomplete `OUT_PATHS` to the post-build-hook
    /// (the hook reads the .drv instead, so these are informational).
    pub fn out_paths_quirks(&self) -> Vec<&'static str> {
        let mut quirks = Vec::new();
        if self.is_lix {
            return quirks;
        }
        let v = (self.major, self.minor, self.patch);
        if v == (2, 8, 0) {
            quirks.push(
                "passes an empty OUT_PATHS to the post-build-hook (NixOS/nix#6446, fixed in 2.8.1)",
            );
        }
        if v < (2, 16, 0) {
            quirks.push("lists only the requested outputs in OUT_PATHS (all outputs since 2.16)");
        }
        if ((2, 30, 3)..=(2, 32, 2)).contains(&v) {
            quirks.push("passes an empty OUT_PATHS under --check/--rebuild (NixOS/nix#14287)");
        }
        quirks
    }
}

/// `nix --version`.
pub fn nix_version() -> Result<NixVersion> {
    let out = NixCommand::program("nix").arg("--version").output()?;
    NixVersion::parse(&out).ok_or_else(|| Error::Command {
        program: "nix".into(),
        message: format!("unrecognised version output {:?}", out.trim()),
    })
}

/// `nix show-config --json`: every setting with its value (`max-jobs = auto` resolved).
pub fn show_config() -> Result<Value> {
    let out = NixCommand::nix().args(["show-config", "--json"]).output()?;
    serde_json::from_str(&out).map_err(|e| Error::Command {
        program: "nix show-config".into(),
        message: format!("unreadable JSON: {e}"),
    })
}

/// One setting's value from [`show_config`]'s output.
pub fn config_value<'a>(config: &'a Value, name: &str) -> Option<&'a Value> {
    config.get(name).and_then(|s| s.get("value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_nix_and_lix_parse() {
        let v = NixVersion::parse("nix (Nix) 2.8.0\n").unwrap();
        assert_eq!((v.major, v.minor, v.patch, v.is_lix), (2, 8, 0, false));
        assert_eq!(v.out_paths_quirks().len(), 2);
        let v = NixVersion::parse("nix (Nix) 2.24.10").unwrap();
        assert_eq!(v.number(), "2.24.10");
        assert!(v.out_paths_quirks().is_empty());
        let v = NixVersion::parse("nix (Lix, like Nix) 2.91.1").unwrap();
        assert!(v.is_lix);
        let v = NixVersion::parse("nix (Nix) 2.31.0pre20250101_abcdef").unwrap();
        assert_eq!((v.major, v.minor), (2, 31));
        assert!(NixVersion::parse("garbage").is_none());
    }

    #[test]
    fn command_lines_carry_the_experimental_feature() {
        let argv = NixCommand::nix()
            .arg("build")
            .option("max-jobs", "2")
            .argv();
        assert_eq!(
            argv,
            [
                "nix",
                "--extra-experimental-features",
                "nix-command",
                "build",
                "--option",
                "max-jobs",
                "2"
            ]
        );
    }
}
