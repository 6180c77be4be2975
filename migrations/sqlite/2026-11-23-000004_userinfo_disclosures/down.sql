DROP TABLE oidc_token_uses;
