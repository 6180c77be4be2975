DROP TABLE usager_notices;
ALTER TABLE aidants DROP COLUMN last_signin_at;
DROP TABLE scheduled_jobs;
DROP TABLE mail_queue;
