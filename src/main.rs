//! `nix-ledger`: the command-line front end. Parsing and dispatch live in `cli`; all the
//! work is in the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            // One line, naming the input: the library's errors are written that way.
            eprintln!("nix-ledger: {}", one_line(&err));
            let code = err
                .downcast_ref::<nix_ledger::Error>()
                .map(nix_ledger::Error::exit_code)
                .unwrap_or(1);
            ExitCode::from(code as u8)
        }
    }
}

/// The error and its causes on one line, each said once: the library's messages already
/// include their source's text, and SQLite's errors repeat themselves ("file is not a
/// database: Error code 26: file is not a database").
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.lines().next().unwrap_or_default();
        let said = text
            .strip_prefix("Error code ")
            .and_then(|rest| rest.split_once(": "))
            .map_or(text, |(_, said)| said);
        if line.contains(said) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}
