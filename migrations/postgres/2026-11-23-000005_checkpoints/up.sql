-- Signed checkpoints of the journal (docs/audit.md): one per tree size, append-only.
CREATE TABLE journal_checkpoints (
    size BIGINT PRIMARY KEY CHECK (size >= 0),
    root_hash TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TRIGGER journal_checkpoints_no_update BEFORE UPDATE ON journal_checkpoints
    FOR EACH ROW EXECUTE FUNCTION journal_refuse_change();
CREATE TRIGGER journal_checkpoints_no_delete BEFORE DELETE ON journal_checkpoints
    FOR EACH ROW EXECUTE FUNCTION journal_refuse_change();
CREATE TRIGGER journal_checkpoints_no_truncate BEFORE TRUNCATE ON journal_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION journal_refuse_change();
