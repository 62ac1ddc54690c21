-- Migration 0005: the wrapper's process id on its session, so that `doctor` can tell a
-- session left `running` by a crash (its process gone) from one still running. NULL for
-- sessions recorded before. Never edit a landed migration; add the next number.

ALTER TABLE sessions ADD COLUMN pid INTEGER;
