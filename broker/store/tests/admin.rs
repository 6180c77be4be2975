use broker_core::client::NewClient;
use broker_core::journal::Action;
use broker_core::totp::{CardRecord, Seed};
use broker_core::{Demarche, Timestamp};
use broker_store::admin::{self, NewAidant};
use broker_store::seal::Sealer;
use broker_store::{journal, StoreError};
use broker_testkit::TestDb;

fn sealer() -> Sealer {
    Sealer::new(&[42u8; 32])
}

fn actions(t: &TestDb) -> Vec<String> {
    broker_testkit::journal(&t.db, |c| journal::page(c, 0, 1000)).unwrap().into_iter().map(|r| r.action).collect()
}

fn aidant<'a>(org: i64, email: &'a str) -> NewAidant<'a> {
    NewAidant { organisation_id: org, email, first_name: "Awa", last_name: "Diallo", profession: "Médiatrice", referent: false }
}

#[test]
fn organisation_creation_is_journaled_and_restricted_demarches_kept() {
    for t in TestDb::both() {
        let o = admin::create_organisation(&t.db, "France Services Lyon 3", "81234567800013", "1 rue A", Some("social,argent")).unwrap();
        assert_eq!(o.allowed(), vec![Demarche::Social, Demarche::Argent]);
        let all = admin::create_organisation(&t.db, "CCAS", "81234567800013", "", None).unwrap();
        assert_eq!(all.allowed(), Demarche::ALL.to_vec());
        assert_eq!(admin::list_organisations(&t.db).unwrap().len(), 2);
        assert_eq!(actions(&t), vec!["organisation_created", "organisation_created"], "{}", t.name());
        let rec = broker_testkit::journal(&t.db, |c| journal::page(c, 0, 1)).unwrap().remove(0);
        assert_eq!(rec.organisation, Some(o.id));
    }
}

#[test]
fn bad_organisation_input_writes_nothing() {
    for t in TestDb::both() {
        for (siret, dem) in [("81234567800014", None), ("81234567800013", Some("social,impots"))] {
            let err = admin::create_organisation(&t.db, "X", siret, "", dem).unwrap_err();
            assert!(err.is_user_error(), "{err}");
        }
        assert!(admin::list_organisations(&t.db).unwrap().is_empty());
        assert!(actions(&t).is_empty(), "{}", t.name());
    }
}

#[test]
fn aidant_emails_are_unique_case_insensitively() {
    for t in TestDb::both() {
        let o = admin::create_organisation(&t.db, "S", "81234567800013", "", None).unwrap();
        let a = admin::create_aidant(&t.db, &NewAidant { referent: true, ..aidant(o.id, "Awa.Diallo@Exemple.fr") }).unwrap();
        assert_eq!(a.email, "awa.diallo@exemple.fr");
        let err = admin::create_aidant(&t.db, &aidant(o.id, "AWA.DIALLO@exemple.FR")).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{}: {err}", t.name());
        let err = admin::create_aidant(&t.db, &aidant(o.id + 100, "autre@exemple.fr")).unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{}: unknown organisation: {err}", t.name());
        let list = admin::list_aidants(&t.db, Some(o.id)).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].memberships, vec![(o.id, "referent".to_owned())]);
        assert_eq!(actions(&t), vec!["organisation_created", "aidant_created"], "{}", t.name());

        let d = admin::deactivate_aidant(&t.db, "awa.diallo@EXEMPLE.fr").unwrap();
        assert!(!d.active);
        assert!(matches!(admin::deactivate_aidant(&t.db, "awa.diallo@exemple.fr"), Err(StoreError::Conflict(_))));
        assert_eq!(actions(&t).last().unwrap(), Action::AidantDeactivated.key());
    }
}

fn card(serial: &str) -> CardRecord {
    CardRecord::parse(serial, &Seed::generate().base32(), "60", "6").unwrap()
}

#[test]
fn card_import_reports_every_duplicate_and_imports_nothing_then() {
    for t in TestDb::both() {
        assert_eq!(admin::import_cards(&t.db, &sealer(), &[card("A1"), card("A2")]).unwrap(), 2);
        let err = admin::import_cards(&t.db, &sealer(), &[card("B1"), card("A2"), card("B2"), card("B2")]).unwrap_err().to_string();
        assert!(err.contains("A2") && err.contains("B2") && !err.contains("B1"), "{}: {err}", t.name());
        assert_eq!(admin::count_cards(&t.db).unwrap(), 2, "{}: nothing half-imported", t.name());
        assert_eq!(actions(&t), vec!["totp_cards_imported"]);
    }
}

#[test]
fn an_enrolled_app_seed_is_sealed_at_rest_and_reads_back() {
    for t in TestDb::both() {
        let o = admin::create_organisation(&t.db, "S", "81234567800013", "", None).unwrap();
        let a = admin::create_aidant(&t.db, &aidant(o.id, "awa@exemple.fr")).unwrap();
        let (_, seed) = admin::enroll_app(&t.db, &sealer(), "awa@exemple.fr").unwrap();
        let stored: Option<String> = t.db.read(|c| {
            use broker_store::schema::totp_devices::dsl::*;
            use diesel::prelude::*;
            Ok(totp_devices.select(seed_sealed).first(c)?)
        }).unwrap();
        let stored = stored.unwrap();
        assert!(!stored.contains(&seed.base32()) && !stored.contains(&hex::encode(seed.bytes())));
        let back = admin::app_seed(&t.db, &sealer(), a.id).unwrap().unwrap();
        assert_eq!(back.code_at(30, 6, Timestamp::now()), seed.code_at(30, 6, Timestamp::now()));
        assert!(admin::app_seed(&t.db, &Sealer::new(&[1u8; 32]), a.id).is_err(), "another key cannot read it");
        assert!(matches!(admin::enroll_app(&t.db, &sealer(), "personne@exemple.fr"), Err(StoreError::NotFound(_))));
    }
}

#[test]
fn client_secrets_are_hashed_and_sealed_only_for_hs256() {
    for t in TestDb::both() {
        let es = NewClient::validate("FC", &["https://fc.exemple/cb".into()], &[], "ES256", "json").unwrap();
        let c = admin::create_client(&t.db, &sealer(), &es).unwrap();
        assert!(es.secret.matches_hash(&c.secret_hash));
        assert_ne!(c.secret_hash, es.secret.expose());
        assert!(c.secret_sealed.is_none());
        let hs = NewClient::validate("Legacy", &["https://p.exemple/cb".into(), "http://localhost:3000/cb".into()], &["https://p.exemple/bye".into()], "HS256", "jwt").unwrap();
        let c2 = admin::create_client(&t.db, &sealer(), &hs).unwrap();
        let opened = sealer().open(c2.secret_sealed.as_deref().unwrap(), &admin::client_context(&c2.client_id)).unwrap();
        assert_eq!(opened, hs.secret.expose().as_bytes());
        assert_eq!(c2.redirect_uri_list(), vec!["https://p.exemple/cb", "http://localhost:3000/cb"]);
        assert_eq!(admin::list_clients(&t.db).unwrap().len(), 2);
        let recs = broker_testkit::journal(&t.db, |c| journal::page(c, 0, 10)).unwrap();
        assert_eq!(recs[1].client.as_deref(), Some(c2.client_id.as_str()));
        assert!(!recs.iter().any(|r| r.details.contains(hs.secret.expose())), "no secret in the journal");
    }
}

#[test]
fn a_signing_key_change_is_journaled_with_its_file_and_not_without_it() {
    for t in TestDb::both() {
        let change = admin::SigningKeyChange { operation: "rotate", kid: "k1", alg: "RS256", via: "cli" };
        let mut written = false;
        admin::journal_signing_key(&t.db, &change, || {
            written = true;
            Ok(())
        })
        .unwrap();
        assert!(written);
        let rec = broker_testkit::journal(&t.db, |c| journal::page(c, 0, 10)).unwrap().remove(0);
        assert_eq!(rec.action, Action::SigningKeyRotated.key());
        assert_eq!(rec.details, r#"{"alg":"RS256","kid":"k1","operation":"rotate","via":"cli"}"#, "{}", t.name());

        let err = admin::journal_signing_key(&t.db, &change, || Err("disque plein".into())).unwrap_err();
        assert!(!err.is_user_error() && err.to_string().contains("disque plein"));
        assert_eq!(actions(&t).len(), 1, "{}: no entry without its file", t.name());
    }
}

#[test]
fn clients_registered_before_pairwise_subjects_stay_public_and_new_ones_are_pairwise() {
    use broker_core::client::SubjectType;
    use broker_store::schema::oidc_clients::dsl as oc;
    use diesel::prelude::*;
    for t in TestDb::both() {
        // A row as the broker wrote it before the subject columns existed.
        t.db.write(|c| {
            diesel::insert_into(oc::oidc_clients)
                .values((
                    oc::client_id.eq("ancien-client"),
                    oc::name.eq("Service historique"),
                    oc::secret_hash.eq("00"),
                    oc::redirect_uris.eq("https://ancien.exemple/cb"),
                    oc::id_token_alg.eq("ES256"),
                    oc::userinfo_format.eq("json"),
                    oc::created_at.eq(0i64),
                ))
                .execute(c)
                .map_err(StoreError::from)
        })
        .unwrap();
        let n = NewClient::validate("Nouveau", &["https://nouveau.exemple/cb".into()], &[], "ES256", "json").unwrap();
        admin::create_client(&t.db, &sealer(), &n).unwrap();
        let s = NewClient::validate("Secteur", &["https://s.exemple/cb".into()], &[], "RS256", "json")
            .unwrap()
            .with_subject("pairwise", Some("demarches.exemple.fr"))
            .unwrap()
            .with_act_claim(true);
        admin::create_client(&t.db, &sealer(), &s).unwrap();
        let list = admin::list_clients(&t.db).unwrap();
        let old = list.iter().find(|c| c.client_id == "ancien-client").unwrap();
        assert_eq!((old.subject_type.as_str(), old.sector_identifier.as_deref(), old.act_claim), ("public", None, false), "{}", t.name());
        assert_eq!(old.subject_rule().subject_type, SubjectType::Public);
        let new = list.iter().find(|c| c.client_id == n.client_id).unwrap();
        assert_eq!(new.subject_type, "pairwise");
        assert_eq!(new.subject_rule().sector, n.client_id, "its own sector");
        let sec = list.iter().find(|c| c.client_id == s.client_id).unwrap();
        assert_eq!((sec.sector_identifier.as_deref(), sec.act_claim), (Some("demarches.exemple.fr"), true));
        assert_eq!(sec.subject_rule().sector, "demarches.exemple.fr");
        let recs = broker_testkit::journal(&t.db, |c| journal::page(c, 0, 10)).unwrap();
        assert!(recs.last().unwrap().details.contains(r#""act_claim":true"#) && recs.last().unwrap().details.contains(r#""subject_type":"pairwise""#));
    }
}
