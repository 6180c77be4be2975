DROP TABLE journal_pending;
DROP FUNCTION journal_pending_guard();
ALTER TABLE journal DROP COLUMN pending_id;
