//! The user's arguments to `nix-ledger build`: the few options the wrapper reads from
//! them (all are passed to Nix unchanged), and the `nix build` command line it runs.

use std::ffi::OsString;

use super::Request;
use crate::nix::command::NixCommand;

/// What the arguments say about the settings and the display.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArgsInfo {
    pub print_build_logs: bool,
    pub extra_verbosity: u64,
    pub max_jobs: Option<i64>,
    pub cores: Option<i64>,
    /// The installables are flake references (no `--file`/`--expr`).
    pub flake_refs: bool,
}

impl ArgsInfo {
    /// Reads the options the wrapper cares about; everything is still passed to Nix.
    pub fn from_args(args: &[OsString]) -> ArgsInfo {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut info = ArgsInfo {
            flake_refs: true,
            ..ArgsInfo::default()
        };
        let number = |v: Option<&String>| -> Option<i64> { v?.parse().ok() };
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            match a {
                "--" => break,
                "-L" | "--print-build-logs" => info.print_build_logs = true,
                "--verbose" => info.extra_verbosity += 1,
                "-f" | "--file" | "--expr" => info.flake_refs = false,
                "-j" | "--max-jobs" => {
                    info.max_jobs = number(args.get(i + 1)).or(info.max_jobs);
                    i += 1;
                }
                "--cores" => {
                    info.cores = number(args.get(i + 1)).or(info.cores);
                    i += 1;
                }
                "--option" => {
                    match args.get(i + 1).map(String::as_str) {
                        Some("max-jobs") => info.max_jobs = number(args.get(i + 2)),
                        Some("cores") => info.cores = number(args.get(i + 2)),
                        _ => {}
                    }
                    i += 2;
                }
                _ if a.starts_with("--file=") || a.starts_with("--expr=") => {
                    info.flake_refs = false
                }
                _ if a.starts_with('-') && !a.starts_with("--") => {
                    // Bundled short flags: -vvL, -j4.
                    let flags = &a[1..];
                    if let Some(n) = flags.strip_prefix('j') {
                        if !n.is_empty() {
                            info.max_jobs = n.parse().ok();
                        }
                    } else {
                        for c in flags.chars() {
                            match c {
                                'v' => info.extra_verbosity += 1,
                                'L' => info.print_build_logs = true,
                                'f' => info.flake_refs = false,
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
            i += 1;
        }
        info
    }
}

/// The full `nix` command line for a request. The JSON log options come after the
/// user's (but before a `--`), because Nix's `-L` switches the log format to its own
/// progress bar and the last format given wins.
pub fn nix_command(req: &Request, info: &ArgsInfo) -> NixCommand {
    let mut cmd = NixCommand::nix();
    if info.flake_refs {
        cmd = cmd.with_flakes();
    }
    let split = req
        .args
        .iter()
        .position(|a| a == "--")
        .unwrap_or(req.args.len());
    cmd.arg("build")
        .args(&req.args[..split])
        // Not `-v`: the wrapper needs only what Nix sends at its default verbosity
        // (activities, results, errors), and on Nix 2.8 `-v` alone made a
        // 200-derivation build 1.4% slower (docs/benchmarks.md).
        .args(["--log-format", "internal-json"])
        .args(&req.args[split..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::model::SessionKind;
    use crate::wrapper::os_args;

    #[test]
    fn the_options_that_matter_are_read_from_the_passed_through_arguments() {
        let info = ArgsInfo::from_args(&os_args([
            "-f", "x.nix", "-vvL", "-j4", "--option", "cores", "3", "--argstr", "salt", "-j",
        ]));
        assert_eq!(
            info,
            ArgsInfo {
                print_build_logs: true,
                extra_verbosity: 2,
                max_jobs: Some(4),
                cores: Some(3),
                flake_refs: false,
            }
        );
        let info = ArgsInfo::from_args(&os_args([
            ".#hello",
            "--max-jobs",
            "2",
            "--print-build-logs",
        ]));
        assert!(info.flake_refs && info.print_build_logs);
        assert_eq!(info.max_jobs, Some(2));
    }

    #[test]
    fn the_nix_command_keeps_the_arguments_in_order_and_adds_the_json_log() {
        let req = Request {
            kind: SessionKind::Build,
            args: os_args(["-f", "x.nix", "--json"]),
        };
        let argv = nix_command(&req, &ArgsInfo::from_args(&req.args)).argv();
        assert_eq!(
            argv,
            [
                "nix",
                "--extra-experimental-features",
                "nix-command",
                "build",
                "-f",
                "x.nix",
                "--json",
                "--log-format",
                "internal-json",
            ]
        );
    }
}
