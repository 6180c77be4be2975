DROP TABLE journal_pending;
DROP INDEX journal_pending_id;
ALTER TABLE journal DROP COLUMN pending_id;
