//! `nix-ledger`: the command-line front end. Parsing and dispatch live in `cli`; all the
//! work is in the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            // One line, naming the input: the library's errors are written that way.
            eprintln!("nix-ledger: {err:#}");
            let code = err
                .downcast_ref::<nix_ledger::Error>()
                .map(nix_ledger::Error::exit_code)
                .unwrap_or(1);
            ExitCode::from(code as u8)
        }
    }
}
