//! The post-build-hook's hot path.
//!
//! Nix runs the hook after every local build and, up to Nix 2.34, waits for it before
//! starting any other build; a non-zero exit aborts the user's whole command. So the hook
//! does the least it can: it reads the outputs from the .drv (Nix 2.8.0 passes an empty
//! `OUT_PATHS`, and before 2.16 only the requested outputs), appends one line to the spool
//! with one `O_APPEND` write, and returns. It never takes a lock, never panics out, and
//! prints nothing unless the record was lost.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::nix::drv;
use crate::nix::store_path::is_drv_path;
use crate::spool::{SpoolRecord, VERSION};
use crate::time::now_ms;
use crate::{paths, sys};

/// The outputs section of a .drv comes first; this much covers it for all but the
/// rarest derivations, which are then read whole.
const DRV_HEAD_BYTES: u64 = 64 * 1024;

/// What the hook was given by Nix.
#[derive(Debug, Clone, Default)]
pub struct HookInput {
    pub drv_path: Option<OsString>,
    pub out_paths: Option<OsString>,
}

impl HookInput {
    /// Reads `DRV_PATH` and `OUT_PATHS` from the environment.
    pub fn from_env() -> HookInput {
        HookInput {
            drv_path: std::env::var_os("DRV_PATH"),
            out_paths: std::env::var_os("OUT_PATHS"),
        }
    }
}

/// Records one build. Never fails: when the spool cannot be written, it says so on
/// stderr and in the error log beside the spool, and returns.
pub fn run(input: &HookInput) {
    let is_root = sys::is_root();
    let record = gather(input, now_ms());
    let Some(dir) = paths::hook_spool_dir(is_root) else {
        report_loss(None, &record, "no spool directory: HOME is not set");
        return;
    };
    if let Err(reason) = append_line(&dir, paths::SPOOL_FILE, &record.to_line(), is_root) {
        report_loss(Some(&dir), &record, &reason);
    }
}

/// Builds the spool record for one hook call.
pub fn gather(input: &HookInput, now_ms: i64) -> SpoolRecord {
    let mut notes = Vec::new();
    let drv = match &input.drv_path {
        Some(value) => value.to_string_lossy().into_owned(),
        None => {
            notes.push("DRV_PATH is not set".to_string());
            String::new()
        }
    };
    let out_paths = input
        .out_paths
        .as_ref()
        .map(|v| v.to_string_lossy().into_owned());
    let listed: Vec<&str> = out_paths
        .as_deref()
        .unwrap_or("")
        .split_ascii_whitespace()
        .collect();

    let mut outputs = Vec::new();
    if is_drv_path(&drv) {
        match read_drv_outputs(Path::new(&drv)) {
            Ok(from_drv) => outputs = from_drv,
            Err(reason) => notes.push(reason),
        }
    } else if !drv.is_empty() {
        notes.push("DRV_PATH is not a .drv path".to_string());
    }
    // Floating content-addressed outputs have no path in the .drv; OUT_PATHS has them.
    // When the .drv could not be read, OUT_PATHS is all there is. Anything else in it is
    // not an output of this build and is left out.
    let drv_read = !outputs.is_empty();
    let mut ignored = 0;
    for path in listed {
        if outputs.iter().any(|(_, known)| known == path) {
            continue;
        }
        if !looks_like_store_path(path) {
            ignored += 1;
        } else if let Some(slot) = outputs.iter_mut().find(|(_, known)| known.is_empty()) {
            slot.1 = path.to_string();
        } else if !drv_read {
            outputs.push((String::new(), path.to_string()));
        } else {
            ignored += 1;
        }
    }
    if ignored > 0 {
        notes.push(format!(
            "OUT_PATHS had {ignored} entries that are not outputs of the .drv"
        ));
    }

    SpoolRecord {
        v: VERSION,
        t: now_ms,
        drv,
        outputs,
        out_paths,
        uid: Some(sys::effective_uid()),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

/// An absolute path of printable characters: what a store path looks like, wherever the
/// store is.
fn looks_like_store_path(path: &str) -> bool {
    path.starts_with('/') && path.len() > 1 && !path.chars().any(char::is_control)
}

fn read_drv_outputs(path: &Path) -> Result<Vec<(String, String)>, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot read .drv: {e}"))?;
    let mut head = Vec::with_capacity(4096);
    (&mut file)
        .take(DRV_HEAD_BYTES)
        .read_to_end(&mut head)
        .map_err(|e| format!("cannot read .drv: {e}"))?;
    match drv::parse_outputs(&head) {
        Ok(outputs) => Ok(outputs),
        Err(_) if head.len() as u64 == DRV_HEAD_BYTES => {
            file.read_to_end(&mut head)
                .map_err(|e| format!("cannot read .drv: {e}"))?;
            drv::parse_outputs(&head).map_err(|e| format!("unreadable .drv: {e}"))
        }
        Err(e) => Err(format!("unreadable .drv: {e}")),
    }
}

/// Appends `line` to `dir/file` with a single write, creating both if needed.
fn append_line(dir: &Path, file: &str, line: &[u8], is_root: bool) -> Result<(), String> {
    let path = dir.join(file);
    let open = || {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
    };
    let mut spool = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // The system spool is read by every user; a user's own stays private.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(if is_root { 0o755 } else { 0o700 })
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            open().map_err(|e| format!("cannot open {}: {e}", path.display()))?
        }
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    // One write call: O_APPEND makes it land whole after every other hook's line. A short
    // write (file-size limit, full disk) leaves a fragment that ingest skips and counts.
    match spool.write(line) {
        Ok(n) if n == line.len() => Ok(()),
        Ok(n) => Err(format!(
            "short write to {} ({n} of {} bytes)",
            path.display(),
            line.len()
        )),
        Err(e) => Err(format!("cannot write {}: {e}", path.display())),
    }
}

/// Tells the user, and the error log if it can be written, that a build went unrecorded.
fn report_loss(dir: Option<&Path>, record: &SpoolRecord, reason: &str) {
    let mut note = record.clone();
    note.note = Some(match &record.note {
        Some(earlier) => format!("{reason}; {earlier}"),
        None => reason.to_string(),
    });
    if let Some(dir) = dir {
        let _ = append_line(dir, paths::HOOK_ERRORS_FILE, &note.to_line(), false);
    }
    // stderr may be closed or a broken pipe: that must not turn into a failure.
    let _ = writeln!(
        std::io::stderr(),
        "nix-ledger-hook: build of {} not recorded: {reason}",
        if record.drv.is_empty() {
            "(no DRV_PATH)"
        } else {
            &record.drv
        }
    );
}

/// Makes the process safe to run as a hook: a file-size limit must turn into a failed
/// write, not a SIGXFSZ that kills the hook (and with it the user's build).
pub fn harden_process() {
    sys::ignore_write_signals();
}

/// The spool the hook would write for the current process (for `doctor`).
pub fn spool_path_for_current_user() -> Option<PathBuf> {
    paths::hook_spool_dir(sys::is_root()).map(|d| d.join(paths::SPOOL_FILE))
}
