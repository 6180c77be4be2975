-- Full tiles of the journal's Merkle tree (C2SP tlog-tiles, height 8; docs/journal.md).
-- Tile (level, idx) holds the 256 hashes of tree level 8·level, nodes idx·256 to
-- idx·256 + 255, concatenated (32 raw bytes each); root is its own root, node idx of
-- tree level 8·(level + 1). Partial tiles are never stored. A full tile never changes:
-- append-only like the journal.
CREATE TABLE journal_tiles (
    level INTEGER NOT NULL CHECK (level >= 0 AND level <= 63),
    idx BIGINT NOT NULL CHECK (idx >= 0),
    hashes BYTEA NOT NULL CHECK (octet_length(hashes) = 8192),
    root BYTEA NOT NULL CHECK (octet_length(root) = 32),
    PRIMARY KEY (level, idx)
);
CREATE TRIGGER journal_tiles_no_update BEFORE UPDATE ON journal_tiles
    FOR EACH ROW EXECUTE FUNCTION journal_refuse_change();
CREATE TRIGGER journal_tiles_no_delete BEFORE DELETE ON journal_tiles
    FOR EACH ROW EXECUTE FUNCTION journal_refuse_change();
CREATE TRIGGER journal_tiles_no_truncate BEFORE TRUNCATE ON journal_tiles
    FOR EACH STATEMENT EXECUTE FUNCTION journal_refuse_change();
