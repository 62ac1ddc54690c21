//! A small builder for `nix` command lines, and the few queries every feature needs
//! (version, configuration). Every command gets `--extra-experimental-features
//! nix-command` where the Nix needs it and an empty substituter list on request, so no
//! caller has to remember either.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// A command that ran to its end: its status and everything it printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    /// The last non-empty line of stderr, as an error message.
    pub fn last_error_line(&self) -> String {
        String::from_utf8_lossy(&self.stderr)
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("no message")
            .trim()
            .to_string()
    }
}

/// A command running in the background, its output collected by two threads (so that a
/// chatty command never blocks on a full pipe while the caller does other work).
pub struct Running {
    program: String,
    child: Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    /// Waits for the command to end, at most until `limit` after now; past that it is
    /// killed and the wait is an error: no Nix command may hang nix-ledger.
    pub fn wait_within(mut self, limit: Duration) -> crate::Result<Finished> {
        let deadline = Instant::now() + limit;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(Error::Timeout {
                        program: self.program.clone(),
                        limit: if limit < Duration::from_secs(1) {
                            format!("{} ms", limit.as_millis())
                        } else {
                            format!("{} s", limit.as_secs())
                        },
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(source) => {
                    return Err(Error::Spawn {
                        program: self.program.clone(),
                        source,
                    })
                }
            }
        };
        let join =
            |h: Option<JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
        Ok(Finished {
            status,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A background command nobody waits for any more is stopped, not left behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

impl NixCommand {
    /// Starts the command with stdin closed and both outputs collected; see
    /// [`Running::wait_within`].
    pub fn spawn(&self) -> crate::Result<Running> {
        let program = self.program.to_string_lossy().into_owned();
        let mut child = self
            .to_command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: program.clone(),
                source,
            })?;
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(drain);
        Ok(Running {
            program,
            child,
            stdout,
            stderr,
        })
    }

    /// Runs the command to its end or for at most `limit`, whatever its exit status.
    pub fn run_within(&self, limit: Duration) -> crate::Result<Finished> {
        self.spawn()?.wait_within(limit)
    }

    /// As [`NixCommand::output`], bounded by `limit`.
    pub fn output_within(&self, limit: Duration) -> crate::Result<String> {
        let done = self.run_within(limit)?;
        if !done.status.success() {
            return Err(Error::Command {
                program: self.program.to_string_lossy().into_owned(),
                message: done.last_error_line(),
            });
        }
        Ok(String::from_utf8_lossy(&done.stdout).into_owned())
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
    fn a_command_past_its_limit_is_killed_and_an_error() {
        let started = Instant::now();
        let err = NixCommand::program("sleep")
            .arg("30")
            .run_within(Duration::from_millis(200))
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "sleep did not finish within 200 ms; stopped it"
        );
        let done = NixCommand::program("sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .run_within(Duration::from_secs(30))
            .unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stdout, b"out\n");
        assert_eq!(done.last_error_line(), "err");
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
