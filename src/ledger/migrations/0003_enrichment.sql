-- Migration 0003: enrichment (what the .drv and the store say of a build, and the
-- snapshots and manifests `why` needs) runs after recording, off the build's path.
-- Never edit a landed migration; add the next number.

ALTER TABLE builds ADD COLUMN enriched_ms INTEGER; -- NULL: not enriched yet
CREATE INDEX builds_to_enrich ON builds(id) WHERE enriched_ms IS NULL;
