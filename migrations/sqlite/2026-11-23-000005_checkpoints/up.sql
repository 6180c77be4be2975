-- Signed checkpoints of the journal (docs/audit.md): one per tree size, append-only.
CREATE TABLE journal_checkpoints (
    size BIGINT PRIMARY KEY CHECK (size >= 0),
    root_hash TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TRIGGER journal_checkpoints_no_update BEFORE UPDATE ON journal_checkpoints
BEGIN SELECT RAISE(ABORT, 'journal is append-only: UPDATE refused on journal_checkpoints'); END;
CREATE TRIGGER journal_checkpoints_no_delete BEFORE DELETE ON journal_checkpoints
BEGIN SELECT RAISE(ABORT, 'journal is append-only: DELETE refused on journal_checkpoints'); END;
