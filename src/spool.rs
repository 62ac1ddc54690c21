//! The spool: an append-only file of self-describing JSON lines, one per build the hook
//! saw. The hook appends with a single `O_APPEND` write, so lines from concurrent hooks
//! never interleave; ingest reads whole lines from a remembered offset.
//!
//! The system spool is rotated by the maintenance job: `spool.jsonl` is renamed to
//! `spool.jsonl.1` (older ones shift to `.2`, …), the hook's next line starts a new file,
//! and each rotation is logged in `spool.jsonl.rotations` with the rotated file's
//! `<dev>:<inode>` and size. A ledger that had not read a spool to its end finds the
//! rest by that id among the rotated files, and knows how much it lost when the file
//! was rotated away before it got there.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A spool file's identity: `<dev>:<inode>:<birth time, ns>` (without the birth time
/// where the file system has none). The inode alone is not enough: rotation deletes the
/// oldest rotated file, and the next spool may get its inode number.
pub fn file_id(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut id = format!("{}:{}", meta.dev(), meta.ino());
    if let Some(born) = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
    {
        id.push_str(&format!(":{}", born.as_nanos()));
    }
    id
}

/// Whether a saved id names the file `current` names. Ledgers written before ids had a
/// birth time saved `<dev>:<inode>`, which still matches its file.
pub fn same_file(saved: &str, current: &str) -> bool {
    saved == current
        || (saved.matches(':').count() == 1
            && current
                .strip_prefix(saved)
                .is_some_and(|rest| rest.starts_with(':')))
}

/// The `n`th rotated file of `spool` (`spool.jsonl.1` is the latest).
pub fn rotated_path(spool: &Path, n: usize) -> PathBuf {
    let mut name = spool.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{n}"));
    spool.with_file_name(name)
}

/// The log of `spool`'s rotations.
pub fn rotations_log(spool: &Path) -> PathBuf {
    let mut name = spool.file_name().unwrap_or_default().to_os_string();
    name.push(".rotations");
    spool.with_file_name(name)
}

/// How many rotated files a spool may have; ingest looks no further.
pub const MAX_ROTATED: usize = 9;

/// One line of the rotations log: a spool file that was rotated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The rotated file's [`file_id`], as the ledger's `spool_state` records it.
    pub file_id: String,
    /// Its size when rotated: every byte a ledger had not read by then is at risk once
    /// the file is rotated out of the kept ones.
    pub bytes: u64,
    pub rotated_ms: i64,
}

/// The spool line format version this build writes and reads.
pub const VERSION: u32 = 1;

/// Why a spool line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpoolLineError {
    #[error("not a spool record: {0}")]
    NotARecord(serde_json::Error),
    #[error("spool line format version {found} is newer than this nix-ledger knows ({VERSION})")]
    TooNew { found: u32 },
}

/// One line of the spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolRecord {
    /// Format version.
    pub v: u32,
    /// When the hook ran, unix milliseconds.
    pub t: i64,
    /// `DRV_PATH` as Nix gave it (lossily decoded if it was not UTF-8).
    pub drv: String,
    /// Every output as (name, path): from the .drv, completed by `OUT_PATHS`.
    #[serde(default)]
    pub outputs: Vec<(String, String)>,
    /// `OUT_PATHS` exactly as Nix gave it (empty on Nix 2.8.0), for diagnosis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_paths: Option<String>,
    /// The effective uid the hook ran as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// What went wrong while the hook gathered this record, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl SpoolRecord {
    /// The record as one spool line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail; an empty line would be
        // skipped and counted by ingest, never misread.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Parses one line (without its newline). A line whose start was damaged (a short
    /// write under a file-size limit leaves a fragment that the next hook's line is
    /// appended to) is recovered from its last complete record.
    pub fn parse_line(line: &[u8]) -> Result<SpoolRecord, SpoolLineError> {
        Self::parse_line_and_damage(line).map(|(record, _)| record)
    }

    /// [`SpoolRecord::parse_line`], also saying how many bytes of a damaged fragment
    /// came before the record, if any (they are a lost record, to be counted).
    pub fn parse_line_and_damage(
        line: &[u8],
    ) -> Result<(SpoolRecord, Option<usize>), SpoolLineError> {
        match serde_json::from_slice::<SpoolRecord>(line) {
            Ok(record) => check_version(record).map(|r| (r, None)),
            Err(first_error) => {
                let marker = b"{\"v\":";
                let recovered = line
                    .windows(marker.len())
                    .rposition(|w| w == marker)
                    .filter(|&at| at > 0)
                    .and_then(|at| {
                        serde_json::from_slice::<SpoolRecord>(&line[at..])
                            .ok()
                            .map(|r| (r, at))
                    });
                match recovered {
                    Some((record, at)) => check_version(record).map(|r| (r, Some(at))),
                    None => Err(SpoolLineError::NotARecord(first_error)),
                }
            }
        }
    }
}

fn check_version(record: SpoolRecord) -> Result<SpoolRecord, SpoolLineError> {
    if record.v > VERSION {
        return Err(SpoolLineError::TooNew { found: record.v });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_ids_tell_a_reused_inode_from_its_old_file() {
        assert!(same_file("1:2:30", "1:2:30"));
        assert!(
            !same_file("1:2:30", "1:2:31"),
            "same inode, born later: another file"
        );
        assert!(same_file("1:2", "1:2:30"), "an id saved before birth times");
        assert!(!same_file("1:2", "1:20:30"));
        assert!(!same_file("1:2:30", "1:2"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "x").unwrap();
        let id = file_id(&std::fs::metadata(&f).unwrap());
        assert!(id.split(':').count() >= 2, "{id}");
        assert_eq!(rotated_path(&f, 2), dir.path().join("s.2"));
        assert_eq!(rotations_log(&f), dir.path().join("s.rotations"));
    }

    use super::*;

    fn sample() -> SpoolRecord {
        SpoolRecord {
            v: VERSION,
            t: 1_700_000_000_123,
            drv: "/nix/store/jzlslynp667iba7mzkwkligqhmi9xdmh-t-a.drv".into(),
            outputs: vec![(
                "out".into(),
                "/nix/store/c35c2y611x7n8b6fk71av6j614nzch6c-t-a".into(),
            )],
            out_paths: Some(String::new()),
            uid: Some(0),
            note: None,
        }
    }

    #[test]
    fn a_line_round_trips() {
        let line = sample().to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        let parsed = SpoolRecord::parse_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(parsed, sample());
    }

    #[test]
    fn a_fragment_left_by_a_short_write_does_not_hide_the_next_record() {
        let whole = sample().to_line();
        let mut damaged = whole[..17].to_vec();
        damaged.extend_from_slice(&whole[..whole.len() - 1]);
        assert_eq!(SpoolRecord::parse_line(&damaged).unwrap(), sample());
        assert_eq!(
            SpoolRecord::parse_line_and_damage(&damaged).unwrap(),
            (sample(), Some(17))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for line in [
            &b""[..],
            b"{",
            b"\xff\xfe",
            b"{\"v\":1}",
            b"[1,2]",
            b"{\"v\":",
        ] {
            assert!(SpoolRecord::parse_line(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn a_newer_format_is_reported_as_such() {
        let mut record = sample();
        record.v = VERSION + 1;
        let line = record.to_line();
        let err = SpoolRecord::parse_line(&line[..line.len() - 1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("newer"), "{err}");
    }
}
