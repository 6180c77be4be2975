-- Lifecycle: the mail queue, the scheduled jobs, the last sign-in of each aidant and the
-- usagers' notice settings (docs/lifecycle.md).

-- Every e-mail is first a row, written in the transaction of the change that causes it.
-- idempotency_key names the notice (one row per key: a notice is queued once);
-- notice is its JSON (broker_core::notice), emptied once delivered or given up.
CREATE TABLE mail_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    notice TEXT NOT NULL,
    organisation_id BIGINT,
    aidant_id BIGINT,
    usager_id BIGINT,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_until BIGINT,
    last_error TEXT,
    sent_at BIGINT,
    failed_at BIGINT
);
CREATE INDEX mail_queue_due ON mail_queue (next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX mail_queue_organisation ON mail_queue (organisation_id, id);

-- One row per scheduled job: due at next_due_at; cursor is the job's own progress mark
-- (the last journal entry it read, for the notices to usagers).
CREATE TABLE scheduled_jobs (
    name TEXT PRIMARY KEY,
    next_due_at BIGINT NOT NULL,
    last_run_at BIGINT,
    last_outcome TEXT,
    last_duration_micros BIGINT,
    cursor BIGINT NOT NULL DEFAULT 0
);
-- The notices to usagers start with the uses journaled from now on, not with the past.
INSERT INTO scheduled_jobs (name, next_due_at, cursor)
    SELECT 'avis-usagers', 0, COALESCE(MAX(seq), 0) FROM journal;

-- The last sign-in of each aidant (inactivity reminders), from the journal for the
-- aidants who signed in before (their creation otherwise). An account already inactive
-- for 150 days or more counts from 150 days before this migration: it is warned at the
-- first run and deactivated 30 days later, never at once.
ALTER TABLE aidants ADD COLUMN last_signin_at BIGINT;
UPDATE aidants SET last_signin_at = max(
    COALESCE((SELECT max(j.at) FROM journal j WHERE j.aidant_id = aidants.id AND j.action = 'aidant_login'), aidants.created_at),
    CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER) - 150 * 86400000000);

-- The usagers' notices of use: turned off by the usager, or waiting for the hourly digest
-- (pending_from: the first journal entry not yet told).
CREATE TABLE usager_notices (
    usager_id BIGINT PRIMARY KEY REFERENCES usagers (id),
    use_notices BOOLEAN NOT NULL DEFAULT 1,
    pending_from BIGINT,
    last_digest_at BIGINT
);
