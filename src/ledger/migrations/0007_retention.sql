-- Migration 0007: retention. The garbage collections nix-ledger ran (what went, what it
-- freed, what getting it back would cost), written batch by batch as they happen so that
-- a killed run still says which deletions happened, and what the binary caches said they
-- hold. Self-contained: it only adds tables. Never edit a landed migration; add the next.

CREATE TABLE gc_runs (
    id                  INTEGER PRIMARY KEY,
    started_ms          INTEGER NOT NULL,
    finished_ms         INTEGER,
    status              TEXT NOT NULL DEFAULT 'running'
                        CHECK (status IN ('running', 'finished', 'interrupted', 'failed')),
    trigger             TEXT NOT NULL,      -- 'command' (nix-ledger gc) or 'maintenance'
    policy              TEXT NOT NULL,      -- JSON: the policy as given
    store_dir           TEXT NOT NULL,
    pid                 INTEGER,            -- the nix-ledger running it (to tell a dead run)
    planned_paths       INTEGER NOT NULL,
    planned_bytes       INTEGER NOT NULL,
    deleted_paths       INTEGER NOT NULL DEFAULT 0,
    freed_bytes         INTEGER NOT NULL DEFAULT 0,
    cost_to_restore_ms  INTEGER NOT NULL DEFAULT 0,
    unknown_cost_builds INTEGER NOT NULL DEFAULT 0,
    refused_paths       INTEGER NOT NULL DEFAULT 0,
    generations_removed INTEGER NOT NULL DEFAULT 0,
    error               TEXT
);
CREATE INDEX gc_runs_by_start ON gc_runs(started_ms);

-- Every path a run planned to delete, and what became of it. A row is written
-- 'pending' before its batch's `nix-store --delete` starts and settled after it ends.
CREATE TABLE gc_deletions (
    run_id       INTEGER NOT NULL REFERENCES gc_runs(id) ON DELETE CASCADE,
    path         TEXT NOT NULL,
    batch        INTEGER NOT NULL,
    unit         INTEGER NOT NULL,     -- the paths of one build share a unit number
    nar_size     INTEGER NOT NULL,
    unit_cost_ms INTEGER,              -- cost to get the whole unit back; NULL: unknown
    cost_basis   TEXT NOT NULL,        -- 'build', 'name', 'download', 'source', 'unknown'
    reason       TEXT NOT NULL,
    state        TEXT NOT NULL
                 CHECK (state IN ('pending', 'deleted', 'refused', 'kept', 'skipped')),
    done_ms      INTEGER,
    PRIMARY KEY (run_id, path)
) WITHOUT ROWID;
CREATE INDEX gc_deletions_by_path ON gc_deletions(path);

-- Profile generations a run removed (removed_ms NULL: planned, not removed).
CREATE TABLE gc_generations (
    run_id     INTEGER NOT NULL REFERENCES gc_runs(id) ON DELETE CASCADE,
    profile    TEXT NOT NULL,
    generation INTEGER NOT NULL,
    path       TEXT NOT NULL,
    made_ms    INTEGER,
    removed_ms INTEGER,
    PRIMARY KEY (run_id, profile, generation)
) WITHOUT ROWID;

-- What each substituter answered about a path, reused for a while (a GC asks about
-- thousands of paths, and asking an HTTP cache costs a request each).
CREATE TABLE cache_answers (
    path        TEXT NOT NULL,
    substituter TEXT NOT NULL,
    available   INTEGER NOT NULL,      -- 1: the cache has it
    checked_ms  INTEGER NOT NULL,
    PRIMARY KEY (path, substituter)
) WITHOUT ROWID;
