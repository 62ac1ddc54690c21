-- Migration 0004: manifests that never block. An entry may be a FIFO, socket or device
-- ('other': listed, never opened), and a manifest may have given up rather than wait
-- (too many entries or bytes, or too long): `incomplete` says why, and such a manifest
-- is never taken as equal to another. Never edit a landed migration; add the next number.

ALTER TABLE manifests ADD COLUMN incomplete TEXT; -- NULL: the whole tree

-- SQLite cannot change a CHECK constraint in place: the entries move to a new table.
CREATE TABLE manifest_entries_0004 (
    store_path TEXT NOT NULL REFERENCES manifests(store_path) ON DELETE CASCADE,
    rel_path   TEXT NOT NULL,
    type       TEXT NOT NULL CHECK (type IN ('file', 'directory', 'symlink', 'other')),
    size       INTEGER,
    executable INTEGER,
    blake3     BLOB,
    target     TEXT,
    PRIMARY KEY (store_path, rel_path)
) WITHOUT ROWID;
INSERT INTO manifest_entries_0004 SELECT * FROM manifest_entries;
DROP TABLE manifest_entries;
ALTER TABLE manifest_entries_0004 RENAME TO manifest_entries;
