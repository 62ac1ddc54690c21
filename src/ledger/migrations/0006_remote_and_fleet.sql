-- Migration 0006: remote builds timed right, and the fleet hub (`nix-ledger sync`).
-- Never edit a landed migration; add the next number. Documented in docs/schema.md.

-- Remote builds: the time spent moving paths to and from the builder, and opening the
-- connection to it, kept apart from the build's own time (duration_ms).
ALTER TABLE builds ADD COLUMN upload_ms INTEGER;
ALTER TABLE builds ADD COLUMN download_ms INTEGER;
ALTER TABLE builds ADD COLUMN connect_ms INTEGER;
CREATE INDEX builds_by_machine ON builds(machine) WHERE machine IS NOT NULL AND machine != '';

-- This ledger's identity in a fleet: random, made once, so that two ledgers that share
-- a machine name (CI runners) never take each other's rows for their own.
CREATE TABLE ledger_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO ledger_meta (key, value) VALUES ('ledger_id', lower(hex(randomblob(16))));

-- Rows pulled from the hub: `origin` is the ledger that recorded them (NULL: this one),
-- `origin_id` their id there, `origin_machine` that ledger's machine name.
ALTER TABLE sessions ADD COLUMN origin TEXT;
ALTER TABLE sessions ADD COLUMN origin_id INTEGER;
ALTER TABLE sessions ADD COLUMN origin_machine TEXT;
CREATE UNIQUE INDEX sessions_by_origin ON sessions(origin, origin_id) WHERE origin IS NOT NULL;
ALTER TABLE builds ADD COLUMN origin TEXT;
ALTER TABLE builds ADD COLUMN origin_id INTEGER;
ALTER TABLE builds ADD COLUMN origin_machine TEXT;
CREATE UNIQUE INDEX builds_by_origin ON builds(origin, origin_id) WHERE origin IS NOT NULL;

-- What the hub has of this ledger's own rows: `rev` counts the changes of a row (a
-- trigger bumps it), `pushed_rev` is the rev the hub has (NULL: never pushed). A row is
-- pushed again when it changed after its push (a session closed, a build merged).
ALTER TABLE sessions ADD COLUMN rev INTEGER NOT NULL DEFAULT 1;
ALTER TABLE sessions ADD COLUMN pushed_rev INTEGER;
ALTER TABLE builds ADD COLUMN rev INTEGER NOT NULL DEFAULT 1;
ALTER TABLE builds ADD COLUMN pushed_rev INTEGER;
CREATE INDEX sessions_to_push ON sessions(id)
    WHERE origin IS NULL AND pushed_rev IS NOT rev;
CREATE INDEX builds_to_push ON builds(id)
    WHERE origin IS NULL AND pushed_rev IS NOT rev;

CREATE TRIGGER sessions_changed AFTER UPDATE OF
    kind, command, cwd, started_ms, finished_ms, status, exit_code, nix_version, max_jobs,
    cores, host_cores, host_memory_bytes, hostname, built_count, substituted_count,
    failed_count, downloaded_bytes
ON sessions WHEN NEW.origin IS NULL
BEGIN
    UPDATE sessions SET rev = OLD.rev + 1 WHERE id = NEW.id;
END;

CREATE TRIGGER builds_changed AFTER UPDATE OF
    drv_path, session_id, source, status, started_ms, finished_ms, duration_ms,
    timing_source, machine, peak_rss_bytes, cpu_user_ms, cpu_system_ms, log_lines,
    log_tail, hook_recorded_ms, enriched_ms, upload_ms, download_ms, connect_ms
ON builds WHEN NEW.origin IS NULL
BEGIN
    UPDATE builds SET rev = OLD.rev + 1 WHERE id = NEW.id;
END;

-- A build's outputs can be added after its row (the hook's record merged in).
CREATE TRIGGER build_outputs_added AFTER INSERT ON build_outputs
BEGIN
    UPDATE builds SET rev = rev + 1 WHERE id = NEW.build_id AND origin IS NULL;
END;

-- Per hub (its own random id): how far its rows were pulled, and, with --with-why, how
-- far this ledger's .drv snapshots and manifests were pushed and the hub's pulled.
CREATE TABLE sync_state (
    hub               TEXT PRIMARY KEY,
    pulled_sessions   INTEGER NOT NULL DEFAULT 0,   -- the hub's seq watermarks
    pulled_builds     INTEGER NOT NULL DEFAULT 0,
    pulled_snapshots  INTEGER NOT NULL DEFAULT 0,
    pulled_manifests  INTEGER NOT NULL DEFAULT 0,
    pushed_why_ms     INTEGER NOT NULL DEFAULT 0,   -- stored_ms of snapshots/manifests pushed
    last_sync_ms      INTEGER
) WITHOUT ROWID;
