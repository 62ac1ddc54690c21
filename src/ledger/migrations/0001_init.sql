-- Migration 0001: the foundation. Never edit a landed migration; add the next number.
-- Times are unix milliseconds (UTC). The schema is documented in docs/schema.md.

CREATE TABLE derivations (
    drv_path      TEXT PRIMARY KEY,      -- /nix/store/<hash>-<name>.drv
    name          TEXT NOT NULL,         -- env "name" of the .drv, else from the path
    system        TEXT,                  -- NULL when the .drv was already gone at ingest
    first_seen_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX derivations_by_name ON derivations(name);

-- One run of `nix-ledger build/switch` (the wrapper), with the settings in effect.
CREATE TABLE sessions (
    id                INTEGER PRIMARY KEY,
    kind              TEXT NOT NULL,     -- 'build', 'switch', 'boot', 'test', 'build-system'
    command           TEXT NOT NULL,     -- JSON array: the nix command line as run
    cwd               TEXT,
    started_ms        INTEGER NOT NULL,
    finished_ms       INTEGER,
    status            TEXT NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    exit_code         INTEGER,
    nix_version       TEXT,
    max_jobs          INTEGER,
    cores             INTEGER,
    host_cores        INTEGER,
    host_memory_bytes INTEGER,
    hostname          TEXT,
    built_count       INTEGER,
    substituted_count INTEGER,
    failed_count      INTEGER,
    downloaded_bytes  INTEGER
);

-- One realisation of one derivation: built here, failed, or substituted.
-- The hook's record and the wrapper's record of the same build are one row.
CREATE TABLE builds (
    id               INTEGER PRIMARY KEY,
    drv_path         TEXT NOT NULL REFERENCES derivations(drv_path),
    session_id       INTEGER REFERENCES sessions(id),
    source           TEXT NOT NULL CHECK (source IN ('hook', 'wrapper')),
    status           TEXT NOT NULL CHECK (status IN ('built', 'failed', 'substituted')),
    started_ms       INTEGER,
    finished_ms      INTEGER NOT NULL,
    duration_ms      INTEGER,
    timing_source    TEXT,               -- 'wrapper', 'build-log' or NULL (unknown)
    machine          TEXT,               -- remote builder URI; NULL or '' for this machine
    peak_rss_bytes   INTEGER,
    cpu_user_ms      INTEGER,
    cpu_system_ms    INTEGER,
    log_lines        INTEGER,
    log_tail         TEXT,
    hook_recorded_ms INTEGER,            -- when the post-build-hook ran; NULL if it did not
    spool_key        TEXT,               -- which spool line this came from, if any
    spool_offset     INTEGER,
    UNIQUE (spool_key, spool_offset)
);
CREATE INDEX builds_by_drv ON builds(drv_path, finished_ms);
CREATE INDEX builds_by_finished ON builds(finished_ms);
CREATE INDEX builds_by_session ON builds(session_id);

CREATE TABLE build_outputs (
    build_id    INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    output_name TEXT NOT NULL,
    path        TEXT NOT NULL,
    PRIMARY KEY (build_id, output_name)
) WITHOUT ROWID;
CREATE INDEX build_outputs_by_path ON build_outputs(path);

-- What the ledger knows of a store path, for retention: size, origin, use.
CREATE TABLE store_paths (
    path          TEXT PRIMARY KEY,
    drv_path      TEXT,                  -- the deriver, if known
    nar_size      INTEGER,
    registered_ms INTEGER,
    locally_built INTEGER,               -- 1: Nix built it here (ValidPaths.ultimate)
    last_used_ms  INTEGER,
    updated_ms    INTEGER NOT NULL
) WITHOUT ROWID;

-- How far each spool has been ingested. file_id changes when a spool is replaced.
CREATE TABLE spool_state (
    spool_path     TEXT PRIMARY KEY,
    file_id        TEXT NOT NULL,        -- '<dev>:<inode>'
    offset         INTEGER NOT NULL,
    lines_ingested INTEGER NOT NULL DEFAULT 0,
    lines_skipped  INTEGER NOT NULL DEFAULT 0,
    updated_ms     INTEGER NOT NULL
) WITHOUT ROWID;

-- Spool lines that could not be ingested, kept so `doctor` can say why.
CREATE TABLE ingest_problems (
    id         INTEGER PRIMARY KEY,
    spool_key  TEXT NOT NULL,
    offset     INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    excerpt    TEXT NOT NULL,
    seen_ms    INTEGER NOT NULL,
    UNIQUE (spool_key, offset)
);
