DROP TABLE journal_head;
DROP TABLE journal;
DROP FUNCTION journal_head_forward_only();
DROP FUNCTION journal_refuse_change();
