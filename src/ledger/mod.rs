//! The SQLite ledger. It owns every table: opening the file, the numbered migrations,
//! and every read and write, as named methods on [`Ledger`] and functions of its
//! modules. Nothing outside this module writes SQL, except the user's own read-only
//! `nix-ledger query` ([`raw`]).
//!
//! The ledger is one file in WAL mode with a busy timeout, so a `nix-ledger` reading it
//! never blocks one that writes. Its schema version is `PRAGMA user_version`: migration
//! N (`migrations/000N_*.sql`) brings it from N-1 to N, inside one transaction.
//!
//! - [`model`]: the states stored (build status, session kind…), as enums.
//! - [`record`]: writing one build, merging the hook's and the wrapper's records of it.
//! - [`ingest`]: the hook's spool lines into builds.
//! - [`enrich`]: what the .drv and the store say of a recorded build.
//! - [`snapshots`], [`manifests`]: what `why` needs after garbage collection.
//! - [`sessions`]: the wrapper's session rows.
//! - [`fleet`]: rows pushed to and pulled from a fleet hub (`nix-ledger sync`).
//! - [`queries`]: the typed reads every feature uses; [`builders`]: per-builder numbers.
//! - [`retention`]: garbage-collection runs, their deletions, binary-cache answers, and
//!   what a rebuild or download costs; [`rebuild_costs`]: what the report's retention
//!   advice cites (costly builds no cache is known to have, rebuilds a run deleted).
//! - [`trends`]: the reads of `trends` and `report`: series, sessions over time.
//! - [`tune`]: what `tune` reads (measured builds, sessions) and the contention the
//!   wrapper records.
//! - [`raw`]: the user's read-only SQL, streamed.

pub mod builders;
pub mod enrich;
pub mod fleet;
pub mod ingest;
pub mod manifests;
pub mod model;
pub mod queries;
pub mod raw;
pub mod rebuild_costs;
pub mod record;
pub mod retention;
pub mod sessions;
pub mod snapshots;
pub mod trends;
pub mod tune;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use crate::{Error, Result};

/// The migrations in order; index + 1 is the schema version each one produces.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_manifests.sql"),
    include_str!("migrations/0003_enrichment.sql"),
    include_str!("migrations/0004_bounded_manifests.sql"),
    include_str!("migrations/0005_session_pid.sql"),
    include_str!("migrations/0006_remote_and_fleet.sql"),
    include_str!("migrations/0007_retention.sql"),
    include_str!("migrations/0008_trends.sql"),
    include_str!("migrations/0009_tune.sql"),
    include_str!("migrations/0010_sessions_by_start.sql"),
    include_str!("migrations/0011_fleet_series.sql"),
];

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// An open ledger.
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Ledger> {
        if let Some(dir) = path.parent() {
            // A user's build history is theirs: the state directory is private.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| Error::Write {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        let conn = Connection::open(path).map_err(|e| Error::ledger(path, e))?;
        let mut ledger = Ledger {
            conn,
            path: path.to_path_buf(),
        };
        ledger.configure()?;
        register_functions(&ledger.conn).map_err(|e| Error::ledger(path, e))?;
        ledger.migrate()?;
        Ok(ledger)
    }

    /// Opens an existing ledger that SQLite itself will refuse to write through.
    pub fn open_read_only(path: &Path) -> Result<Ledger> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| Error::ledger(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| Error::ledger(path, e))?;
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn configure(&mut self) -> Result<()> {
        let path = self.path.clone();
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| Error::ledger(&path, e))?;
        // Without the query planner stability guarantee, SQLite ties a plan to the
        // values bound and re-prepares a statement after every `prepare_cached` reuse
        // (rusqlite clears the bindings, which expires it): 18 µs instead of 5 µs a
        // lookup on the rebuild summary's hot path. No plan here depends on a value.
        self.conn
            .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(|e| Error::ledger(&path, e))?;
        // Every command is a short process, and the last connection to close would
        // checkpoint the WAL into the database and delete it (measured 4.5 ms after a
        // 200-build session, then an fsync to create it again on the next open). The
        // WAL stays instead and is checkpointed when it reaches SQLite's 1000 pages,
        // then cut back to 4 MiB. Only the ledger's owner keeps it: root opening a
        // user's ledger (sudo keeping HOME) would otherwise leave root-owned -wal and
        // -shm files the user cannot write.
        if owned_by_me(&path) {
            self.conn
                .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
                .map_err(|e| Error::ledger(&path, e))?;
        }
        self.conn
            .pragma_update(None, "journal_size_limit", 4i64 << 20)
            .map_err(|e| Error::ledger(&path, e))?;
        // WAL lets readers and one writer work at once; NORMAL sync is durable at every
        // checkpoint and loses at most the last transactions on power loss, never corrupts.
        self.use_wal().map_err(|e| Error::ledger(&path, e))?;
        self.conn
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| Error::ledger(&path, e))
    }

    /// Puts the ledger in WAL mode, once in its life. Switching needs the database to
    /// itself, and SQLite answers "database is locked" at once rather than wait (no busy
    /// handler), so the first commands on a new ledger, started together, take turns here
    /// within the busy timeout.
    fn use_wal(&self) -> rusqlite::Result<()> {
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            let mode: rusqlite::Result<String> =
                self.conn
                    .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0));
            match mode {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let known = MIGRATIONS.len() as i64;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| Error::ledger(&path, e))?;
        let current: i64 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| Error::ledger(&path, e))?;
        if current > known {
            return Err(Error::SchemaTooNew {
                path,
                found: current,
                known,
            });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql).map_err(|e| Error::ledger(&path, e))?;
            tx.pragma_update(None, "user_version", index as i64 + 1)
                .map_err(|e| Error::ledger(&path, e))?;
        }
        tx.commit().map_err(|e| Error::ledger(&path, e))
    }

    /// Whether this ledger can be read by this nix-ledger as it is: a SQLite database at
    /// this version's schema (a ledger opened read-only cannot be migrated).
    fn check_current(&self) -> Result<()> {
        let found: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| self.err(e))?;
        if found == Ledger::schema_version() {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "ledger {} has schema version {found}, not {}, and cannot be upgraded read-only",
                self.path.display(),
                Ledger::schema_version()
            )))
        }
    }

    /// Prepares this connection for writing many rows at once (a sync): a page cache
    /// large enough that a batch's pages are written once at commit instead of spilled
    /// to the WAL over and over while the batch is written (20,000 pulled builds: 335,000
    /// page writes and 15 s with SQLite's default 2 MB cache).
    pub fn for_bulk_writes(&self) -> Result<()> {
        self.conn
            .pragma_update(None, "cache_size", -256 * 1024)
            .and_then(|()| self.conn.pragma_update(None, "temp_store", "MEMORY"))
            .map_err(|e| self.err(e))
    }

    /// The schema version this build of nix-ledger writes.
    pub fn schema_version() -> i64 {
        MIGRATIONS.len() as i64
    }

    /// The underlying connection, for tests of other modules that check what was
    /// stored. Code outside `ledger` asks through named methods instead.
    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// As [`Ledger::conn`], for transactions in tests.
    #[cfg(test)]
    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Begins a write transaction. IMMEDIATE: it takes the write lock at once, waiting its
    /// turn behind other writers for up to the busy timeout. A deferred transaction that
    /// reads first and writes later cannot be retried when another process wrote in
    /// between ("database is locked" at once, whatever the timeout).
    pub(crate) fn write_transaction(&mut self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
    }

    /// A read transaction: the reads made while it lives see one snapshot of the ledger
    /// and take its locks once (hundreds of lookups after a build). Drop it before any
    /// write on this connection.
    pub fn read_scope(&self) -> Result<ReadScope<'_>> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        Ok(ReadScope { _tx: tx })
    }

    /// The ledger's .drv snapshots, as a source of derivations.
    pub fn snapshots(&self) -> snapshots::Snapshots<'_> {
        snapshots::Snapshots {
            conn: &self.conn,
            ledger_path: &self.path,
        }
    }

    /// Where this ledger lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wraps a rusqlite error with this ledger's path.
    pub fn err(&self, source: rusqlite::Error) -> Error {
        Error::ledger(&self.path, source)
    }
}

/// A ledger opened for a command that reads it, caught up with the spools when it can
/// be.
pub struct CaughtUp {
    pub ledger: Ledger,
    /// Why new records were not ingested (a read-only ledger, a full disk…): the
    /// command shows what the ledger holds and says so once.
    pub not_caught_up: Option<Error>,
}

/// Opens the ledger for reading: ingests what the hooks recorded since the last command
/// and enriches what is new; when the ledger cannot be written (its owner made it
/// read-only, another user's, a restored copy, a full disk), reads what it holds.
pub fn open_caught_up(layout: &crate::paths::Layout) -> Result<CaughtUp> {
    match Ledger::open(&layout.ledger) {
        Ok(mut ledger) => {
            let caught_up = ingest::ingest_all(&mut ledger, &layout.spools)
                .and_then(|_| enrich::enrich_pending(&mut ledger));
            Ok(CaughtUp {
                ledger,
                not_caught_up: caught_up.err(),
            })
        }
        Err(cannot_write) if layout.ledger.is_file() => {
            match Ledger::open_read_only(&layout.ledger).and_then(|l| l.check_current().map(|()| l))
            {
                Ok(ledger) => Ok(CaughtUp {
                    ledger,
                    not_caught_up: Some(cannot_write),
                }),
                // Not readable either (damaged, or an older schema it cannot upgrade):
                // the first error says why.
                Err(_) => Err(cannot_write),
            }
        }
        Err(e) => Err(e),
    }
}

/// See [`Ledger::read_scope`]; the transaction ends (read-only, nothing to commit) when
/// this is dropped.
pub struct ReadScope<'l> {
    _tx: rusqlite::Transaction<'l>,
}

/// SQL functions of nix-ledger's own connection, for the migrations that fill new columns
/// from old rows (a ledger restored from a CI cache, written by an older nix-ledger):
/// `nix_series_key(name)` and `nix_series_version(name)` ([`crate::nix::name::series_of`]).
/// Nothing stored depends on them: `sqlite3` and `nix-ledger query` never need them.
fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("nix_series_key", 1, flags, |ctx| {
        Ok(crate::nix::name::series_of(&ctx.get::<String>(0)?).key)
    })?;
    conn.create_scalar_function("nix_series_version", 1, flags, |ctx| {
        Ok(crate::nix::name::series_of(&ctx.get::<String>(0)?).version)
    })
}

/// Whether the file at `path` belongs to the effective user.
fn owned_by_me(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let me = crate::sys::effective_uid();
    std::fs::metadata(path).is_ok_and(|m| m.uid() == me)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_bring_a_new_ledger_to_the_latest_version_and_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let ledger = Ledger::open(&path).unwrap();
        let version: i64 = ledger
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, Ledger::schema_version());
        drop(ledger);
        // Opening again must not re-run any migration (it would fail on CREATE TABLE).
        let again = Ledger::open(&path).unwrap();
        let mode: String = again
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    /// Writes one session row into the ledger at `path`, opening it as this process.
    fn write_a_session(path: &Path) {
        let ledger = Ledger::open(path).unwrap();
        ledger
            .conn()
            .execute(
                "INSERT INTO sessions (kind, command, started_ms) VALUES ('t', '[]', 0)",
                [],
            )
            .unwrap();
    }

    #[test]
    fn the_owner_keeps_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let wal = dir.path().join("ledger.sqlite-wal");
        write_a_session(&path);
        assert!(wal.exists(), "the owner's close does not checkpoint");
    }

    #[test]
    #[cfg_attr(
        not(root_tests),
        ignore = "needs root: it opens a ledger another user owns"
    )]
    fn another_user_leaves_no_wal_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let wal = dir.path().join("ledger.sqlite-wal");
        write_a_session(&path);
        assert!(wal.exists(), "the owner's close does not checkpoint");
        // Root opening a user's ledger: its close folds the WAL back and removes it.
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        write_a_session(&path);
        assert!(
            !wal.exists(),
            "root left a WAL behind in another user's ledger"
        );
        let ledger = Ledger::open_read_only(&path).unwrap();
        let sessions: i64 = ledger
            .conn()
            .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sessions, 2);
    }

    #[test]
    fn a_ledger_from_a_newer_nix_ledger_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 999).unwrap();
        }
        let err = Ledger::open(&path).err().unwrap().to_string();
        assert!(err.contains("schema version 999"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
