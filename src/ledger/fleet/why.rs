//! `sync --with-why`: this ledger's .drv snapshots and manifests for the hub, and the
//! hub's stored here, once per store path (immutable, so one already here is kept).

use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use super::Stream;
use crate::ledger::Ledger;
use crate::Result;

/// A .drv snapshot or a manifest (its entries as a JSON array), for `--with-why`.
#[derive(Debug, Clone)]
pub enum WhyRow {
    Snapshot {
        drv_path: String,
        aterm: Vec<u8>,
        stored_ms: i64,
    },
    Manifest {
        store_path: String,
        kind: String,
        normalised: Option<String>,
        numbers: [i64; 4],
        digest: Vec<u8>,
        files: Value,
    },
}

/// The numbers of a manifest, in [`WhyRow::Manifest`]'s order.
pub const MANIFEST_NUMBERS: [&str; 4] = ["entries", "total_bytes", "hash_ms", "stored_ms"];

impl Ledger {
    /// How far this ledger's snapshots and manifests were pushed to `hub` (stored_ms).
    pub fn why_pushed_ms(&self, hub: &str) -> Result<i64> {
        self.conn
            .query_row(
                "SELECT pushed_why_ms FROM sync_state WHERE hub = ?1",
                [hub],
                |r| r.get(0),
            )
            .optional()
            .map(|v| v.unwrap_or(0))
            .map_err(|e| self.err(e))
    }

    /// Snapshots (or, with `manifests`, manifests) stored at or after `since_ms`, keyed
    /// by path above `after`, up to `limit`, in path order.
    pub fn why_to_push(
        &self,
        manifests: bool,
        since_ms: i64,
        after: &str,
        limit: usize,
    ) -> Result<Vec<WhyRow>> {
        let err = |e| self.err(e);
        let args = params![since_ms, after, limit as i64];
        if !manifests {
            return self
                .conn
                .prepare_cached(
                    "SELECT drv_path, aterm, stored_ms FROM drv_snapshots
                     WHERE stored_ms >= ?1 AND drv_path > ?2 ORDER BY drv_path LIMIT ?3",
                )
                .and_then(|mut s| {
                    s.query_map(args, |r| {
                        Ok(WhyRow::Snapshot {
                            drv_path: r.get(0)?,
                            aterm: r.get(1)?,
                            stored_ms: r.get(2)?,
                        })
                    })?
                    .collect()
                })
                .map_err(err);
        }
        self.conn
            .prepare_cached(
                "SELECT m.store_path, m.kind, m.normalised, m.entries, m.total_bytes, m.hash_ms,
                        m.stored_ms, m.digest,
                        (SELECT json_group_array(json_array(rel_path, type, size, executable,
                                 hex(blake3), target))
                         FROM manifest_entries e WHERE e.store_path = m.store_path)
                 FROM manifests m WHERE m.stored_ms >= ?1 AND m.store_path > ?2
                 ORDER BY m.store_path LIMIT ?3",
            )
            .and_then(|mut s| {
                s.query_map(args, |r| {
                    let files: String = r.get(8)?;
                    Ok(WhyRow::Manifest {
                        store_path: r.get(0)?,
                        kind: r.get(1)?,
                        normalised: r.get(2)?,
                        numbers: [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?],
                        digest: r.get(7)?,
                        files: serde_json::from_str(&files).unwrap_or(Value::Array(Vec::new())),
                    })
                })?
                .collect()
            })
            .map_err(err)
    }

    /// Records that snapshots and manifests stored before `ms` are on `hub`.
    pub fn set_why_pushed_ms(&mut self, hub: &str, ms: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE sync_state SET pushed_why_ms = max(pushed_why_ms, ?2) WHERE hub = ?1",
                params![hub, ms],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Stores snapshots or manifests pulled from `hub` (kept as they are when present:
    /// store paths are immutable) and the watermark of their stream, together.
    pub fn store_pulled_why(
        &mut self,
        hub: &str,
        stream: Stream,
        rows: &[WhyRow],
        seq: i64,
    ) -> Result<()> {
        self.in_pull(hub, stream, seq, |tx| {
            for row in rows {
                match row {
                    WhyRow::Snapshot { drv_path, aterm, stored_ms } => {
                        tx.prepare_cached(
                            "INSERT OR IGNORE INTO drv_snapshots (drv_path, aterm, stored_ms) VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![drv_path, aterm, stored_ms])?;
                    }
                    WhyRow::Manifest { store_path, kind, normalised, numbers, digest, files } => {
                        let inserted = tx
                            .prepare_cached(
                                "INSERT OR IGNORE INTO manifests (store_path, kind, normalised, entries,
                                     total_bytes, hash_ms, stored_ms, digest)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                            )?
                            .execute(params![
                                store_path, kind, normalised, numbers[0], numbers[1], numbers[2],
                                numbers[3], digest
                            ])?;
                        if inserted == 0 {
                            continue;
                        }
                        let mut entry = tx.prepare_cached(
                            "INSERT OR IGNORE INTO manifest_entries (store_path, rel_path, type, size,
                                 executable, blake3, target)
                             VALUES (?1, ?2, ?3, ?4, ?5, unhex(?6), ?7)",
                        )?;
                        for f in files.as_array().into_iter().flatten() {
                            let field = |i: usize| f.get(i).cloned().unwrap_or(Value::Null);
                            let text = |i: usize| field(i).as_str().map(str::to_string);
                            entry.execute(params![
                                store_path,
                                text(0),
                                text(1),
                                field(2).as_i64(),
                                field(3).as_i64(),
                                text(4).filter(|h| !h.is_empty()),
                                text(5)
                            ])?;
                        }
                    }
                }
            }
            Ok(())
        })
    }
}
