use broker_core::journal::Action;
use broker_core::totp::{CardRecord, DeviceKind, Seed, APP_STEP, CARD_STEP, DIGITS};
use broker_core::Timestamp;
use broker_store::admin::{self, Aidant, NewAidant};
use broker_store::auth::{self, TotpMatch};
use broker_store::schema::totp_devices;
use broker_store::seal::Sealer;
use broker_store::{journal, StoreError};
use broker_testkit::TestDb;
use diesel::prelude::*;

fn sealer() -> Sealer {
    Sealer::new(&[42u8; 32])
}

/// A quarter into a 60-second step (so also inside a 30-second one): codes shown at
/// `NOW ± k steps` are unambiguous.
const NOW: Timestamp = Timestamp::from_micros((1_800_000_000 + 15) * 1_000_000);

fn actions(t: &TestDb) -> Vec<String> {
    broker_testkit::journal(&t.db, |c| journal::page(c, 0, 1000)).unwrap().into_iter().map(|r| r.action).collect()
}

fn aidant_with_app(t: &TestDb, org: i64, email: &str) -> (Aidant, Seed) {
    let n = NewAidant { organisation_id: org, email, first_name: "Awa", last_name: "Diallo", profession: "Médiatrice", referent: false };
    admin::create_aidant(&t.db, &n).unwrap();
    admin::enroll_app(&t.db, &sealer(), email).unwrap()
}

fn organisation(t: &TestDb) -> i64 {
    admin::create_organisation(&t.db, "France Services Lyon 3", "81234567800013", "", None).unwrap().id
}

/// (drift_steps, last_used_step) of a device.
fn device_state(t: &TestDb, id: i64) -> (i32, Option<i64>) {
    t.db.read(|c| {
        Ok(totp_devices::table
            .find(id)
            .select((totp_devices::drift_steps, totp_devices::last_used_step))
            .first(c)?)
    })
    .unwrap()
}

#[test]
fn an_app_code_is_accepted_once() {
    for t in TestDb::both() {
        let org = organisation(&t);
        let (a, seed) = aidant_with_app(&t, org, "awa@exemple.fr");
        let before = actions(&t);
        let code = seed.code_at(APP_STEP, DIGITS, NOW);

        let m = auth::verify_totp(&t.db, &sealer(), a.id, &format!(" {code} "), NOW).unwrap();
        let TotpMatch { device_id, kind } = m.unwrap_or_else(|| panic!("{}: valid code refused", t.name()));
        assert_eq!(kind, DeviceKind::App);
        assert_eq!(device_state(&t, device_id), (0, Some(NOW.unix_seconds() as i64 / 30)), "{}", t.name());

        assert_eq!(auth::verify_totp(&t.db, &sealer(), a.id, &code, NOW).unwrap(), None, "{}: replay", t.name());
        let later = NOW.plus_seconds(20);
        assert_eq!(auth::verify_totp(&t.db, &sealer(), a.id, &code, later).unwrap(), None, "{}: replay, same window", t.name());
        let next = seed.code_at(APP_STEP, DIGITS, NOW.plus_seconds(30));
        assert!(auth::verify_totp(&t.db, &sealer(), a.id, &next, later).unwrap().is_some(), "{}: next code", t.name());

        for bad in ["", "12345", "abcdef", "1234567"] {
            assert_eq!(auth::verify_totp(&t.db, &sealer(), a.id, bad, NOW).unwrap(), None, "{}: {bad:?}", t.name());
        }
        assert_eq!(actions(&t), before, "{}: verification journals nothing", t.name());

        let views = auth::totp_devices(&t.db, a.id).unwrap();
        assert_eq!(views.len(), 1);
        assert_eq!((views[0].id, views[0].kind.as_str(), views[0].step, views[0].confirmed), (device_id, "totp_app", 30, true));
        assert_eq!(views[0].card_serial, None);

        // An unconfirmed device is not used for sign-in.
        t.db.write(|c| {
            Ok(diesel::update(totp_devices::table.find(device_id)).set(totp_devices::confirmed_at.eq(None::<i64>)).execute(c)?)
        })
        .unwrap();
        let code = seed.code_at(APP_STEP, DIGITS, NOW.plus_seconds(60));
        assert_eq!(auth::verify_totp(&t.db, &sealer(), a.id, &code, NOW.plus_seconds(60)).unwrap(), None, "{}", t.name());
        assert!(!auth::totp_devices(&t.db, a.id).unwrap()[0].confirmed);
    }
}

#[test]
fn a_code_from_another_aidants_device_is_refused() {
    for t in TestDb::both() {
        let org = organisation(&t);
        let (a, _) = aidant_with_app(&t, org, "awa@exemple.fr");
        let (b, seed_b) = aidant_with_app(&t, org, "binta@exemple.fr");
        let code_b = seed_b.code_at(APP_STEP, DIGITS, NOW);
        assert_eq!(auth::verify_totp(&t.db, &sealer(), a.id, &code_b, NOW).unwrap(), None, "{}", t.name());
        assert!(auth::verify_totp(&t.db, &sealer(), b.id, &code_b, NOW).unwrap().is_some(), "{}: still valid for its owner", t.name());
        assert!(auth::totp_devices(&t.db, a.id + b.id + 100).unwrap().is_empty());
    }
}

#[test]
fn only_active_aidants_are_found_and_bad_emails_give_none() {
    for t in TestDb::both() {
        let org = organisation(&t);
        let (a, seed) = aidant_with_app(&t, org, "awa@exemple.fr");
        let mut c = t.db.conn().unwrap();
        let found = auth::find_active_aidant(&mut c, "  Awa@EXEMPLE.fr ").unwrap().expect("active aidant found");
        assert_eq!(found.id, a.id);
        for email in ["personne@exemple.fr", "pas-une-adresse", "", "a@b", "awa@exemple.fr@x"] {
            assert!(auth::find_active_aidant(&mut c, email).unwrap().is_none(), "{}: {email:?}", t.name());
        }
        drop(c);

        admin::deactivate_aidant(&t.db, "awa@exemple.fr").unwrap();
        let mut c = t.db.conn().unwrap();
        assert!(auth::find_active_aidant(&mut c, "awa@exemple.fr").unwrap().is_none(), "{}", t.name());
        drop(c);
        let code = seed.code_at(APP_STEP, DIGITS, NOW);
        assert_eq!(auth::verify_totp(&t.db, &sealer(), a.id, &code, NOW).unwrap(), None, "{}: deactivated", t.name());
    }
}

#[test]
fn a_drifting_sixty_second_card_is_attached_and_followed() {
    for t in TestDb::both() {
        let org = organisation(&t);
        let (a, _) = aidant_with_app(&t, org, "awa@exemple.fr");
        let seed = Seed::generate();
        let card = CardRecord::parse("C-0042", &seed.base32(), "60", "6").unwrap();
        admin::import_cards(&t.db, &sealer(), &[card]).unwrap();

        assert!(matches!(auth::attach_card(&t.db, a.id, "C-9999", NOW), Err(StoreError::NotFound(m)) if m.contains("carte inconnue : C-9999")));
        let device = auth::attach_card(&t.db, a.id, " C-0042 ", NOW).unwrap();
        assert!(matches!(auth::attach_card(&t.db, a.id, "C-0042", NOW), Err(StoreError::Conflict(_))), "{}", t.name());

        let rec = broker_testkit::journal(&t.db, |c| journal::page(c, 0, 100)).unwrap().pop().unwrap();
        assert_eq!(rec.action, Action::SecondFactorAdded.key());
        assert_eq!(rec.aidant, Some(a.id));
        assert_eq!(rec.organisation, Some(org));
        assert!(rec.details.contains(r#""kind":"totp_card""#) && rec.details.contains(r#""serial":"C-0042""#), "{}", rec.details);
        assert!(!rec.details.contains(&seed.base32()));

        let views = auth::totp_devices(&t.db, a.id).unwrap();
        let v = views.iter().find(|v| v.id == device).unwrap();
        assert_eq!((v.kind.as_str(), v.card_serial.as_deref(), v.step, v.confirmed), ("totp_card", Some("C-0042"), 60, true));

        // The card's clock runs 3 minutes ahead: too far for a device with no drift.
        let ahead = |now: Timestamp, steps: i64| seed.code_at(CARD_STEP, DIGITS, now.plus_seconds(steps * 60));
        assert_eq!(auth::verify_totp(&t.db, &sealer(), a.id, &ahead(NOW, 3), NOW).unwrap(), None, "{}", t.name());

        // Learned step by step: +1 is within the window, then +2, then +3.
        let base = NOW.unix_seconds() as i64 / 60;
        for (i, steps) in [1, 2, 3].into_iter().enumerate() {
            let now = NOW.plus_seconds(i as i64 * 60);
            let m = auth::verify_totp(&t.db, &sealer(), a.id, &ahead(now, steps), now).unwrap();
            assert_eq!(m, Some(TotpMatch { device_id: device, kind: DeviceKind::Card }), "{}: +{steps}", t.name());
            assert_eq!(device_state(&t, device), (steps as i32, Some(base + i as i64 + steps)), "{}", t.name());
        }

        // Ten minutes later, the card is still 3 minutes ahead: the learned drift is used.
        let later = NOW.plus_seconds(600);
        assert_eq!(
            auth::verify_totp(&t.db, &sealer(), a.id, &seed.code_at(CARD_STEP, DIGITS, later), later).unwrap(),
            None,
            "{}: an on-time code is now outside the window",
            t.name()
        );
        assert!(auth::verify_totp(&t.db, &sealer(), a.id, &ahead(later, 3), later).unwrap().is_some(), "{}", t.name());
        assert_eq!(device_state(&t, device), (3, Some(later.unix_seconds() as i64 / 60 + 3)));
    }
}

#[test]
fn cards_cannot_be_attached_to_unknown_or_deactivated_aidants() {
    for t in TestDb::both() {
        let org = organisation(&t);
        let (a, _) = aidant_with_app(&t, org, "awa@exemple.fr");
        let card = CardRecord::parse("C-1", &Seed::generate().base32(), "60", "6").unwrap();
        admin::import_cards(&t.db, &sealer(), &[card]).unwrap();
        assert!(matches!(auth::attach_card(&t.db, a.id + 100, "C-1", NOW), Err(StoreError::NotFound(_))));
        admin::deactivate_aidant(&t.db, "awa@exemple.fr").unwrap();
        let before = actions(&t);
        assert!(matches!(auth::attach_card(&t.db, a.id, "C-1", NOW), Err(StoreError::Conflict(_))));
        assert_eq!(actions(&t), before, "{}: nothing written", t.name());
    }
}

#[test]
fn two_requests_racing_with_the_same_code_get_one_acceptance() {
    for t in TestDb::both() {
        let org = organisation(&t);
        let (a, seed) = aidant_with_app(&t, org, "awa@exemple.fr");
        for round in 0..5i64 {
            let now = NOW.plus_seconds(round * 30);
            let code = seed.code_at(APP_STEP, DIGITS, now);
            let barrier = std::sync::Barrier::new(2);
            let results: Vec<Option<TotpMatch>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            auth::verify_totp(&t.db, &sealer(), a.id, &code, now).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(results.iter().filter(|r| r.is_some()).count(), 1, "{} round {round}: {results:?}", t.name());
        }
    }
}
