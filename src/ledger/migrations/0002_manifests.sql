-- Migration 0002: what `nix-ledger why` needs to explain a rebuild after Nix has
-- garbage-collected the old derivations and sources. Self-contained: it only adds tables.
-- Store paths are immutable, so every row here is written once and never updated.

-- The .drv files of every recorded build's closure, as Nix wrote them (ATerm).
CREATE TABLE drv_snapshots (
    drv_path  TEXT PRIMARY KEY,
    aterm     BLOB NOT NULL,
    stored_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- One manifest per store path: a source (an input source of a snapshotted .drv) or an
-- output built here. `digest` is blake3 over the sorted entries, so two manifests are
-- equal exactly when their digests are.
CREATE TABLE manifests (
    store_path  TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('source', 'output')),
    -- For outputs: the hash parts (space separated) replaced by a placeholder before
    -- hashing file contents and symlink targets (the derivation's own outputs). NULL for sources.
    normalised  TEXT,
    entries     INTEGER NOT NULL,
    total_bytes INTEGER NOT NULL,
    digest      BLOB NOT NULL,
    hash_ms     INTEGER NOT NULL,   -- how long hashing took
    stored_ms   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE manifest_entries (
    store_path TEXT NOT NULL REFERENCES manifests(store_path) ON DELETE CASCADE,
    rel_path   TEXT NOT NULL,       -- '' is the store path itself
    type       TEXT NOT NULL CHECK (type IN ('file', 'directory', 'symlink')),
    size       INTEGER,             -- files only
    executable INTEGER,             -- files only: 1 when any execute bit is set
    blake3     BLOB,                -- files only: of the (normalised, for outputs) contents
    target     TEXT,                -- symlinks only (normalised, for outputs)
    PRIMARY KEY (store_path, rel_path)
) WITHOUT ROWID;
