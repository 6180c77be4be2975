// Diesel schema, written by hand to match migrations/postgres and migrations/sqlite.
// Instants are BIGINT microseconds since the Unix epoch (UTC).

diesel::table! {
    organisations (id) {
        id -> BigInt,
        name -> Text,
        siret -> Text,
        address -> Text,
        allowed_demarches -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    aidants (id) {
        id -> BigInt,
        email -> Text,
        first_name -> Text,
        last_name -> Text,
        profession -> Text,
        active -> Bool,
        current_organisation_id -> Nullable<BigInt>,
        created_at -> BigInt,
        deactivated_at -> Nullable<BigInt>,
        auditor -> Bool,
        last_signin_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    memberships (aidant_id, organisation_id) {
        aidant_id -> BigInt,
        organisation_id -> BigInt,
        role -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    usagers (id) {
        id -> BigInt,
        sub_hash -> Text,
        given_name -> Text,
        family_name -> Text,
        preferred_username -> Nullable<Text>,
        birthdate -> Text,
        gender -> Text,
        birthplace -> Text,
        birthcountry -> Text,
        email -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    mandats (id) {
        id -> BigInt,
        organisation_id -> BigInt,
        usager_id -> BigInt,
        created_at -> BigInt,
        expires_at -> BigInt,
        duration_days -> Integer,
    }
}

diesel::table! {
    autorisations (id) {
        id -> BigInt,
        mandat_id -> BigInt,
        demarche -> Text,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    attestations (id) {
        id -> BigInt,
        mandat_id -> BigInt,
        kind -> Text,
        hash -> Text,
        legal_text_version -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    oidc_clients (id) {
        id -> BigInt,
        client_id -> Text,
        name -> Text,
        secret_hash -> Text,
        secret_sealed -> Nullable<Text>,
        redirect_uris -> Text,
        post_logout_redirect_uris -> Text,
        id_token_alg -> Text,
        userinfo_format -> Text,
        active -> Bool,
        created_at -> BigInt,
        subject_type -> Text,
        sector_identifier -> Nullable<Text>,
        act_claim -> Bool,
    }
}

diesel::table! {
    totp_cards (id) {
        id -> BigInt,
        serial -> Text,
        seed_sealed -> Text,
        step -> Integer,
        digits -> Integer,
        imported_at -> BigInt,
    }
}

diesel::table! {
    totp_devices (id) {
        id -> BigInt,
        aidant_id -> BigInt,
        kind -> Text,
        card_id -> Nullable<BigInt>,
        seed_sealed -> Nullable<Text>,
        step -> Integer,
        digits -> Integer,
        drift_steps -> Integer,
        last_used_step -> Nullable<BigInt>,
        confirmed_at -> Nullable<BigInt>,
        created_at -> BigInt,
    }
}

diesel::table! {
    webauthn_credentials (id) {
        id -> BigInt,
        aidant_id -> BigInt,
        credential_id -> Text,
        passkey -> Text,
        name -> Text,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    journal (seq) {
        seq -> BigInt,
        at -> BigInt,
        action -> Text,
        aidant_id -> Nullable<BigInt>,
        organisation_id -> Nullable<BigInt>,
        usager_id -> Nullable<BigInt>,
        mandat_id -> Nullable<BigInt>,
        autorisation_id -> Nullable<BigInt>,
        demarche -> Nullable<Text>,
        client_id -> Nullable<Text>,
        attestation_hash -> Nullable<Text>,
        details -> Text,
        leaf_hash -> Text,
        chain_hash -> Text,
        pending_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    journal_pending (id) {
        id -> BigInt,
        at -> BigInt,
        action -> Text,
        aidant_id -> Nullable<BigInt>,
        organisation_id -> Nullable<BigInt>,
        usager_id -> Nullable<BigInt>,
        mandat_id -> Nullable<BigInt>,
        autorisation_id -> Nullable<BigInt>,
        demarche -> Nullable<Text>,
        client_id -> Nullable<Text>,
        attestation_hash -> Nullable<Text>,
        details -> Text,
    }
}

diesel::table! {
    journal_head (id) {
        id -> Integer,
        seq -> BigInt,
        chain_hash -> Text,
    }
}

diesel::table! {
    oidc_token_uses (token_hash) {
        token_hash -> Text,
        used_at -> BigInt,
    }
}

diesel::table! {
    journal_checkpoints (size) {
        size -> BigInt,
        root_hash -> Text,
        note -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    journal_tiles (level, idx) {
        level -> Integer,
        idx -> BigInt,
        hashes -> Binary,
        root -> Binary,
    }
}

diesel::table! {
    mail_queue (id) {
        id -> BigInt,
        idempotency_key -> Text,
        kind -> Text,
        recipient -> Text,
        notice -> Text,
        organisation_id -> Nullable<BigInt>,
        aidant_id -> Nullable<BigInt>,
        usager_id -> Nullable<BigInt>,
        created_at -> BigInt,
        next_attempt_at -> BigInt,
        attempts -> Integer,
        claimed_until -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        sent_at -> Nullable<BigInt>,
        failed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    scheduled_jobs (name) {
        name -> Text,
        next_due_at -> BigInt,
        last_run_at -> Nullable<BigInt>,
        last_outcome -> Nullable<Text>,
        last_duration_micros -> Nullable<BigInt>,
        cursor -> BigInt,
    }
}

diesel::table! {
    usager_notices (usager_id) {
        usager_id -> BigInt,
        use_notices -> Bool,
        pending_from -> Nullable<BigInt>,
        last_digest_at -> Nullable<BigInt>,
    }
}

diesel::joinable!(memberships -> aidants (aidant_id));
diesel::joinable!(memberships -> organisations (organisation_id));
diesel::joinable!(autorisations -> mandats (mandat_id));
diesel::joinable!(mandats -> usagers (usager_id));
diesel::joinable!(totp_devices -> aidants (aidant_id));

diesel::allow_tables_to_appear_in_same_query!(
    organisations, aidants, memberships, usagers, mandats, autorisations, attestations,
    oidc_clients, totp_cards, totp_devices, webauthn_credentials, journal, journal_head, journal_pending,
    oidc_token_uses, journal_checkpoints, journal_tiles, mail_queue, scheduled_jobs, usager_notices,
);
