-- Migration 0011: another fleet machine's series. `trends --machine NAME` reads the
-- successful builds that machine made itself (pulled by `sync`, not sent to a remote
-- builder) in series and time order, as `builds_by_series` serves this machine's own.
-- Never edit a landed migration; add the next number.

CREATE INDEX builds_by_fleet_series
    ON builds (origin_machine, series_id, finished_ms, duration_ms, peak_rss_bytes,
               output_nar_bytes, version)
    WHERE status = 'built' AND coalesce(machine, '') = '' AND origin IS NOT NULL;
