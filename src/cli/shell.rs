//! The command line as a shell meets it: completions for `nix-ledger` and its alias
//! `nb`, the man pages, and `nb build --help` (nb's own help, then Nix's).

use std::process::ExitCode;

use anyhow::Result;

use super::output::{exit_code, print_text};
use super::Cli;

/// Whether `nb build`'s arguments ask for help (before a `--`, after which everything is
/// Nix's).
pub(super) fn asks_for_help(args: &[std::ffi::OsString]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--help" || a == "-h")
}

/// `nb build --help`: nb's own help for the command first, then Nix's manual for
/// `nix build`, whose options all pass through.
pub(super) fn build_help() -> Result<ExitCode> {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    // Building fills in the subcommand's usage with the full command name.
    cli.build();
    if let Some(build) = cli.find_subcommand_mut("build") {
        print_text(&format!(
            "{}\nThe rest is `nix build`'s: every option below passes through.\n\n",
            build.render_long_help()
        ))?;
    }
    let status = nix_ledger::nix::command::NixCommand::nix()
        .args(["build", "--help"])
        .to_command()
        .status()
        .map_err(|source| nix_ledger::Error::Spawn {
            program: "nix".into(),
            source,
        })?;
    Ok(exit_code(status.code().unwrap_or(1)))
}

/// The names completions are made for: the program, and the alias every installation
/// sets up.
const COMMAND_NAMES: [&str; 2] = ["nix-ledger", "nb"];

/// `nix-ledger completions SHELL`: the script for both names (or one), generated from
/// the clap definitions.
pub(super) fn completions(shell: clap_complete::Shell, name: Option<&str>) -> Result<ExitCode> {
    use clap::CommandFactory;
    let names: Vec<&str> = match name {
        Some(name) => vec![name],
        None => COMMAND_NAMES.to_vec(),
    };
    let mut script = Vec::new();
    if shell == clap_complete::Shell::Bash {
        // clap_complete's bash script for a name with a dash (`nix-ledger`) spells its
        // subcommands two ways and completes none of their options. Its function works
        // for whatever command it is registered for (it matches bash's `$1`), so the one
        // made for `nb` serves both names.
        clap_complete::generate(shell, &mut Cli::command(), "nb", &mut script);
        let text: String = String::from_utf8_lossy(&script)
            .lines()
            .map(|line| match line.strip_suffix(" nb") {
                Some(head) if line.trim_start().starts_with("complete -F _nb") => {
                    format!("{head} {}\n", names.join(" "))
                }
                _ => format!("{line}\n"),
            })
            .collect();
        print_text(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    for name in names {
        clap_complete::generate(shell, &mut Cli::command(), name, &mut script);
    }
    print_text(&String::from_utf8_lossy(&script))?;
    Ok(ExitCode::SUCCESS)
}

/// `nix-ledger man`: the page of the command (stdout), or with a directory, a page per
/// command written there (`nix-ledger.1`, `nix-ledger-build.1`, …).
pub(super) fn man(dir: Option<&std::path::Path>) -> Result<ExitCode> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cli).render(&mut page)?;
        print_text(&String::from_utf8_lossy(&page))?;
        return Ok(ExitCode::SUCCESS);
    };
    clap_mangen::generate_to(cli, dir).map_err(|source| nix_ledger::Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(ExitCode::SUCCESS)
}
