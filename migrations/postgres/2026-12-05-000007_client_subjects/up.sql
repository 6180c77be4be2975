-- Which sub a client receives (OpenID Connect Core §8). Clients registered before keep
-- the public subject they had; new clients are registered pairwise by the broker.
ALTER TABLE oidc_clients ADD COLUMN subject_type TEXT NOT NULL DEFAULT 'public'
    CHECK (subject_type IN ('public', 'pairwise'));
-- The sector of a pairwise client (a host name); NULL: the client is its own sector.
ALTER TABLE oidc_clients ADD COLUMN sector_identifier TEXT;
-- The act claim (the acting aidant and their organisation) in id_token and userinfo.
ALTER TABLE oidc_clients ADD COLUMN act_claim BOOLEAN NOT NULL DEFAULT FALSE;
