-- Auditors read the whole journal; they belong to no organisation and make no mandat.
ALTER TABLE aidants ADD COLUMN auditor BOOLEAN NOT NULL DEFAULT FALSE;
