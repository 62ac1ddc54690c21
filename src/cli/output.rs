//! Printing: JSON and text to standard output (a closed pipe is not an error), and exit
//! statuses.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

pub(super) fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    // Straight to stdout: `store --paths` prints 20,000 paths, no need to hold them twice.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        // `nix-ledger history --json | head` closes the pipe early; that is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub(super) fn print_text(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // `nix-ledger history | head` closes the pipe early; that is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A process exit status as `ExitCode` (statuses above 255 cannot happen on Unix).
pub(super) fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
