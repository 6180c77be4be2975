use super::*;

fn rfc_seed() -> Seed {
    Seed::from_bytes(b"12345678901234567890".to_vec())
}

#[test]
fn rfc6238_sha1_vectors() {
    // RFC 6238 appendix B, SHA-1, 8 digits, 30-second step.
    let s = rfc_seed();
    for (t, code) in [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(s.code_at(30, 8, Timestamp::from_micros(t * 1_000_000)), code, "t={t}");
    }
}

#[test]
fn rfc4226_hotp_vectors_as_counter_steps() {
    // RFC 4226 appendix D: HOTP(counter) = TOTP at time counter*step.
    let expected = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];
    for (counter, code) in expected.iter().enumerate() {
        let t = Timestamp::from_micros(counter as i64 * 30 * 1_000_000);
        assert_eq!(&rfc_seed().code_at(30, 6, t), code, "counter {counter}");
    }
}

#[test]
fn base32_round_trip_and_otpauth_uri() {
    let s = Seed::generate();
    assert_eq!(Seed::from_base32(&s.base32().to_lowercase()).unwrap(), s);
    assert!(Seed::from_base32("JBSWY3DP").is_err(), "too short");
    assert!(Seed::from_base32("not base32!").is_err());
    let uri = s.otpauth_uri(30, 6, "marie@exemple.fr");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(&format!("secret={}", s.base32())));
    assert!(uri.contains("issuer=Aidants"));
}

#[test]
fn card_records_are_checked() {
    let seed = Seed::generate().base32();
    let c = CardRecord::parse(" C-0001 ", &seed, "60", "6").unwrap();
    assert_eq!((c.serial.as_str(), c.step, c.digits), ("C-0001", 60, 6));
    assert!(CardRecord::parse("", &seed, "60", "6").is_err());
    assert!(CardRecord::parse("C 1", &seed, "60", "6").is_err());
    assert!(CardRecord::parse("C1", &seed, "45", "6").is_err());
    assert!(CardRecord::parse("C1", &seed, "60", "7").is_err());
    assert!(CardRecord::parse("C1", "AAAA", "60", "6").is_err());
}
/// A fixed seed, so that these tests are deterministic (no chance collision).
fn fixed_seed() -> Seed {
    Seed::from_bytes(b"aidants-connect-test".to_vec())
}

/// An instant well inside step `counter` (a quarter of the way in).
fn in_step(counter: i64, step: u64) -> Timestamp {
    let step = step as i64;
    Timestamp::from_micros((counter * step + step / 4) * 1_000_000)
}

fn app_state() -> DeviceState {
    DeviceState { step: APP_STEP, digits: DIGITS, drift_steps: 0, last_used_counter: None }
}

const T: i64 = 58_000_000;

#[test]
fn codes_within_the_window_are_accepted() {
    let s = fixed_seed();
    let now = in_step(T, APP_STEP);
    for d in -WINDOW..=WINDOW {
        let code = s.code_at(APP_STEP, DIGITS, in_step(T + d, APP_STEP));
        assert_eq!(
            check(&s, &app_state(), &code, now),
            Some(Accepted { counter: T + d, drift_steps: d as i32 }),
            "offset {d}"
        );
    }
    let padded = format!("  {}\n", s.code_at(APP_STEP, DIGITS, now));
    assert!(check(&s, &app_state(), &padded, now).is_some(), "surrounding white space is ignored");
}

#[test]
fn codes_outside_the_window_are_refused() {
    let s = fixed_seed();
    let now = in_step(T, APP_STEP);
    for d in [-2, 2, -5, 5] {
        let code = s.code_at(APP_STEP, DIGITS, in_step(T + d, APP_STEP));
        assert_eq!(check(&s, &app_state(), &code, now), None, "offset {d}");
    }
    let other = Seed::from_bytes(b"another-device-seed!".to_vec()).code_at(APP_STEP, DIGITS, now);
    assert_eq!(check(&s, &app_state(), &other, now), None, "another device's code");
}

#[test]
fn a_drifting_card_is_followed_within_the_window() {
    let s = fixed_seed();
    let now = in_step(T, CARD_STEP);
    let card = DeviceState { step: CARD_STEP, digits: DIGITS, drift_steps: 0, last_used_counter: None };
    // The card's clock runs 3 steps ahead.
    let ahead = s.code_at(CARD_STEP, DIGITS, in_step(T + 3, CARD_STEP));
    assert_eq!(check(&s, &card, &ahead, now), None, "too far for a device with no learned drift");
    // After an earlier success at +2, the window is centred on +2.
    let learned = DeviceState { drift_steps: 2, last_used_counter: Some(T - 5), ..card };
    assert_eq!(check(&s, &learned, &ahead, now), Some(Accepted { counter: T + 3, drift_steps: 3 }));
    // The window is not widened: on time is now too far from the learned drift.
    let on_time = s.code_at(CARD_STEP, DIGITS, now);
    assert_eq!(check(&s, &learned, &on_time, now), None);
}

#[test]
fn the_learned_drift_is_clamped() {
    let s = fixed_seed();
    let now = in_step(T, APP_STEP);
    let state = DeviceState { drift_steps: MAX_DRIFT_STEPS, ..app_state() };
    let far = s.code_at(APP_STEP, DIGITS, in_step(T + i64::from(MAX_DRIFT_STEPS) + 1, APP_STEP));
    assert_eq!(check(&s, &state, &far, now).map(|a| a.drift_steps), Some(MAX_DRIFT_STEPS));
    let beyond = DeviceState { drift_steps: 50, ..app_state() };
    let code = s.code_at(APP_STEP, DIGITS, in_step(T + 50, APP_STEP));
    assert_eq!(check(&s, &beyond, &code, now), None, "a stored drift beyond the limit is clamped too");
}

#[test]
fn a_used_code_or_an_older_one_is_refused() {
    let s = fixed_seed();
    let now = in_step(T, APP_STEP);
    let code = s.code_at(APP_STEP, DIGITS, now);
    let first = check(&s, &app_state(), &code, now).unwrap();
    let used = DeviceState { last_used_counter: Some(first.counter), ..app_state() };
    assert_eq!(check(&s, &used, &code, now), None, "replay");
    let newer = DeviceState { last_used_counter: Some(T + 1), ..app_state() };
    let older = s.code_at(APP_STEP, DIGITS, now);
    assert_eq!(check(&s, &newer, &older, now), None, "older code after a newer one");
    let next = s.code_at(APP_STEP, DIGITS, in_step(T + 1, APP_STEP));
    assert_eq!(check(&s, &used, &next, now).map(|a| a.counter), Some(T + 1), "the next code still works");
}

#[test]
fn malformed_codes_are_refused() {
    let s = fixed_seed();
    let now = in_step(T, APP_STEP);
    let code = s.code_at(APP_STEP, DIGITS, now);
    for bad in [
        String::new(),
        code[..5].to_owned(),
        format!("{code}0"),
        format!("{} {}", &code[..3], &code[3..]),
        format!("+{}", &code[1..]),
        "12345a".to_owned(),
        "１２３４５６".to_owned(),
    ] {
        assert_eq!(check(&s, &app_state(), &bad, now), None, "{bad:?}");
    }
    let eight = DeviceState { digits: 8, ..app_state() };
    assert_eq!(check(&s, &eight, &code, now), None, "6 digits for an 8-digit device");
    let code8 = s.code_at(APP_STEP, 8, now);
    assert!(check(&s, &eight, &code8, now).is_some());
}

#[test]
fn rfc_seed_is_checked_at_the_rfc_instant() {
    // RFC 6238 appendix B: T = 1111111109 s gives 07081804 (8 digits, 30 s).
    let state = DeviceState { digits: 8, ..app_state() };
    let at = Timestamp::from_micros(1_111_111_109 * 1_000_000);
    assert_eq!(check(&rfc_seed(), &state, "07081804", at), Some(Accepted { counter: 37_037_036, drift_steps: 0 }));
}

#[test]
fn a_sixty_second_card_works() {
    let s = fixed_seed();
    let card = DeviceState { step: CARD_STEP, digits: DIGITS, drift_steps: 0, last_used_counter: None };
    let shown = in_step(T, CARD_STEP);
    let code = s.code_at(CARD_STEP, DIGITS, shown);
    // Still valid until the end of its minute, and one minute either side.
    assert!(check(&s, &card, &code, shown.plus_seconds(40)).is_some());
    assert_eq!(check(&s, &card, &code, shown.plus_seconds(60)).map(|a| a.drift_steps), Some(-1));
    assert_eq!(check(&s, &card, &code, shown.plus_seconds(120)), None);
    // The same code read as a 30-second device does not match.
    let as_app = DeviceState { step: APP_STEP, ..card };
    assert_eq!(check(&s, &as_app, &code, shown), None);
}

#[test]
fn device_kinds_round_trip() {
    for k in [DeviceKind::App, DeviceKind::Card] {
        assert_eq!(DeviceKind::from_key(k.key()), Some(k));
    }
    assert_eq!(DeviceKind::from_key("webauthn"), None);
}
