-- The journal: append-only, hash-chained, gap-free. See docs/journal.md.
CREATE TABLE journal (
    seq BIGINT PRIMARY KEY CHECK (seq >= 1),
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

-- One row: the last sequence number and chain hash. Appenders lock it, so the
-- sequence stays contiguous whatever the number of writers and processes.
CREATE TABLE journal_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    chain_hash TEXT NOT NULL
);
INSERT INTO journal_head (id, seq, chain_hash) VALUES (1, 0, '');

CREATE FUNCTION journal_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'journal is append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION journal_head_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq < OLD.seq THEN
        RAISE EXCEPTION 'journal head may only move forward'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
    FOR EACH ROW EXECUTE FUNCTION journal_refuse_change();
CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION journal_refuse_change();
CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION journal_refuse_change();
CREATE TRIGGER journal_head_no_delete BEFORE DELETE ON journal_head
    FOR EACH ROW EXECUTE FUNCTION journal_refuse_change();
CREATE TRIGGER journal_head_no_truncate BEFORE TRUNCATE ON journal_head
    FOR EACH STATEMENT EXECUTE FUNCTION journal_refuse_change();
CREATE TRIGGER journal_head_forward BEFORE UPDATE ON journal_head
    FOR EACH ROW EXECUTE FUNCTION journal_head_forward_only();
