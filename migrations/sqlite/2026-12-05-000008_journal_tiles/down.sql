DROP TABLE journal_tiles;
