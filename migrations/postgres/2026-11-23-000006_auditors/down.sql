ALTER TABLE aidants DROP COLUMN auditor;
