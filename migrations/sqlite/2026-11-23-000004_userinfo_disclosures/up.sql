-- Each access token discloses the usager's identity once: the row is written in the
-- transaction of the `autorisation_used` journal entry.
CREATE TABLE oidc_token_uses (
    token_hash TEXT PRIMARY KEY,
    used_at BIGINT NOT NULL
);
