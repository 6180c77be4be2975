DROP TABLE journal_checkpoints;
