//! Read-only access to the Nix store database (`/nix/var/nix/db/db.sqlite`), for output
//! sizes and origins without paying a `nix path-info` process (~15 ms) per path.
//!
//! Root (and the store's owner) open it read-only with a busy timeout, which works while
//! Nix writes. Other users cannot take SQLite's shared-memory lock, so they open it
//! `immutable=1`, which skips the WAL: the newest registrations may be missing there, and
//! a missing path is simply not enriched.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// What the store knows of one valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: String,
    pub nar_size: Option<i64>,
    pub registered_ms: Option<i64>,
    /// `ultimate` in Nix's terms: built on this machine, not substituted.
    pub locally_built: bool,
    pub deriver: Option<String>,
}

/// An open, read-only store database.
pub struct StoreDb {
    conn: Connection,
}

impl StoreDb {
    /// The database of this machine's store, if it can be read at all.
    pub fn open_default() -> Option<StoreDb> {
        let state = std::env::var_os("NIX_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/nix/var/nix"));
        StoreDb::open(&state.join("db/db.sqlite"))
    }

    /// Opens the database at `path`, read-only.
    pub fn open(path: &std::path::Path) -> Option<StoreDb> {
        if !path.is_file() {
            return None;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let plain = format!("file:{}?mode=ro", path.display());
        let immutable = format!("file:{}?mode=ro&immutable=1", path.display());
        for uri in [plain, immutable] {
            if let Ok(conn) = Connection::open_with_flags(&uri, flags) {
                let _ = conn.busy_timeout(Duration::from_secs(5));
                // As in the ledger: cached statements are not re-prepared on every use.
                let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true);
                // Opening is lazy: only a query shows whether the locks can be taken.
                if conn
                    .query_row("SELECT count(*) FROM ValidPaths WHERE id = 0", [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .is_ok()
                {
                    return Some(StoreDb { conn });
                }
            }
        }
        None
    }

    /// What the store knows of each of `paths` that is valid.
    pub fn path_infos(&self, paths: &[&str]) -> Vec<PathInfo> {
        let Ok(mut stmt) = self.conn.prepare_cached(
            "SELECT path, narSize, registrationTime, ultimate, deriver FROM ValidPaths WHERE path = ?1",
        ) else {
            return Vec::new();
        };
        paths
            .iter()
            .filter_map(|path| {
                stmt.query_row([path], |row| {
                    Ok(PathInfo {
                        path: row.get(0)?,
                        nar_size: row.get(1)?,
                        registered_ms: row.get::<_, Option<i64>>(2)?.map(|s| s * 1000),
                        locally_built: row.get::<_, Option<i64>>(3)?.unwrap_or(0) != 0,
                        deriver: row.get(4)?,
                    })
                })
                .optional()
                .ok()
                .flatten()
            })
            .collect()
    }

    /// Locally built output paths registered at or after `since_ms`, with their derivers:
    /// what the hook should have recorded (for `doctor`).
    pub fn locally_built_since(&self, since_ms: i64) -> Vec<PathInfo> {
        let Ok(mut stmt) = self.conn.prepare(
            "SELECT path, narSize, registrationTime, ultimate, deriver FROM ValidPaths
             WHERE ultimate = 1 AND deriver IS NOT NULL AND registrationTime >= ?1",
        ) else {
            return Vec::new();
        };
        let rows = stmt.query_map([since_ms / 1000], |row| {
            Ok(PathInfo {
                path: row.get(0)?,
                nar_size: row.get(1)?,
                registered_ms: row.get::<_, Option<i64>>(2)?.map(|s| s * 1000),
                locally_built: true,
                deriver: row.get(4)?,
            })
        });
        match rows {
            Ok(rows) => rows.filter_map(|r| r.ok()).collect(),
            Err(_) => Vec::new(),
        }
    }
}
