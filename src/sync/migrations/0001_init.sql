-- Hub migration 0001: the fleet's shared ledger in PostgreSQL (schema nix_ledger).
-- Never edit a landed migration; add the next number. Documented in docs/sync.md.
-- Times are unix milliseconds (UTC), as in the local ledger.

-- This hub's own random id: a ledger keeps its watermarks per hub.
CREATE TABLE nix_ledger.hub (
    id         text PRIMARY KEY DEFAULT md5(random()::text || clock_timestamp()::text),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO nix_ledger.hub DEFAULT VALUES;

-- One row per ledger that ever synced: its random id and its machine's name.
CREATE TABLE nix_ledger.ledgers (
    ledger_id  text PRIMARY KEY,
    machine    text NOT NULL,
    first_sync timestamptz NOT NULL DEFAULT now(),
    last_sync  timestamptz NOT NULL DEFAULT now()
);

-- Every row written gets the next `seq` under one lock (pg_advisory_xact_lock), so seq
-- order is commit order and a reader's watermark never skips a row still committing.
CREATE SEQUENCE nix_ledger.seq;

CREATE TABLE nix_ledger.sessions (
    ledger_id         text NOT NULL,
    local_id          bigint NOT NULL,     -- sessions.id in that ledger
    machine           text NOT NULL,
    rev               bigint NOT NULL,     -- that ledger's change count of the row
    seq               bigint NOT NULL,
    kind              text NOT NULL,
    command           text NOT NULL,
    cwd               text,
    started_ms        bigint NOT NULL,
    finished_ms       bigint,
    status            text NOT NULL,
    exit_code         bigint,
    nix_version       text,
    max_jobs          bigint,
    cores             bigint,
    host_cores        bigint,
    host_memory_bytes bigint,
    hostname          text,
    built_count       bigint,
    substituted_count bigint,
    failed_count      bigint,
    downloaded_bytes  bigint,
    PRIMARY KEY (ledger_id, local_id)
);
CREATE INDEX sessions_by_seq ON nix_ledger.sessions (seq);

CREATE TABLE nix_ledger.builds (
    ledger_id        text NOT NULL,
    local_id         bigint NOT NULL,      -- builds.id in that ledger
    machine          text NOT NULL,        -- the machine that recorded it
    rev              bigint NOT NULL,
    seq              bigint NOT NULL,
    drv_path         text NOT NULL,
    name             text NOT NULL,
    system           text,
    session_local_id bigint,
    source           text NOT NULL,
    status           text NOT NULL,
    started_ms       bigint,
    finished_ms      bigint NOT NULL,
    duration_ms      bigint,
    timing_source    text,
    builder          text,                 -- the remote builder it ran on, if any
    peak_rss_bytes   bigint,
    cpu_user_ms      bigint,
    cpu_system_ms    bigint,
    log_lines        bigint,
    log_tail         text,
    hook_recorded_ms bigint,
    upload_ms        bigint,
    download_ms      bigint,
    connect_ms       bigint,
    outputs          jsonb NOT NULL,       -- {"out": "/nix/store/…", …}
    PRIMARY KEY (ledger_id, local_id)
);
CREATE INDEX builds_by_seq ON nix_ledger.builds (seq);
CREATE INDEX builds_by_name ON nix_ledger.builds (name, finished_ms);

-- With `sync --with-why`: what `why` needs, once per store path (immutable).
CREATE TABLE nix_ledger.drv_snapshots (
    drv_path  text PRIMARY KEY,
    aterm     bytea NOT NULL,
    stored_ms bigint NOT NULL,
    ledger_id text NOT NULL,               -- the first ledger that pushed it
    seq       bigint NOT NULL
);
CREATE INDEX drv_snapshots_by_seq ON nix_ledger.drv_snapshots (seq);

CREATE TABLE nix_ledger.manifests (
    store_path  text PRIMARY KEY,
    kind        text NOT NULL,
    normalised  text,
    entries     bigint NOT NULL,
    total_bytes bigint NOT NULL,
    digest      bytea NOT NULL,
    hash_ms     bigint NOT NULL,
    stored_ms   bigint NOT NULL,
    files       jsonb NOT NULL,            -- the manifest_entries rows, as an array
    ledger_id   text NOT NULL,
    seq         bigint NOT NULL
);
CREATE INDEX manifests_by_seq ON nix_ledger.manifests (seq);
