//! Read-only access to the Nix store database (`/nix/var/nix/db/db.sqlite`), for output
//! sizes and origins without paying a `nix path-info` process (~15 ms) per path.
//!
//! Root (and the store's owner) open it read-only with a busy timeout, which works while
//! Nix writes. Other users cannot take SQLite's shared-memory lock, so they open it
//! `immutable=1`, which skips the WAL: the newest registrations may be missing there.
//!
//! Every error is returned: enrichment may shrug one off, but whatever decides on the
//! store's contents (what to delete) must not mistake a failed read for an empty store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::{Error, Result};

/// What the store knows of one valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: String,
    pub nar_size: Option<i64>,
    pub registered_ms: Option<i64>,
    /// Built on this machine (`ultimate`), as opposed to substituted or copied in.
    pub locally_built: bool,
    pub deriver: Option<String>,
}

/// An open, read-only store database.
pub struct StoreDb {
    conn: Connection,
    path: PathBuf,
}

/// The state directory of the store: `NIX_STATE_DIR`, else Nix's default.
pub fn state_dir() -> PathBuf {
    crate::nix::dirs::state_dir()
}

impl StoreDb {
    /// The database of the store this machine's Nix uses.
    pub fn open_default() -> Result<StoreDb> {
        StoreDb::open(&crate::nix::dirs::store_db())
    }

    /// Opens the database at `path` read-only: with the WAL when this user may lock it,
    /// else as an immutable file.
    pub fn open(path: &Path) -> Result<StoreDb> {
        let err = |source| Error::Store {
            path: path.to_path_buf(),
            source,
        };
        if let Err(e) = std::fs::metadata(path) {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source: e,
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let plain = format!("file:{}?mode=ro", path.display());
        let immutable = format!("file:{}?mode=ro&immutable=1", path.display());
        let mut last = None;
        for uri in [plain, immutable] {
            let attempt = Connection::open_with_flags(&uri, flags).and_then(|conn| {
                conn.busy_timeout(Duration::from_secs(5))?;
                // Whole-table reads (gc's graph) go through the page cache by mmap
                // instead of one read() per page: a third less time for 20,000 paths.
                conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
                conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
                conn.query_row("SELECT count(*) FROM ValidPaths WHERE id = 0", [], |r| {
                    r.get::<_, i64>(0)
                })?;
                Ok(conn)
            });
            match attempt {
                Ok(conn) => {
                    return Ok(StoreDb {
                        conn,
                        path: path.to_path_buf(),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(err(last.unwrap_or(rusqlite::Error::InvalidQuery)))
    }

    /// The connection, for the bulk reads of [`super::graph`].
    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(super) fn err(&self, source: rusqlite::Error) -> Error {
        Error::Store {
            path: self.path.clone(),
            source,
        }
    }

    /// The valid paths among `paths`, with what the store knows of each; paths that are
    /// not valid are left out.
    pub fn path_infos(&self, paths: &[&str]) -> Result<Vec<PathInfo>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT path, narSize, registrationTime, ultimate, deriver FROM ValidPaths WHERE path = ?1",
            )
            .map_err(|e| self.err(e))?;
        let mut found = Vec::with_capacity(paths.len());
        for path in paths {
            if let Some(info) = stmt
                .query_row([path], path_info)
                .optional()
                .map_err(|e| self.err(e))?
            {
                found.push(info);
            }
        }
        Ok(found)
    }

    /// Paths built on this machine (with a known deriver) registered since `since_ms`.
    pub fn locally_built_since(&self, since_ms: i64) -> Result<Vec<PathInfo>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT path, narSize, registrationTime, ultimate, deriver FROM ValidPaths
                 WHERE ultimate = 1 AND deriver IS NOT NULL AND registrationTime >= ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([since_ms / 1000], path_info)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }
}

fn path_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<PathInfo> {
    Ok(PathInfo {
        path: row.get(0)?,
        nar_size: row.get(1)?,
        registered_ms: row.get::<_, Option<i64>>(2)?.map(|s| s * 1000),
        locally_built: row.get::<_, Option<i64>>(3)?.unwrap_or(0) != 0,
        deriver: row.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store database with Nix's table and two paths.
    fn fake_store(dir: &Path) -> PathBuf {
        let path = dir.join("db.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE ValidPaths (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL,
                 hash TEXT NOT NULL, registrationTime INTEGER NOT NULL, deriver TEXT,
                 narSize INTEGER, ultimate INTEGER, sigs TEXT, ca TEXT);
             INSERT INTO ValidPaths VALUES (1, '/nix/store/a-x', 'h', 100, '/nix/store/d-x.drv', 5, 1, NULL, NULL);
             INSERT INTO ValidPaths VALUES (2, '/nix/store/b-y', 'h', 50, NULL, 7, NULL, NULL, NULL);",
        )
        .unwrap();
        path
    }

    #[test]
    fn path_infos_answer_for_valid_paths_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreDb::open(&fake_store(dir.path())).unwrap();
        let infos = store
            .path_infos(&["/nix/store/a-x", "/nix/store/none"])
            .unwrap();
        assert_eq!(
            infos,
            [PathInfo {
                path: "/nix/store/a-x".into(),
                nar_size: Some(5),
                registered_ms: Some(100_000),
                locally_built: true,
                deriver: Some("/nix/store/d-x.drv".into()),
            }]
        );
        let local = store.locally_built_since(60_000).unwrap();
        assert_eq!(local.len(), 1);
    }

    #[test]
    fn a_missing_or_foreign_database_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sqlite");
        let err = StoreDb::open(&missing).err().unwrap().to_string();
        assert!(err.contains("none.sqlite"), "{err}");
        let other = dir.path().join("other.sqlite");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let err = StoreDb::open(&other).err().unwrap().to_string();
        assert!(err.contains("other.sqlite"), "{err}");
    }
}
