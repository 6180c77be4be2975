//! WebAuthn: registration and sign-in without e-mail with a software authenticator,
//! the refusals that matter (another key, replay, tampering, no user verification),
//! and credential storage on both backends.

use broker_core::journal::{Action, Record};
use broker_core::Timestamp;
use broker_store::admin::{self, NewAidant};
use broker_store::seal::Sealer;
use broker_store::{journal, webauthn, StoreError};
use broker_testkit::authenticator::SoftAuthenticator;
use broker_testkit::TestDb;
use broker_web::passkeys::{self, NewCredential, PasskeyError, Passkeys, GENERIC_MESSAGE};
use serde_json::Value;

const ISSUER: &str = "https://aidants.exemple.gouv.fr";
const ORIGIN: &str = "https://aidants.exemple.gouv.fr";

fn rp() -> Passkeys {
    Passkeys::new(ISSUER).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    data_encoding::BASE64URL_NOPAD.decode(s.as_bytes()).unwrap()
}

/// An organisation and an aidant in it: (organisation id, aidant id).
fn setup(t: &TestDb, email: &str) -> (i64, i64) {
    let o = admin::create_organisation(&t.db, "France Services Lyon 3", "81234567800013", "", None).unwrap();
    let a = admin::create_aidant(
        &t.db,
        &NewAidant { organisation_id: o.id, email, first_name: "Awa", last_name: "Diallo", profession: "Médiatrice", referent: false },
    )
    .unwrap();
    (o.id, a.id)
}

/// Runs a whole registration for `aidant` on `auth`.
fn register(rp: &Passkeys, auth: &mut SoftAuthenticator, aidant: i64, exclude: &[String]) -> NewCredential {
    let (options, state) = rp.start_registration(aidant, "awa@exemple.fr", "Awa Diallo", exclude).unwrap();
    let response = auth.register(&options, ORIGIN);
    rp.finish_registration(&state, &response).unwrap()
}

fn assert_generic(e: &PasskeyError) {
    assert_eq!(e.message(), GENERIC_MESSAGE, "detail: {}", e.detail());
    assert_eq!(e.to_string(), GENERIC_MESSAGE);
}

fn records(t: &TestDb) -> Vec<Record> {
    broker_testkit::journal(&t.db, |c| journal::page(c, 0, 1000)).unwrap()
}

fn details(r: &Record) -> Value {
    serde_json::from_str(&r.details).unwrap()
}

#[test]
fn registration_asks_for_a_discoverable_credential_with_user_verification() {
    let (options, state) = rp().start_registration(42, "awa@exemple.fr", "Awa Diallo", &[]).unwrap();
    let pk = &options["publicKey"];
    assert_eq!(pk["rp"]["id"], "aidants.exemple.gouv.fr");
    assert_eq!(pk["rp"]["name"], "Aidants Connect");
    assert_eq!(pk["user"]["id"], b64(passkeys::user_handle(42).as_bytes()));
    assert_eq!(pk["user"]["name"], "awa@exemple.fr");
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(pk["authenticatorSelection"]["requireResidentKey"], true);
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    assert!(pk["pubKeyCredParams"].as_array().unwrap().iter().any(|p| p["alg"] == -7));
    assert!(pk.get("excludeCredentials").is_none());
    assert!(!state.is_empty() && serde_json::from_str::<Value>(&state).is_ok(), "state is JSON for the cache");
}

#[test]
fn sign_in_asks_for_any_discoverable_credential_with_user_verification() {
    let (options, state) = rp().start_signin().unwrap();
    let pk = &options["publicKey"];
    assert_eq!(pk["rpId"], "aidants.exemple.gouv.fr");
    assert_eq!(pk["userVerification"], "required");
    assert!(pk["allowCredentials"].as_array().is_none_or(|l| l.is_empty()), "{pk}");
    assert!(options.get("mediation").is_none(), "modal prompt for the sign-in button");
    assert!(serde_json::from_str::<Value>(&state).is_ok());
}

#[test]
fn an_aidant_registers_a_key_then_signs_in_with_it_without_email() {
    for t in TestDb::both() {
        let rp = rp();
        let (org, aidant) = setup(&t, "awa@exemple.fr");
        let mut key = SoftAuthenticator::new();
        let new = register(&rp, &mut key, aidant, &[]);
        assert_eq!(new.credential_id, key.credentials()[0].id_b64());
        let row = webauthn::add_credential(&t.db, aidant, &new.credential_id, &new.passkey_json, "  Clé bleue  ", Timestamp::now()).unwrap();

        let list = webauthn::list_credentials(&t.db, aidant).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].id, list[0].name.as_str(), list[0].last_used_at), (row, "Clé bleue", None));
        assert_eq!(webauthn::find_owner(&t.db, &new.credential_id).unwrap(), Some(aidant));
        assert_eq!(webauthn::find_owner(&t.db, "AAAA").unwrap(), None);

        // Sign-in: no e-mail, the user handle says who it is.
        let (options, state) = rp.start_signin().unwrap();
        let response = key.sign_in(&options, ORIGIN);
        let (who, cred_id) = rp.identify(&response).unwrap();
        assert_eq!((who, cred_id.as_str()), (aidant, new.credential_id.as_str()), "{}", t.name());
        assert_eq!(webauthn::find_owner(&t.db, &cred_id).unwrap(), Some(who));
        let stored: Vec<String> = webauthn::passkeys_of(&t.db, who).unwrap().into_iter().map(|(_, p)| p).collect();
        let ok = rp.finish_signin(&state, &response, &stored).unwrap();
        assert_eq!(ok.credential_id, new.credential_id);
        let updated = ok.updated_passkey_json.expect("the counter moved forward: the stored passkey is updated");
        let used_at = Timestamp::now();
        webauthn::mark_used(&t.db, &ok.credential_id, Some(&updated), used_at).unwrap();
        assert_eq!(webauthn::list_credentials(&t.db, aidant).unwrap()[0].last_used_at, Some(used_at.micros()));
        assert_eq!(webauthn::passkeys_of(&t.db, aidant).unwrap(), vec![(new.credential_id.clone(), updated)]);

        // The same assertion again, even with its own state, is refused: the stored
        // counter has moved past it.
        let stored: Vec<String> = webauthn::passkeys_of(&t.db, who).unwrap().into_iter().map(|(_, p)| p).collect();
        assert_generic(&rp.finish_signin(&state, &response, &stored).unwrap_err());
        // A second sign-in works and moves the counter again.
        let (options, state) = rp.start_signin().unwrap();
        let response = key.sign_in(&options, ORIGIN);
        assert!(rp.finish_signin(&state, &response, &stored).unwrap().updated_passkey_json.is_some());
        assert!(matches!(webauthn::mark_used(&t.db, "AAAA", None, Timestamp::now()), Err(StoreError::NotFound(_))));

        let recs = records(&t);
        let added = recs.iter().find(|r| r.action == Action::SecondFactorAdded.key()).expect("second_factor_added");
        assert_eq!((added.aidant, added.organisation), (Some(aidant), Some(org)), "{}", t.name());
        assert_eq!(details(added), serde_json::json!({"kind": "security_key", "device": row}));
    }
}

/// A registered key and its stored passkey, without a database.
fn registered(aidant: i64) -> (Passkeys, SoftAuthenticator, NewCredential) {
    let rp = rp();
    let mut key = SoftAuthenticator::new();
    let new = register(&rp, &mut key, aidant, &[]);
    (rp, key, new)
}

#[test]
fn a_signature_from_another_authenticator_is_refused() {
    let (rp, mut key, new) = registered(7);
    let stored = vec![new.passkey_json.clone()];

    // A key that signs with another private key.
    let (options, state) = rp.start_signin().unwrap();
    key.bad_signature = true;
    let forged = key.sign_in(&options, ORIGIN);
    assert_generic(&rp.finish_signin(&state, &forged, &stored).unwrap_err());
    key.bad_signature = false;

    // Another authenticator holding a credential for the same account (same user
    // handle) but never registered: its credential is not among the stored ones.
    let mut other = SoftAuthenticator::new();
    let (reg_options, _) = rp.start_registration(7, "awa@exemple.fr", "Awa Diallo", &[]).unwrap();
    other.register(&reg_options, ORIGIN);
    let (options, state) = rp.start_signin().unwrap();
    let stranger = other.sign_in(&options, ORIGIN);
    assert_eq!(rp.identify(&stranger).unwrap().0, 7, "the user handle alone proves nothing");
    assert_generic(&rp.finish_signin(&state, &stranger, &stored).unwrap_err());

    // The other authenticator's assertion relabelled with the registered credential id.
    let mut relabelled = stranger.clone();
    relabelled["id"] = new.credential_id.clone().into();
    relabelled["rawId"] = new.credential_id.clone().into();
    let e = rp.finish_signin(&state, &relabelled, &stored).unwrap_err();
    assert_generic(&e);
    assert!(e.detail().contains("AuthenticationFailure"), "{}", e.detail());

    // The genuine key still works.
    let (options, state) = rp.start_signin().unwrap();
    let good = key.sign_in(&options, ORIGIN);
    assert!(rp.finish_signin(&state, &good, &stored).is_ok());
}

#[test]
fn replayed_and_tampered_assertions_are_refused() {
    let (rp, mut key, new) = registered(7);
    let stored = vec![new.passkey_json.clone()];
    let (options, state) = rp.start_signin().unwrap();
    let response = key.sign_in(&options, ORIGIN);

    // Replay against a newer challenge.
    let (_, later_state) = rp.start_signin().unwrap();
    let e = rp.finish_signin(&later_state, &response, &stored).unwrap_err();
    assert!(e.detail().contains("MismatchedChallenge"), "{}", e.detail());

    // Tampered authenticator data (counter pushed up by hand): the signature breaks.
    let mut auth_data = unb64(response["response"]["authenticatorData"].as_str().unwrap());
    auth_data[36] = auth_data[36].wrapping_add(100);
    let mut tampered = response.clone();
    tampered["response"]["authenticatorData"] = b64(&auth_data).into();
    assert_generic(&rp.finish_signin(&state, &tampered, &stored).unwrap_err());

    // Tampered client data (another origin, same challenge): refused.
    let client: Value = serde_json::from_slice(&unb64(response["response"]["clientDataJSON"].as_str().unwrap())).unwrap();
    let mut evil = client.clone();
    evil["origin"] = "https://aidants-exemple.fr".into();
    let mut tampered = response.clone();
    tampered["response"]["clientDataJSON"] = b64(evil.to_string().as_bytes()).into();
    assert_generic(&rp.finish_signin(&state, &tampered, &stored).unwrap_err());

    // A page on another origin cannot use the key either.
    let (options2, state2) = rp.start_signin().unwrap();
    let phished = key.sign_in(&options2, "https://aidants-exemple.fr");
    assert!(rp.finish_signin(&state2, &phished, &stored).unwrap_err().detail().contains("InvalidRPOrigin"));

    // Tampered user handle: another aidant's handle, or none at all.
    let mut tampered = response.clone();
    tampered["response"]["userHandle"] = b64(passkeys::user_handle(8).as_bytes()).into();
    assert_eq!(rp.identify(&tampered).unwrap().0, 8);
    assert_generic(&rp.finish_signin(&state, &tampered, &[]).unwrap_err()); // aidant 8 has no key
    tampered["response"]["userHandle"] = b64(b"someone-else-uuid").into();
    assert_generic(&rp.identify(&tampered).unwrap_err());
    tampered["response"]["userHandle"] = Value::Null;
    assert_generic(&rp.identify(&tampered).unwrap_err());
    assert_generic(&rp.finish_signin(&state, &tampered, &stored).unwrap_err());

    // Garbage in is an error, not a panic, and says nothing of the input.
    let e = rp.finish_signin(&state, &serde_json::json!({"id": "awa@exemple.fr"}), &stored).unwrap_err();
    assert_generic(&e);
    assert!(!e.detail().contains("awa@"), "{}", e.detail());
    assert_generic(&rp.finish_signin("{}", &response, &stored).unwrap_err());

    // The untouched response with its own state passes once.
    let ok = rp.finish_signin(&state, &response, &stored).unwrap();
    let stored = vec![ok.updated_passkey_json.unwrap()];
    let e = rp.finish_signin(&state, &response, &stored).unwrap_err();
    assert!(e.detail().contains("CredentialPossibleCompromise"), "replay caught by the counter: {}", e.detail());
}

#[test]
fn user_verification_is_required_at_registration_and_sign_in() {
    let rp = rp();
    let mut key = SoftAuthenticator::new();
    key.user_verification = false;
    let (options, state) = rp.start_registration(7, "awa@exemple.fr", "Awa Diallo", &[]).unwrap();
    let response = key.register(&options, ORIGIN);
    let e = rp.finish_registration(&state, &response).unwrap_err();
    assert!(e.detail().contains("UserNotVerified"), "{}", e.detail());

    let (rp, mut key, new) = registered(7);
    key.user_verification = false;
    let (options, state) = rp.start_signin().unwrap();
    let response = key.sign_in(&options, ORIGIN);
    let e = rp.finish_signin(&state, &response, &[new.passkey_json]).unwrap_err();
    assert_generic(&e);
    assert!(e.detail().contains("UserNotVerified"), "{}", e.detail());
}

#[test]
fn a_key_registers_once_and_a_non_discoverable_credential_is_refused() {
    let (rp, mut key, new) = registered(7);
    let (options, _) = rp.start_registration(7, "awa@exemple.fr", "Awa Diallo", std::slice::from_ref(&new.credential_id)).unwrap();
    assert_eq!(options["publicKey"]["excludeCredentials"][0]["id"], new.credential_id);
    assert!(key.try_register(&options, ORIGIN).is_err(), "the authenticator refuses an excluded credential");

    let (options, state) = rp.start_registration(7, "awa@exemple.fr", "Awa Diallo", &[]).unwrap();
    let mut response = SoftAuthenticator::new().register(&options, ORIGIN);
    response["clientExtensionResults"]["credProps"]["rk"] = false.into();
    let e = rp.finish_registration(&state, &response).unwrap_err();
    assert_ne!(e.message(), GENERIC_MESSAGE, "an actionable message");
    assert!(e.detail().contains("credProps"));

    // A response for another challenge, or from another origin, is refused.
    let (options, state) = rp.start_registration(7, "awa@exemple.fr", "Awa Diallo", &[]).unwrap();
    let (_, other_state) = rp.start_registration(7, "awa@exemple.fr", "Awa Diallo", &[]).unwrap();
    let response = SoftAuthenticator::new().register(&options, ORIGIN);
    assert_generic(&rp.finish_registration(&other_state, &response).unwrap_err());
    let phished = SoftAuthenticator::new().register(&options, "https://aidants-exemple.fr");
    assert_generic(&rp.finish_registration(&state, &phished).unwrap_err());
    assert!(rp.finish_registration(&state, &response).is_ok());
}

#[test]
fn the_last_way_to_sign_in_cannot_be_removed() {
    for t in TestDb::both() {
        let rp = rp();
        let (org, aidant) = setup(&t, "awa@exemple.fr");
        let mut key = SoftAuthenticator::new();
        let first = register(&rp, &mut key, aidant, &[]);
        let first_row = webauthn::add_credential(&t.db, aidant, &first.credential_id, &first.passkey_json, "Clé 1", Timestamp::now()).unwrap();

        // Only the key: refused, nothing written.
        let e = webauthn::remove_credential(&t.db, aidant, first_row, Timestamp::now()).unwrap_err();
        assert!(matches!(&e, StoreError::Conflict(m) if m == "Vous ne pouvez pas retirer votre dernier moyen de connexion : ajoutez-en un autre d'abord."), "{}: {e}", t.name());
        assert_eq!(webauthn::list_credentials(&t.db, aidant).unwrap().len(), 1);

        // Two keys: one can go, then the other cannot.
        let mut key2 = SoftAuthenticator::new();
        let second = register(&rp, &mut key2, aidant, std::slice::from_ref(&first.credential_id));
        let second_row = webauthn::add_credential(&t.db, aidant, &second.credential_id, &second.passkey_json, "Clé 2", Timestamp::now()).unwrap();
        webauthn::remove_credential(&t.db, aidant, first_row, Timestamp::now()).unwrap();
        assert!(matches!(webauthn::remove_credential(&t.db, aidant, second_row, Timestamp::now()), Err(StoreError::Conflict(_))));
        assert!(matches!(webauthn::remove_credential(&t.db, aidant, first_row, Timestamp::now()), Err(StoreError::NotFound(_))), "already gone");

        // With a TOTP app enrolled, the last key can be removed.
        admin::enroll_app(&t.db, &Sealer::new(&[42u8; 32]), "awa@exemple.fr").unwrap();
        webauthn::remove_credential(&t.db, aidant, second_row, Timestamp::now()).unwrap();
        assert!(webauthn::list_credentials(&t.db, aidant).unwrap().is_empty());
        assert!(webauthn::passkeys_of(&t.db, aidant).unwrap().is_empty());

        let recs = records(&t);
        let removed: Vec<&Record> = recs.iter().filter(|r| r.action == Action::SecondFactorRemoved.key()).collect();
        assert_eq!(removed.len(), 2, "{}", t.name());
        assert_eq!((removed[0].aidant, removed[0].organisation), (Some(aidant), Some(org)));
        assert_eq!(details(removed[0]), serde_json::json!({"kind": "security_key", "device": first_row}));
        assert_eq!(details(removed[1]), serde_json::json!({"kind": "security_key", "device": second_row}));
        let added = recs.iter().filter(|r| r.action == Action::SecondFactorAdded.key()).count();
        assert_eq!(added, 3, "two keys and the app");
    }
}

#[test]
fn credentials_are_unique_named_and_private_to_their_aidant() {
    for t in TestDb::both() {
        let rp = rp();
        let (_, awa) = setup(&t, "awa@exemple.fr");
        let o2 = admin::create_organisation(&t.db, "CCAS", "81234567800013", "", None).unwrap();
        let bob = admin::create_aidant(
            &t.db,
            &NewAidant { organisation_id: o2.id, email: "bob@exemple.fr", first_name: "Bob", last_name: "Martin", profession: "", referent: false },
        )
        .unwrap()
        .id;
        let new = register(&rp, &mut SoftAuthenticator::new(), awa, &[]);
        let now = Timestamp::now();
        for bad in ["", "   ", &"x".repeat(61)] {
            let e = webauthn::add_credential(&t.db, awa, &new.credential_id, &new.passkey_json, bad, now).unwrap_err();
            assert!(matches!(&e, StoreError::Invalid(m) if m.starts_with("nom de la clé")), "{}: {e}", t.name());
        }
        assert!(matches!(webauthn::add_credential(&t.db, awa, "pas un id!", &new.passkey_json, "Clé", now), Err(StoreError::Invalid(_))));
        let row = webauthn::add_credential(&t.db, awa, &new.credential_id, &new.passkey_json, &"é".repeat(60), now).unwrap();
        for who in [awa, bob] {
            let e = webauthn::add_credential(&t.db, who, &new.credential_id, &new.passkey_json, "Encore", now).unwrap_err();
            assert!(matches!(e, StoreError::Conflict(_)), "{}: {e}", t.name());
        }
        assert!(matches!(webauthn::add_credential(&t.db, 9999, "AAAA", "{}", "Clé", now), Err(StoreError::NotFound(_))));

        // Bob (with his own TOTP app) cannot remove Awa's key, nor see it.
        admin::enroll_app(&t.db, &Sealer::new(&[42u8; 32]), "bob@exemple.fr").unwrap();
        assert!(matches!(webauthn::remove_credential(&t.db, bob, row, now), Err(StoreError::NotFound(_))), "{}", t.name());
        assert!(webauthn::list_credentials(&t.db, bob).unwrap().is_empty());
        assert_eq!(webauthn::list_credentials(&t.db, awa).unwrap().len(), 1);

        let recs = records(&t);
        let keys_added = recs.iter().filter(|r| r.action == Action::SecondFactorAdded.key() && details(r)["kind"] == "security_key").count();
        assert_eq!(keys_added, 1, "{}: refused additions write nothing", t.name());
        assert!(!recs.iter().any(|r| r.action == Action::SecondFactorRemoved.key()));
    }
}
