-- Migration 0010: sessions by their start. `tune` (and the report's advice, which runs
-- it) takes the newest sessions that built something, and the report the sessions of
-- its period: without this index each read went through every session of the ledger
-- (50,000 on a ledger of a million builds, 0.13 s a time), with it only the ones it
-- keeps. Never edit a landed migration; add the next number.

CREATE INDEX sessions_by_start ON sessions(started_ms);
