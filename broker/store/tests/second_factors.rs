//! The référent's management of TOTP cards and apps, on both backends: association from
//! the stock, validation that learns the card's drift, dissociation, apps started and
//! confirmed, and the journal of each change.

use broker_core::totp::{CardRecord, Seed, APP_STEP, CARD_STEP, DIGITS};
use broker_core::Timestamp;
use broker_store::admin::{self, NewAidant};
use broker_store::schema::totp_devices;
use broker_store::second_factors::{self, Reason};
use broker_store::seal::Sealer;
use broker_store::{auth, journal, StoreError};
use broker_testkit::TestDb;
use diesel::prelude::*;

fn sealer() -> Sealer {
    Sealer::new(&[42u8; 32])
}

/// A quarter into a 60-second step.
const NOW: Timestamp = Timestamp::from_micros((1_800_000_000 + 15) * 1_000_000);

struct Setup {
    org: i64,
    referent: i64,
    aidant: i64,
    other_org_aidant: i64,
    card: Seed,
}

fn aidant(t: &TestDb, org: i64, email: &str, referent: bool) -> i64 {
    let n = NewAidant { organisation_id: org, email, first_name: "Awa", last_name: "Diallo", profession: "", referent };
    admin::create_aidant(&t.db, &n).unwrap().id
}

fn setup(t: &TestDb) -> Setup {
    let org = admin::create_organisation(&t.db, "France Services Lyon 3", "81234567800013", "", None).unwrap().id;
    let other = admin::create_organisation(&t.db, "CCAS de Roubaix", "21590512700019", "", None).unwrap().id;
    let card = Seed::generate();
    let cards = [
        CardRecord { serial: "C-0001".into(), seed: card.clone(), step: CARD_STEP, digits: DIGITS },
        CardRecord { serial: "C-0002".into(), seed: Seed::generate(), step: CARD_STEP, digits: DIGITS },
    ];
    admin::import_cards(&t.db, &sealer(), &cards).unwrap();
    Setup {
        org,
        referent: aidant(t, org, "referente@exemple.fr", true),
        aidant: aidant(t, org, "awa@exemple.fr", false),
        other_org_aidant: aidant(t, other, "binta@exemple.fr", false),
        card,
    }
}

/// (drift_steps, last_used_step, confirmed) of a device.
fn device_state(t: &TestDb, id: i64) -> Option<(i32, Option<i64>, bool)> {
    t.db.read(|c| {
        Ok(totp_devices::table
            .find(id)
            .select((totp_devices::drift_steps, totp_devices::last_used_step, totp_devices::confirmed_at))
            .first::<(i32, Option<i64>, Option<i64>)>(c)
            .optional()?)
    })
    .unwrap()
    .map(|(d, l, c)| (d, l, c.is_some()))
}

/// (action, aidant, organisation, details) of every journal entry.
fn entries(t: &TestDb) -> Vec<(String, Option<i64>, Option<i64>, serde_json::Value)> {
    broker_testkit::journal(&t.db, |c| journal::page(c, 0, 1000))
        .unwrap()
        .into_iter()
        .map(|r| (r.action, r.aidant, r.organisation, serde_json::from_str(&r.details).unwrap()))
        .collect()
}

/// A 6-digit code that is none of `seed`'s codes in steps `around - 2 ..= around + 2`.
fn wrong_code(seed: &Seed, step: u64, around: Timestamp) -> String {
    let near: Vec<String> = (-2..=2).map(|d| seed.code_at(step, DIGITS, around.plus_seconds(d * step as i64))).collect();
    (0..).map(|n: u32| format!("{:06}", (n * 137_713) % 1_000_000)).find(|c| !near.contains(c)).unwrap()
}

#[test]
fn a_drifting_card_is_validated_and_then_signs_in() {
    for t in TestDb::both() {
        let s = setup(&t);
        let device = second_factors::associate_card(&t.db, s.org, s.aidant, " C-0001 ", s.referent, NOW).unwrap();
        assert_eq!(device_state(&t, device), Some((0, None, false)), "{}", t.name());
        // Not validated yet: the card cannot be used to sign in.
        let now_code = s.card.code_at(CARD_STEP, DIGITS, NOW);
        assert_eq!(auth::verify_totp(&t.db, &sealer(), s.aidant, &now_code, NOW).unwrap(), None, "{}", t.name());

        // The card's clock runs 3 steps ahead.
        let shown = s.card.code_at(CARD_STEP, DIGITS, NOW.plus_seconds(3 * 60));
        let bad = wrong_code(&s.card, CARD_STEP, NOW);
        let err = second_factors::validate_card(&t.db, &sealer(), s.org, s.aidant, device, &bad, s.referent, NOW).unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(m) if m.contains("Le code ne correspond pas")), "{}: {err}", t.name());
        assert_eq!(device_state(&t, device), Some((0, None, false)), "{}: nothing learned from a wrong code", t.name());

        let drift = second_factors::validate_card(&t.db, &sealer(), s.org, s.aidant, device, &shown, s.referent, NOW).unwrap();
        assert_eq!(drift, 3, "{}", t.name());
        let t_now = NOW.unix_seconds() as i64 / 60;
        assert_eq!(device_state(&t, device), Some((3, Some(t_now + 3), true)), "{}", t.name());
        let again = second_factors::validate_card(&t.db, &sealer(), s.org, s.aidant, device, &shown, s.referent, NOW).unwrap_err();
        assert!(matches!(again, StoreError::Conflict(_)), "{}", t.name());

        // Two minutes later, the card (still 3 steps ahead) signs in with the ±1 window.
        let later = NOW.plus_seconds(120);
        let code = s.card.code_at(CARD_STEP, DIGITS, later.plus_seconds(3 * 60));
        let m = auth::verify_totp(&t.db, &sealer(), s.aidant, &code, later).unwrap();
        assert_eq!(m.map(|m| m.device_id), Some(device), "{}: the drifting card signs in", t.name());
        let random = wrong_code(&s.card, CARD_STEP, later.plus_seconds(3 * 60));
        assert_eq!(auth::verify_totp(&t.db, &sealer(), s.aidant, &random, later.plus_seconds(60)).unwrap(), None, "{}", t.name());

        let e = entries(&t);
        let added = e.iter().find(|x| x.0 == "second_factor_added" && x.1 == Some(s.aidant)).expect("added entry");
        assert_eq!(added.2, Some(s.org));
        assert_eq!((added.3["kind"].as_str(), added.3["serial"].as_str(), added.3["by"].as_i64()), (Some("totp_card"), Some("C-0001"), Some(s.referent)));
        let validated: Vec<_> = e.iter().filter(|x| x.0 == "second_factor_validated").collect();
        assert_eq!(validated.len(), 1, "{}", t.name());
        assert_eq!((validated[0].1, validated[0].2), (Some(s.aidant), Some(s.org)));
        assert_eq!((validated[0].3["drift"].as_i64(), validated[0].3["by"].as_i64()), (Some(3), Some(s.referent)));
    }
}

#[test]
fn a_card_belongs_to_one_aidant_and_unknown_serials_are_refused() {
    for t in TestDb::both() {
        let s = setup(&t);
        let other = aidant(&t, s.org, "chloe@exemple.fr", false);
        second_factors::associate_card(&t.db, s.org, s.aidant, "C-0001", s.referent, NOW).unwrap();
        let before = entries(&t).len();
        for who in [s.aidant, other] {
            let err = second_factors::associate_card(&t.db, s.org, who, "C-0001", s.referent, NOW).unwrap_err();
            assert!(matches!(&err, StoreError::Conflict(m) if m.contains("déjà associée")), "{}: {err}", t.name());
        }
        let err = second_factors::associate_card(&t.db, s.org, other, "C-9999", s.referent, NOW).unwrap_err();
        assert!(matches!(&err, StoreError::NotFound(m) if m.contains("Aucune carte ne porte le numéro de série « C-9999 »")), "{}: {err}", t.name());
        let err = second_factors::associate_card(&t.db, s.org, other, "  ", s.referent, NOW).unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{}", t.name());
        assert_eq!(entries(&t).len(), before, "{}: refusals journal nothing", t.name());
        assert_eq!(second_factors::devices(&t.db, s.org, other).unwrap(), vec![], "{}", t.name());
        let mine = second_factors::devices(&t.db, s.org, s.aidant).unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!((mine[0].card_serial.as_deref(), mine[0].confirmed), (Some("C-0001"), false));
    }
}

#[test]
fn a_member_of_another_organisation_is_not_found() {
    for t in TestDb::both() {
        let s = setup(&t);
        let before = entries(&t).len();
        let x = s.other_org_aidant;
        let not_found = |r: Result<(), StoreError>| assert!(matches!(r, Err(StoreError::NotFound(_))), "{}: {r:?}", t.name());
        not_found(second_factors::associate_card(&t.db, s.org, x, "C-0001", s.referent, NOW).map(|_| ()));
        not_found(second_factors::devices(&t.db, s.org, x).map(|_| ()));
        not_found(second_factors::start_app(&t.db, &sealer(), s.org, x, s.referent, NOW).map(|_| ()));
        not_found(second_factors::pending_app(&t.db, &sealer(), s.org, x).map(|_| ()));
        // A device of that aidant, reached through the organisation's référent.
        let device = second_factors::associate_card(&t.db, s.org, s.aidant, "C-0002", s.referent, NOW).unwrap();
        let before_device = entries(&t).len();
        assert_eq!(before_device, before + 1);
        not_found(second_factors::validate_card(&t.db, &sealer(), s.org, x, device, "123456", s.referent, NOW).map(|_| ()));
        not_found(second_factors::dissociate_card(&t.db, s.org, x, device, &Reason::Lost, s.referent, NOW));
        not_found(second_factors::confirm_app(&t.db, &sealer(), s.org, x, device, "123456", s.referent, NOW));
        // The right aidant but a device that is not theirs.
        let other = aidant(&t, s.org, "chloe@exemple.fr", false);
        not_found(second_factors::dissociate_card(&t.db, s.org, other, device, &Reason::Lost, s.referent, NOW));
        assert_eq!(entries(&t).len(), before_device + 1, "{}: only the new aidant is journaled", t.name());
        assert!(device_state(&t, device).is_some());
    }
}

#[test]
fn a_dissociated_card_is_journaled_and_can_be_associated_again() {
    for t in TestDb::both() {
        let s = setup(&t);
        let device = second_factors::associate_card(&t.db, s.org, s.aidant, "C-0001", s.referent, NOW).unwrap();
        let code = s.card.code_at(CARD_STEP, DIGITS, NOW);
        second_factors::validate_card(&t.db, &sealer(), s.org, s.aidant, device, &code, s.referent, NOW).unwrap();
        assert!(matches!(Reason::parse("autre", " "), Err(StoreError::Invalid(_))));
        assert!(matches!(Reason::parse("", ""), Err(StoreError::Invalid(_))));
        let reason = Reason::parse("autre", "Carte oubliée dans un bureau fermé").unwrap();
        second_factors::dissociate_card(&t.db, s.org, s.aidant, device, &reason, s.referent, NOW).unwrap();
        assert_eq!(device_state(&t, device), None, "{}", t.name());
        let later = NOW.plus_seconds(60);
        let code = s.card.code_at(CARD_STEP, DIGITS, later);
        assert_eq!(auth::verify_totp(&t.db, &sealer(), s.aidant, &code, later).unwrap(), None, "{}", t.name());
        let e = entries(&t);
        let removed = e.iter().find(|x| x.0 == "second_factor_removed").expect("removed entry");
        assert_eq!((removed.1, removed.2), (Some(s.aidant), Some(s.org)));
        assert_eq!(removed.3["reason"].as_str(), Some("autre"));
        assert_eq!(removed.3["reason_text"].as_str(), Some("Carte oubliée dans un bureau fermé"));
        assert_eq!((removed.3["serial"].as_str(), removed.3["by"].as_i64()), (Some("C-0001"), Some(s.referent)));

        let other = aidant(&t, s.org, "chloe@exemple.fr", false);
        let again = second_factors::associate_card(&t.db, s.org, other, "C-0001", s.referent, NOW).unwrap();
        assert_ne!(again, device);
        second_factors::dissociate_card(&t.db, s.org, other, again, &Reason::Left, s.referent, NOW).unwrap();
        let e = entries(&t);
        assert_eq!(e.iter().filter(|x| x.0 == "second_factor_removed").count(), 2, "{}", t.name());
        assert_eq!(e.last().unwrap().3["reason"].as_str(), Some("depart"));
    }
}

#[test]
fn an_app_is_started_replaced_and_confirmed() {
    for t in TestDb::both() {
        let s = setup(&t);
        assert!(second_factors::pending_app(&t.db, &sealer(), s.org, s.aidant).unwrap().is_none());
        let (first, _) = second_factors::start_app(&t.db, &sealer(), s.org, s.aidant, s.referent, NOW).unwrap();
        let (device, seed) = second_factors::start_app(&t.db, &sealer(), s.org, s.aidant, s.referent, NOW).unwrap();
        assert_eq!(device_state(&t, first), None, "{}: starting again replaces the unconfirmed app", t.name());
        let (pending, shown) = second_factors::pending_app(&t.db, &sealer(), s.org, s.aidant).unwrap().unwrap();
        assert_eq!((pending, &shown), (device, &seed));
        let code = seed.code_at(APP_STEP, DIGITS, NOW);
        assert_eq!(auth::verify_totp(&t.db, &sealer(), s.aidant, &code, NOW).unwrap(), None, "{}: unconfirmed", t.name());

        let bad = wrong_code(&seed, APP_STEP, NOW);
        let err = second_factors::confirm_app(&t.db, &sealer(), s.org, s.aidant, device, &bad, s.referent, NOW).unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{}", t.name());
        second_factors::confirm_app(&t.db, &sealer(), s.org, s.aidant, device, &code, s.referent, NOW).unwrap();
        assert_eq!(device_state(&t, device), Some((0, Some(NOW.unix_seconds() as i64 / 30), true)), "{}", t.name());
        assert!(second_factors::pending_app(&t.db, &sealer(), s.org, s.aidant).unwrap().is_none());
        assert_eq!(auth::verify_totp(&t.db, &sealer(), s.aidant, &code, NOW).unwrap(), None, "{}: the confirmation code is used", t.name());
        let next = NOW.plus_seconds(30);
        let m = auth::verify_totp(&t.db, &sealer(), s.aidant, &seed.code_at(APP_STEP, DIGITS, next), next).unwrap();
        assert_eq!(m.map(|m| m.device_id), Some(device), "{}", t.name());

        // A new start leaves the confirmed app in place.
        second_factors::start_app(&t.db, &sealer(), s.org, s.aidant, s.referent, NOW).unwrap();
        assert!(device_state(&t, device).is_some());
        let e = entries(&t);
        let added: Vec<_> = e.iter().filter(|x| x.0 == "second_factor_added" && x.3["kind"] == "totp_app").collect();
        assert_eq!(added.len(), 3, "{}", t.name());
        assert_eq!(added[1].3["replaces"], serde_json::json!([first]));
        assert!(added.iter().all(|x| x.1 == Some(s.aidant) && x.2 == Some(s.org) && x.3["by"].as_i64() == Some(s.referent)));
        let validated: Vec<_> = e.iter().filter(|x| x.0 == "second_factor_validated").collect();
        assert_eq!(validated.len(), 1);
        assert_eq!(validated[0].3["kind"].as_str(), Some("totp_app"));
    }
}

#[test]
fn an_aidant_of_another_organisation_too_gets_no_card_or_app_from_this_referent_but_loses_one() {
    for t in TestDb::both() {
        let s = setup(&t);
        let other = t.db.read(|c| broker_store::referent::memberships_of(c, s.other_org_aidant)).unwrap()[0].organisation_id;
        // Binta, of the other structure, joins this one as well.
        t.db.write(|c| {
            use broker_store::schema::memberships;
            diesel::insert_into(memberships::table)
                .values((memberships::aidant_id.eq(s.other_org_aidant), memberships::organisation_id.eq(s.org), memberships::role.eq("aidant"), memberships::created_at.eq(0i64)))
                .execute(c)?;
            Ok(())
        })
        .unwrap();
        let before = entries(&t).len();
        let refused = |r: Result<_, StoreError>| matches!(r, Err(StoreError::Conflict(m)) if m == broker_store::referent::NOT_ALL_YOURS);
        assert!(refused(second_factors::associate_card(&t.db, s.org, s.other_org_aidant, "C-0001", s.referent, NOW).map(|_| ())), "{}", t.name());
        assert!(refused(second_factors::start_app(&t.db, &sealer(), s.org, s.other_org_aidant, s.referent, NOW).map(|_| ())), "{}", t.name());
        assert_eq!(entries(&t).len(), before, "nothing written: {}", t.name());
        // A card the other structure's référent associated can be taken away from here.
        let theirs = aidant(&t, other, "referent-ailleurs@exemple.fr", true);
        t.db.write(|c| {
            use broker_store::schema::memberships;
            diesel::insert_into(memberships::table)
                .values((memberships::aidant_id.eq(theirs), memberships::organisation_id.eq(s.org), memberships::role.eq("referent"), memberships::created_at.eq(0i64)))
                .execute(c)?;
            Ok(())
        })
        .unwrap();
        let card = second_factors::associate_card(&t.db, s.org, s.other_org_aidant, "C-0001", theirs, NOW).expect("référent of both structures");
        second_factors::dissociate_card(&t.db, s.org, s.other_org_aidant, card, &Reason::Lost, s.referent, NOW).expect("taking a way out");
        assert_eq!(device_state(&t, card), None, "{}", t.name());
    }
}
