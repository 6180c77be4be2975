-- Same schema as PostgreSQL. SQLite has a single writer, so the broker sequences
-- entries directly in the transaction of their change and leaves this table empty.
CREATE TABLE journal_pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    aidant_id BIGINT,
    organisation_id BIGINT,
    usager_id BIGINT,
    mandat_id BIGINT,
    autorisation_id BIGINT,
    demarche TEXT,
    client_id TEXT,
    attestation_hash TEXT,
    details TEXT NOT NULL
);

ALTER TABLE journal ADD COLUMN pending_id BIGINT;
CREATE UNIQUE INDEX journal_pending_id ON journal (pending_id);

CREATE TRIGGER journal_pending_no_update BEFORE UPDATE ON journal_pending
BEGIN SELECT RAISE(ABORT, 'journal is append-only: UPDATE refused on journal_pending'); END;
CREATE TRIGGER journal_pending_delete_sequenced BEFORE DELETE ON journal_pending
WHEN NOT EXISTS (SELECT 1 FROM journal WHERE pending_id = OLD.id)
BEGIN SELECT RAISE(ABORT, 'journal is append-only: DELETE refused on journal_pending'); END;
