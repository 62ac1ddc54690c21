-- Migration 0009: what `tune` needs to read a recorded build right. A build that shared
-- the host with other builds (or anything else) ran slower than it would alone; the
-- wrapper's sampler records, per build, how long it was seen using CPU and how much CPU
-- the rest of the host used meanwhile, so that the slowdown is not mistaken for idle
-- time. One row per build the sampler saw use CPU. Never edit a landed migration; add
-- the next number.

CREATE TABLE build_contention (
    build_id      INTEGER PRIMARY KEY REFERENCES builds(id) ON DELETE CASCADE,
    cpu_window_ms INTEGER NOT NULL,     -- total length of the samples in which its CPU time grew
    others_cpu_ms INTEGER NOT NULL      -- CPU time the rest of the host used in those samples
);

-- tune fits each derivation name from its newest builds: the newest derivations of a
-- name first, without reading every build of a name rebuilt a thousand times.
CREATE INDEX derivations_by_name_seen ON derivations(name, first_seen_ms);
