ALTER TABLE oidc_clients DROP COLUMN act_claim;
ALTER TABLE oidc_clients DROP COLUMN sector_identifier;
ALTER TABLE oidc_clients DROP COLUMN subject_type;
