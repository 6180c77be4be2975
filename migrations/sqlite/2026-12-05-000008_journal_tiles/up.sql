-- Full tiles of the journal's Merkle tree (C2SP tlog-tiles, height 8; docs/journal.md).
-- Tile (level, idx) holds the 256 hashes of tree level 8·level, nodes idx·256 to
-- idx·256 + 255, concatenated (32 raw bytes each); root is its own root, node idx of
-- tree level 8·(level + 1). Partial tiles are never stored. A full tile never changes:
-- append-only like the journal (SQLite has no TRUNCATE; see the journal's triggers).
CREATE TABLE journal_tiles (
    level INTEGER NOT NULL CHECK (level >= 0 AND level <= 63),
    idx BIGINT NOT NULL CHECK (idx >= 0),
    hashes BLOB NOT NULL CHECK (typeof(hashes) = 'blob' AND length(hashes) = 8192),
    root BLOB NOT NULL CHECK (typeof(root) = 'blob' AND length(root) = 32),
    PRIMARY KEY (level, idx)
);
CREATE TRIGGER journal_tiles_no_update BEFORE UPDATE ON journal_tiles
BEGIN SELECT RAISE(ABORT, 'journal is append-only: UPDATE refused on journal_tiles'); END;
CREATE TRIGGER journal_tiles_no_delete BEFORE DELETE ON journal_tiles
BEGIN SELECT RAISE(ABORT, 'journal is append-only: DELETE refused on journal_tiles'); END;
