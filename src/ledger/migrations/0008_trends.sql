-- Migration 0008: what `nix-ledger trends` and `report` read, fast on a million builds.
-- Never edit a landed migration; add the next number.
--
-- A build's series (its derivation name without the version: `hello-2.12` and
-- `hello-2.13` are one series, see src/nix/name.rs), its version, and its outputs' total
-- size are stored on the build itself, so that trends read one partial covering index in
-- order instead of joining every build with `derivations` and `store_paths` on TEXT keys
-- (8.5 s against 0.26 s on 1,000,000 builds, docs/benchmarks.md).
--
-- The rows already there are filled in below. `nix_series_key` and `nix_series_version`
-- are SQL functions nix-ledger registers on its own connection (src/ledger/mod.rs) before
-- it migrates; they are Nix's `parseDrvName` with the series rules of src/nix/name.rs.

CREATE TABLE series (
    id  INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE            -- e.g. 'hello', 'hello-*.tar.gz', 'linux-*-modules'
);

ALTER TABLE builds ADD COLUMN series_id INTEGER REFERENCES series(id);
ALTER TABLE builds ADD COLUMN version TEXT;           -- '' when the name has none
-- Σ nar_size of the build's outputs, once every output's size is known (enrichment).
ALTER TABLE builds ADD COLUMN output_nar_bytes INTEGER;

-- The wrapper's evaluation time: from starting Nix to the start of its last realisation
-- (import-from-derivation builds before it count as evaluation). NULL when unknown.
ALTER TABLE sessions ADD COLUMN eval_ms INTEGER;
ALTER TABLE sessions ADD COLUMN ifd_ms INTEGER;        -- of which import-from-derivation
ALTER TABLE sessions ADD COLUMN eval_fetches INTEGER;  -- downloads made while evaluating

INSERT OR IGNORE INTO series (key) SELECT DISTINCT nix_series_key(name) FROM derivations;
UPDATE builds SET (series_id, version) = (
    SELECT s.id, nix_series_version(d.name)
    FROM derivations d JOIN series s ON s.key = nix_series_key(d.name)
    WHERE d.drv_path = builds.drv_path);
UPDATE builds SET output_nar_bytes = (
    SELECT CASE WHEN count(*) > 0 AND count(p.nar_size) = count(*) THEN sum(p.nar_size) END
    FROM build_outputs o LEFT JOIN store_paths p ON p.path = o.path
    WHERE o.build_id = builds.id)
WHERE status = 'built';

-- Builds made on this machine only: a remote builder's times are another machine's, and
-- so are those pulled from a fleet hub (migration 0006's `origin`).
CREATE INDEX builds_by_series
    ON builds (series_id, finished_ms, duration_ms, peak_rss_bytes, output_nar_bytes, version)
    WHERE status = 'built' AND coalesce(machine, '') = '' AND origin IS NULL;

-- Whether a build was an avoidable or a no-op rebuild (`why`'s verdict against the builds
-- before it), kept once judged: a report over a month of a busy ledger then judges only
-- what is new. `kind` NULL: judged, not a wasted rebuild.
CREATE TABLE rebuild_verdicts (
    build_id     INTEGER PRIMARY KEY REFERENCES builds(id) ON DELETE CASCADE,
    kind         TEXT CHECK (kind IN ('avoidable', 'no-op')),
    previous_drv TEXT,
    detail       TEXT,
    judged_ms    INTEGER NOT NULL
);
