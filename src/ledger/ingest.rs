//! Ingest: moving new spool lines into the ledger.
//!
//! Each spool's ingested offset is stored in the same transaction as the records read
//! before it, so a crash (even `kill -9`) mid-ingest leaves either all or none of a batch,
//! and the next run resumes where the last commit ended. Records are also keyed by
//! (.drv, hook time), so a line read twice is still recorded once. Lines that cannot be
//! read are skipped, counted and kept in `ingest_problems`; they never stop an ingest.
//!
//! Ingest adds only what is cheap and must be read while it is fresh: the build's start and
//! end from its build log's birth and modification times (a later rebuild rewrites the
//! log). Everything else is [`super::enrich`]'s, after.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use super::model::TimingSource;
use super::record::{self, BuildRecord, BuildStatus, Recorded, Source};
use super::Ledger;
use crate::nix::build_log;
use crate::nix::store_path::is_drv_path;
use crate::spool::SpoolRecord;
use crate::time::now_ms;
use crate::{paths, Error, Result};

/// Lines are committed in batches of this many, so a huge spool neither holds one
/// enormous transaction nor pays a commit per line.
const BATCH_LINES: usize = 2_000;
/// How much of the spool is read at once.
const READ_CHUNK: usize = 4 << 20;
/// A hook line is a few hundred bytes. A run this long without a newline is damage (or
/// the zero-filled hole of a preallocated file): it is skipped as one line rather than
/// held in memory, and ingest moves past it.
const MAX_LINE: usize = 1 << 20;

/// What one ingest did, per spool and in total.
#[derive(Debug, Default, Clone, Serialize)]
pub struct IngestReport {
    pub spools: Vec<SpoolIngest>,
    pub recorded: u64,
    pub merged: u64,
    pub already_present: u64,
    pub skipped: u64,
    /// Builds enriched right after (see [`super::enrich`]), when the caller did that.
    pub enriched: usize,
}

/// What one ingest did with one spool.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SpoolIngest {
    pub path: String,
    /// `None` when the spool was read; else why not (a missing spool is not a problem).
    pub unreadable: Option<String>,
    pub lines: u64,
    pub recorded: u64,
    pub merged: u64,
    pub already_present: u64,
    pub skipped: u64,
}

/// Ingests every spool of the layout: the user's, then the system's.
pub fn ingest_all(ledger: &mut Ledger, spools: &[std::path::PathBuf]) -> Result<IngestReport> {
    let mut report = IngestReport::default();
    for spool in spools {
        for file in [spool.clone(), errors_file_beside(spool)] {
            let one = ingest_spool(ledger, &file)?;
            report.recorded += one.recorded;
            report.merged += one.merged;
            report.already_present += one.already_present;
            report.skipped += one.skipped;
            report.spools.push(one);
        }
    }
    Ok(report)
}

/// The hook writes whole records it could not put in the spool to this file beside it
/// (a full spool under a file-size limit leaves room for them there); they are ingested
/// like spool lines.
fn errors_file_beside(spool: &Path) -> std::path::PathBuf {
    spool.with_file_name(paths::HOOK_ERRORS_FILE)
}

/// Ingests the new lines of one spool. When the spool was rotated since this ledger last
/// read it, the rest of the file it was reading is found among the rotated files by its
/// `<dev>:<inode>` and read first, then every newer rotated file, then the spool. Records
/// in files rotated away before this ledger read them are lost: how many bytes, the
/// rotations log tells, and it is noted for `doctor`.
pub fn ingest_spool(ledger: &mut Ledger, path: &Path) -> Result<SpoolIngest> {
    let spool_path = path.display().to_string();
    let previous: Option<(String, i64)> = ledger
        .conn
        .query_row(
            "SELECT file_id, offset FROM spool_state WHERE spool_path = ?1",
            [&spool_path],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(|e| ledger.err(e))?;
    let current = file_id_of(path);
    let mut report = SpoolIngest::default();
    let moved = |id: &str| {
        !current
            .as_deref()
            .is_some_and(|c| crate::spool::same_file(id, c))
    };
    if let Some((old_id, old_offset)) = previous.filter(|(id, _)| moved(id)) {
        // Rotated files, newest first (.1 is the latest), with their ids.
        let rotated: Vec<(std::path::PathBuf, String)> = (1..=crate::spool::MAX_ROTATED)
            .map(|n| crate::spool::rotated_path(path, n))
            .filter_map(|p| file_id_of(&p).map(|id| (p, id)))
            .collect();
        let log = rotations(path);
        let mut to_read: Vec<&std::path::PathBuf> = Vec::new();
        match rotated
            .iter()
            .position(|(_, id)| crate::spool::same_file(&old_id, id))
        {
            // The file being read, then the newer ones, oldest first.
            Some(at) => to_read.extend(rotated[..=at].iter().rev().map(|(p, _)| p)),
            None => {
                // Gone: whatever the log says was rotated after it and is still here is
                // newer and unread; whatever is gone is lost.
                let Some(pos) = log
                    .iter()
                    .position(|r| crate::spool::same_file(&old_id, &r.file_id))
                else {
                    return merge(report, ingest_file(ledger, path, path)?);
                };
                let mut lost = log[pos].bytes.saturating_sub(old_offset.max(0) as u64);
                for later in &log[pos + 1..] {
                    match rotated.iter().find(|(_, id)| *id == later.file_id) {
                        Some((p, _)) => to_read.push(p),
                        None => lost += later.bytes,
                    }
                }
                if lost > 0 {
                    note_rotation_loss(ledger, path, &old_id, old_offset, lost)?;
                }
            }
        }
        for file in to_read {
            report = merge(report, ingest_file(ledger, path, file)?)?;
        }
    }
    merge(report, ingest_file(ledger, path, path)?)
}

fn file_id_of(path: &Path) -> Option<String> {
    std::fs::metadata(path)
        .ok()
        .map(|m| crate::spool::file_id(&m))
}

/// The rotations log of `spool`, oldest first (empty when there is none).
fn rotations(spool: &Path) -> Vec<crate::spool::Rotation> {
    std::fs::read_to_string(crate::spool::rotations_log(spool))
        .map(|log| {
            log.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn merge(mut a: SpoolIngest, b: SpoolIngest) -> Result<SpoolIngest> {
    a.path = b.path;
    a.unreadable = a.unreadable.or(b.unreadable);
    a.lines += b.lines;
    a.recorded += b.recorded;
    a.merged += b.merged;
    a.already_present += b.already_present;
    a.skipped += b.skipped;
    Ok(a)
}

/// Notes `lost` bytes of records rotated away unread, keyed by the file this ledger was
/// reading and where it stopped (so the same loss is noted once).
fn note_rotation_loss(
    ledger: &mut Ledger,
    spool: &Path,
    old_id: &str,
    offset: i64,
    lost: u64,
) -> Result<()> {
    let key = format!("{}#{old_id}", spool.display());
    let reason = format!(
        "{LOST_TO_ROTATION}: {lost} bytes of records were rotated away before this ledger read them"
    );
    let path = ledger.path().to_path_buf();
    let tx = ledger
        .write_transaction()
        .map_err(|e| Error::ledger(&path, e))?;
    note_problem(&tx, &key, offset, &reason, b"").map_err(|e| Error::ledger(&path, e))?;
    tx.commit().map_err(|e| Error::ledger(&path, e))
}

/// How `ingest_problems` names records lost to a rotation (doctor counts them).
pub const LOST_TO_ROTATION: &str = "lost to a spool rotation";

/// Ingests the new lines of the file `actual`, which is (or was, before a rotation) the
/// spool `logical`: progress and records are keyed by the logical path and the file's id.
fn ingest_file(ledger: &mut Ledger, logical: &Path, actual: &Path) -> Result<SpoolIngest> {
    let path = actual;
    let mut report = SpoolIngest {
        path: logical.display().to_string(),
        ..SpoolIngest::default()
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => {
            report.unreadable = Some(e.to_string());
            return Ok(report);
        }
    };
    let meta = match file.metadata() {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => {
            report.unreadable = Some("not a regular file".to_string());
            return Ok(report);
        }
        Err(e) => {
            report.unreadable = Some(e.to_string());
            return Ok(report);
        }
    };
    let file_id = crate::spool::file_id(&meta);
    let spool_path = logical.display().to_string();
    let spool_key = format!("{spool_path}#{file_id}");

    let previous: Option<(String, i64)> = ledger
        .conn
        .query_row(
            "SELECT file_id, offset FROM spool_state WHERE spool_path = ?1",
            [&spool_path],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(|e| ledger.err(e))?;
    // A different file (rotated) or a shorter one (truncated) starts from the top.
    let mut offset = match previous {
        Some((id, off)) if crate::spool::same_file(&id, &file_id) && off as u64 <= meta.len() => {
            off as u64
        }
        _ => 0,
    };
    file.seek(SeekFrom::Start(offset))
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;

    let ledger_file = ledger.path().to_path_buf();
    let db_err = |e| Error::ledger(&ledger_file, e);
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    // Where a run longer than MAX_LINE without a newline began, while skipping it.
    let mut oversized_from: Option<u64> = None;
    loop {
        let n = file.read(&mut chunk).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            if let Some(start) = oversized_from.take() {
                skip_oversized(ledger, &spool_path, &file_id, &spool_key, start, offset)?;
                report.skipped += 1;
            }
            break;
        }
        pending.extend_from_slice(&chunk[..n]);
        if let Some(start) = oversized_from {
            let Some(newline) = pending.iter().position(|&b| b == b'\n') else {
                offset += pending.len() as u64;
                pending.clear();
                continue;
            };
            offset += newline as u64 + 1;
            pending.drain(..=newline);
            skip_oversized(ledger, &spool_path, &file_id, &spool_key, start, offset)?;
            report.skipped += 1;
            oversized_from = None;
        }
        // Only whole lines: a line without its newline may still be being written.
        let Some(last_newline) = pending.iter().rposition(|&b| b == b'\n') else {
            if pending.len() > MAX_LINE {
                oversized_from = Some(offset);
                offset += pending.len() as u64;
                pending.clear();
            }
            continue;
        };
        let complete: Vec<u8> = pending.drain(..=last_newline).collect();
        let mut lines = Vec::new();
        let mut line_start = 0usize;
        for (i, &b) in complete.iter().enumerate() {
            if b == b'\n' {
                lines.push((offset + line_start as u64, &complete[line_start..i]));
                line_start = i + 1;
            }
        }
        for batch in lines.chunks(BATCH_LINES) {
            let tx = ledger.write_transaction().map_err(db_err)?;
            // Another nix-ledger may have ingested these lines since this one read the
            // offset: what it did is in the ledger, and counted; take up after it.
            let done_by_other = saved_offset(&tx, &spool_path, &file_id).map_err(db_err)?;
            let batch: Vec<(u64, &[u8])> = batch
                .iter()
                .copied()
                .filter(|&(line_offset, _)| done_by_other.is_none_or(|done| line_offset >= done))
                .collect();
            if batch.is_empty() {
                continue;
            }
            let mut skipped = 0u64;
            // Fragments of lost records found before a whole one on the same line.
            let mut fragments = 0u64;
            for &(line_offset, line) in &batch {
                report.lines += 1;
                match ingest_line(&tx, &spool_key, line_offset as i64, line) {
                    Ok((recorded, fragment)) => {
                        match recorded {
                            Recorded::Inserted(_) => report.recorded += 1,
                            Recorded::Merged(_) => report.merged += 1,
                            Recorded::AlreadyPresent(_) => report.already_present += 1,
                        }
                        fragments += u64::from(fragment);
                    }
                    Err(LineError::Skip(reason)) => {
                        skipped += 1;
                        note_problem(&tx, &spool_key, line_offset as i64, &reason, line)
                            .map_err(db_err)?;
                    }
                    Err(LineError::Db(e)) => return Err(db_err(e)),
                }
            }
            report.skipped += skipped + fragments;
            let end = batch
                .last()
                .map(|&(o, l)| o + l.len() as u64 + 1)
                .unwrap_or(offset);
            save_progress(
                &tx,
                &spool_path,
                &file_id,
                end,
                batch.len() as u64 - skipped,
                skipped + fragments,
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
        }
        offset += complete.len() as u64;
    }
    Ok(report)
}

/// How far this very spool file (the same `file_id`) has been ingested, as the ledger
/// says now.
fn saved_offset(
    tx: &Transaction<'_>,
    spool_path: &str,
    file_id: &str,
) -> rusqlite::Result<Option<u64>> {
    tx.prepare_cached("SELECT offset FROM spool_state WHERE spool_path = ?1 AND file_id = ?2")?
        .query_row(params![spool_path, file_id], |row| row.get::<_, i64>(0))
        .optional()
        .map(|o| o.map(|o| o.max(0) as u64))
}

/// Records where this spool has been ingested to, with the lines the batch ingested and
/// skipped, in the batch's own transaction.
fn save_progress(
    tx: &Transaction<'_>,
    spool_path: &str,
    file_id: &str,
    end: u64,
    ingested: u64,
    skipped: u64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO spool_state (spool_path, file_id, offset, lines_ingested, lines_skipped, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (spool_path) DO UPDATE SET
             lines_ingested = CASE WHEN spool_state.file_id = excluded.file_id
                 THEN spool_state.lines_ingested + excluded.lines_ingested ELSE excluded.lines_ingested END,
             lines_skipped = CASE WHEN spool_state.file_id = excluded.file_id
                 THEN spool_state.lines_skipped + excluded.lines_skipped ELSE excluded.lines_skipped END,
             file_id = excluded.file_id, offset = excluded.offset, updated_ms = excluded.updated_ms",
        params![spool_path, file_id, end as i64, ingested as i64, skipped as i64, now_ms()],
    )?;
    Ok(())
}

/// Notes a run of more than [`MAX_LINE`] bytes without a newline, from `start` to `end`,
/// as one skipped line, and moves the spool's offset past it.
fn skip_oversized(
    ledger: &mut Ledger,
    spool_path: &str,
    file_id: &str,
    spool_key: &str,
    start: u64,
    end: u64,
) -> Result<()> {
    let ledger_file = ledger.path().to_path_buf();
    let db_err = |e| Error::ledger(&ledger_file, e);
    let tx = ledger.write_transaction().map_err(db_err)?;
    let reason = format!(
        "{} bytes without a newline (damage, or a preallocated hole in the spool)",
        end - start
    );
    note_problem(&tx, spool_key, start as i64, &reason, b"").map_err(db_err)?;
    save_progress(&tx, spool_path, file_id, end, 0, 1).map_err(db_err)?;
    tx.commit().map_err(db_err)
}

enum LineError {
    Skip(String),
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for LineError {
    fn from(e: rusqlite::Error) -> Self {
        LineError::Db(e)
    }
}

/// Records one spool line; also says whether a fragment of a lost record came before
/// the record on that line (a short write), noted and to be counted as skipped.
fn ingest_line(
    tx: &Transaction<'_>,
    spool_key: &str,
    offset: i64,
    line: &[u8],
) -> Result<(Recorded, bool), LineError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (hook, fragment) =
        SpoolRecord::parse_line_and_damage(line).map_err(|e| LineError::Skip(e.to_string()))?;
    if let Some(bytes) = fragment {
        note_problem(
            tx,
            spool_key,
            offset,
            &format!("a fragment of {bytes} bytes (a record cut short by a failed write) before a whole record"),
            line,
        )?;
    }
    // The record's own notes go at its own offset, past the fragment.
    let offset = offset + fragment.unwrap_or(0) as i64;
    if !is_drv_path(&hook.drv) {
        let why = hook.note.clone().unwrap_or_default();
        return Err(LineError::Skip(format!(
            "hook was given no usable DRV_PATH ({:?}) {why}",
            hook.drv
        )));
    }

    let mut rec = BuildRecord::new(&hook.drv, Source::Hook, BuildStatus::Built, hook.t);
    rec.hook_recorded_ms = Some(hook.t);
    rec.spool = Some((spool_key.to_string(), offset));
    rec.outputs = hook.outputs.clone();

    let earlier_finish: Option<i64> = tx
        .query_row(
            "SELECT max(finished_ms) FROM builds
             WHERE drv_path = ?1 AND finished_ms < ?2 AND origin IS NULL",
            params![hook.drv, hook.t],
            |row| row.get(0),
        )
        .optional()?
        .flatten();
    if let Some(timing) = build_log::timing(&hook.drv, hook.t, earlier_finish) {
        rec.started_ms = timing.started_ms;
        rec.finished_ms = timing.finished_ms;
        rec.timing_source = Some(TimingSource::BuildLog);
    }

    let recorded = record::record_build(tx, &rec)?;
    if let Some(note) = &hook.note {
        note_problem(
            tx,
            spool_key,
            offset,
            &format!("recorded, but: {note}"),
            line,
        )?;
    }
    Ok((recorded, fragment.is_some()))
}

fn note_problem(
    tx: &Transaction<'_>,
    spool_key: &str,
    offset: i64,
    reason: &str,
    line: &[u8],
) -> rusqlite::Result<()> {
    let excerpt: String = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
    tx.execute(
        "INSERT OR IGNORE INTO ingest_problems (spool_key, offset, reason, excerpt, seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![spool_key, offset, reason, excerpt, now_ms()],
    )?;
    Ok(())
}
