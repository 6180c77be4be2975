-- The journal: append-only, hash-chained, gap-free. See docs/journal.md.
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY CHECK (seq >= 1),
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
    details TEXT NOT NULL,
    leaf_hash TEXT NOT NULL,
    chain_hash TEXT NOT NULL
);
CREATE INDEX journal_aidant ON journal (aidant_id, seq);
CREATE INDEX journal_organisation ON journal (organisation_id, seq);
CREATE INDEX journal_usager ON journal (usager_id, seq);
CREATE INDEX journal_action ON journal (action, seq);
CREATE INDEX journal_attestation ON journal (attestation_hash);

CREATE TABLE journal_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    chain_hash TEXT NOT NULL
);
INSERT INTO journal_head (id, seq, chain_hash) VALUES (1, 0, '');

-- SQLite has no TRUNCATE: a DELETE without WHERE runs the DELETE trigger, which
-- also turns off its truncate optimisation.
CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'journal is append-only: UPDATE refused on journal'); END;
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'journal is append-only: DELETE refused on journal'); END;
CREATE TRIGGER journal_head_no_delete BEFORE DELETE ON journal_head
BEGIN SELECT RAISE(ABORT, 'journal is append-only: DELETE refused on journal_head'); END;
CREATE TRIGGER journal_head_forward BEFORE UPDATE ON journal_head
WHEN NEW.seq < OLD.seq
BEGIN SELECT RAISE(ABORT, 'journal head may only move forward'); END;
