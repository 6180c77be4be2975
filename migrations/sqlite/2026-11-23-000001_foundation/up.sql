-- Instants are BIGINT microseconds since the Unix epoch (UTC) on every backend.
CREATE TABLE organisations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    siret TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    allowed_demarches TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE aidants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE CHECK (email = lower(email)),
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    profession TEXT NOT NULL DEFAULT '',
    active BOOLEAN NOT NULL DEFAULT 1,
    current_organisation_id BIGINT REFERENCES organisations (id),
    created_at BIGINT NOT NULL,
    deactivated_at BIGINT
);

CREATE TABLE memberships (
    aidant_id BIGINT NOT NULL REFERENCES aidants (id),
    organisation_id BIGINT NOT NULL REFERENCES organisations (id),
    role TEXT NOT NULL CHECK (role IN ('aidant', 'referent')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (aidant_id, organisation_id)
);
CREATE INDEX memberships_organisation ON memberships (organisation_id);

CREATE TABLE usagers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sub_hash TEXT NOT NULL UNIQUE,
    given_name TEXT NOT NULL,
    family_name TEXT NOT NULL,
    preferred_username TEXT,
    birthdate TEXT NOT NULL,
    gender TEXT NOT NULL,
    birthplace TEXT NOT NULL DEFAULT '',
    birthcountry TEXT NOT NULL,
    email TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE mandats (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    organisation_id BIGINT NOT NULL REFERENCES organisations (id),
    usager_id BIGINT NOT NULL REFERENCES usagers (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    duration_days INTEGER NOT NULL CHECK (duration_days IN (1, 31, 182, 365)),
    CHECK (expires_at = created_at + duration_days * 86400000000)
);
CREATE INDEX mandats_usager_organisation ON mandats (usager_id, organisation_id);
CREATE INDEX mandats_organisation ON mandats (organisation_id, expires_at);

CREATE TABLE autorisations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mandat_id BIGINT NOT NULL REFERENCES mandats (id),
    demarche TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    UNIQUE (mandat_id, demarche)
);

CREATE TABLE attestations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mandat_id BIGINT NOT NULL REFERENCES mandats (id),
    kind TEXT NOT NULL CHECK (kind IN ('mandat', 'revocation')),
    hash TEXT NOT NULL UNIQUE,
    legal_text_version TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE oidc_clients (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    secret_sealed TEXT,
    redirect_uris TEXT NOT NULL,
    post_logout_redirect_uris TEXT NOT NULL DEFAULT '',
    id_token_alg TEXT NOT NULL CHECK (id_token_alg IN ('ES256', 'RS256', 'HS256')),
    userinfo_format TEXT NOT NULL CHECK (userinfo_format IN ('json', 'jwt')),
    active BOOLEAN NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL
);

CREATE TABLE totp_cards (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    serial TEXT NOT NULL UNIQUE,
    seed_sealed TEXT NOT NULL,
    step INTEGER NOT NULL,
    digits INTEGER NOT NULL,
    imported_at BIGINT NOT NULL
);

CREATE TABLE totp_devices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    aidant_id BIGINT NOT NULL REFERENCES aidants (id),
    kind TEXT NOT NULL CHECK (kind IN ('totp_app', 'totp_card')),
    card_id BIGINT UNIQUE REFERENCES totp_cards (id),
    seed_sealed TEXT,
    step INTEGER NOT NULL,
    digits INTEGER NOT NULL,
    drift_steps INTEGER NOT NULL DEFAULT 0,
    last_used_step BIGINT,
    confirmed_at BIGINT,
    created_at BIGINT NOT NULL,
    CHECK ((kind = 'totp_card') = (card_id IS NOT NULL)),
    CHECK ((kind = 'totp_app') = (seed_sealed IS NOT NULL))
);
CREATE INDEX totp_devices_aidant ON totp_devices (aidant_id);

CREATE TABLE webauthn_credentials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    aidant_id BIGINT NOT NULL REFERENCES aidants (id),
    credential_id TEXT NOT NULL UNIQUE,
    passkey TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX webauthn_credentials_aidant ON webauthn_credentials (aidant_id);
