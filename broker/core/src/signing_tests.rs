use super::*;

const HOUR: i64 = 3600;
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "k", "oth"];

fn t0() -> Timestamp {
    Timestamp::from_micros(1_800_000_000_000_000)
}

fn kids(keys: Vec<&SigningKey>) -> Vec<String> {
    keys.into_iter().map(|k| k.kid().to_owned()).collect()
}

fn jwks_kids(set: &KeySet, t: Timestamp) -> Vec<String> {
    set.jwks(t)["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn kids_are_random_url_safe_and_22_characters() {
    let (a, b) = (new_kid(), new_kid());
    assert_ne!(a, b);
    assert_eq!(a.len(), 22);
    assert!(valid_kid(&a));
    assert!(!valid_kid("../seal.key") && !valid_kid("") && !valid_kid("a b"));
}

#[test]
fn alg_parse_accepts_es256_and_rs256_only() {
    assert_eq!(Alg::parse("ES256").unwrap(), Alg::Es256);
    assert_eq!(Alg::parse("RS256").unwrap(), Alg::Rs256);
    for bad in ["HS256", "es256", "none", ""] {
        assert!(Alg::parse(bad).unwrap_err().0.contains("ES256 ou RS256"), "{bad}");
    }
}

#[test]
fn the_first_key_signs_at_once_and_generate_refuses_a_second_one_of_its_algorithm() {
    let mut set = KeySet::default();
    assert!(set.signing_key_for(Alg::Es256, t0()).is_none());
    let kid = set.generate(Alg::Es256, t0()).unwrap().kid().to_owned();
    assert_eq!(set.signing_key_for(Alg::Es256, t0()).unwrap().kid(), kid);
    assert!(set.signing_key_for(Alg::Rs256, t0()).is_none(), "an ES256 key does not sign RS256");
    assert!(set.signing_key_for(Alg::Es256, t0().plus_seconds(-1)).is_none(), "nothing signs before the key exists");
    assert_eq!(jwks_kids(&set, t0()), vec![kid.clone()]);
    let e = set.generate(Alg::Es256, t0()).unwrap_err();
    assert!(e.is_user_error() && e.to_string().contains("broker keys rotate --alg ES256"), "{e}");
    let e = KeySet::default().rotate(Alg::Es256, t0(), HOUR).unwrap_err();
    assert!(e.is_user_error() && e.to_string().contains("broker keys generate --alg ES256"), "{e}");
    // A key of the other algorithm is not a key to rotate from.
    let e = set.rotate(Alg::Rs256, t0(), HOUR).unwrap_err().to_string();
    assert!(e.contains("broker keys generate --alg RS256"), "{e}");
    // The first key of the other algorithm: allowed, and it signs at once beside the first.
    let rsa = set.generate(Alg::Rs256, t0().plus_seconds(1)).unwrap().kid().to_owned();
    assert_eq!(kids(set.signing_keys(t0().plus_seconds(1))), vec![kid.clone(), rsa.clone()]);
    assert!(set.generate(Alg::Rs256, t0().plus_seconds(2)).unwrap_err().to_string().contains("--alg RS256"));
    assert_eq!(set.keys().len(), 2, "refusals add nothing");
}

#[test]
fn a_rotated_key_is_published_at_once_and_signs_exactly_at_active_from() {
    let mut set = KeySet::first(Alg::Es256, t0()).unwrap();
    let old = set.keys()[0].kid().to_owned();
    let later = t0().plus_seconds(10 * HOUR);
    let new = set.rotate(Alg::Es256, later, HOUR).unwrap().kid().to_owned();
    let active = later.plus_seconds(HOUR);
    assert_eq!(set.get(&new).unwrap().active_from(), active);

    // Published from its creation, before it signs anything.
    assert_eq!(jwks_kids(&set, later), vec![new.clone(), old.clone()]);
    assert!(!jwks_kids(&set, later.plus_seconds(-1)).contains(&new), "not before it exists");
    assert_eq!(set.signing_key_for(Alg::Es256, later).unwrap().kid(), old);
    let just_before = Timestamp::from_micros(active.micros() - 1);
    assert_eq!(set.signing_key_for(Alg::Es256, just_before).unwrap().kid(), old);
    assert_eq!(set.info(&new, just_before).unwrap().state, KeyState::Pending);

    // The switch happens at active_from exactly.
    assert_eq!(set.signing_key_for(Alg::Es256, active).unwrap().kid(), new);
    assert_eq!(set.info(&old, active).unwrap().state, KeyState::Superseded);
    assert_eq!(set.info(&old, active).unwrap().stopped_signing_at, Some(active.rfc3339()));

    // The old key stays published for the grace period after it stopped signing, then leaves.
    let grace_end = active.plus_seconds(RETIRED_KEY_GRACE_SECONDS);
    assert_eq!(jwks_kids(&set, Timestamp::from_micros(grace_end.micros() - 1)), vec![new.clone(), old.clone()]);
    assert_eq!(jwks_kids(&set, grace_end), vec![new.clone()]);
    assert!(!set.info(&old, grace_end).unwrap().published);
    assert_eq!(set.keys().len(), 2, "the key itself is kept");
}

#[test]
fn next_publication_change_names_the_instants_where_the_jwks_changes() {
    let mut set = KeySet::first(Alg::Es256, t0()).unwrap();
    assert_eq!(set.next_publication_change(t0()), None);
    let later = t0().plus_seconds(HOUR);
    set.rotate(Alg::Es256, later, 60).unwrap();
    assert_eq!(set.next_publication_change(t0()), Some(later));
    assert_eq!(set.next_publication_change(later), Some(later.plus_seconds(60 + RETIRED_KEY_GRACE_SECONDS)));
}

#[test]
fn the_only_signing_key_cannot_be_retired_until_its_successor_is_active() {
    let mut set = KeySet::first(Alg::Es256, t0()).unwrap();
    let old = set.keys()[0].kid().to_owned();
    let e = set.retire(&old, t0().plus_seconds(5)).unwrap_err();
    assert!(e.is_user_error() && e.to_string().contains("seule qui signe"), "{e}");
    assert!(set.get(&old).unwrap().retired_at().is_none(), "a refused retirement changes nothing");

    let new = set.rotate(Alg::Es256, t0().plus_seconds(10), HOUR).unwrap().kid().to_owned();
    let active = t0().plus_seconds(10 + HOUR);
    let e = set.retire(&old, Timestamp::from_micros(active.micros() - 1)).unwrap_err().to_string();
    assert!(e.contains("seule qui signe en ES256") && e.contains(&new) && e.contains(&active.rfc3339()), "successor not active yet: {e}");
    let mut cancelled = set.clone();
    cancelled.retire(&new, active).unwrap();
    assert_eq!(cancelled.signing_key_for(Alg::Es256, active).unwrap().kid(), old, "retired at its active_from exactly: it never signs");
    assert!(set.retire(&new, active.plus_seconds(1)).unwrap_err().to_string().contains("seule qui signe"), "the successor signs now");

    // Retiring the superseded key once its successor signs: allowed; it leaves the JWKS
    // one grace period after it stopped signing (at the switch), not after the retirement.
    let at = active.plus_seconds(60);
    assert_eq!(set.retire(&old, at).unwrap().retired_at(), Some(at));
    assert_eq!(set.info(&old, at).unwrap().state, KeyState::Retired);
    assert_eq!(set.signing_key_for(Alg::Es256, at).unwrap().kid(), new);
    assert!(jwks_kids(&set, at).contains(&old));
    assert!(!jwks_kids(&set, active.plus_seconds(RETIRED_KEY_GRACE_SECONDS)).contains(&old));
    assert!(set.retire(&old, at).unwrap_err().to_string().contains("déjà retirée"));
    assert!(set.retire("inconnue", at).unwrap_err().to_string().contains("inconnue"));
}

#[test]
fn retiring_a_pending_key_cancels_the_rotation() {
    let mut set = KeySet::first(Alg::Es256, t0()).unwrap();
    let old = set.keys()[0].kid().to_owned();
    let pending = set.rotate(Alg::Es256, t0(), HOUR).unwrap().kid().to_owned();
    let at = t0().plus_seconds(60);
    set.retire(&pending, at).unwrap();
    let much_later = t0().plus_seconds(100 * HOUR);
    assert_eq!(set.signing_key_for(Alg::Es256, much_later).unwrap().kid(), old, "the old key keeps signing");
    assert_eq!(jwks_kids(&set, Timestamp::from_micros(at.plus_seconds(RETIRED_KEY_GRACE_SECONDS).micros() - 1)), vec![pending.clone(), old.clone()]);
    assert_eq!(jwks_kids(&set, at.plus_seconds(RETIRED_KEY_GRACE_SECONDS)), vec![old]);
}

#[test]
fn a_superseded_key_never_signs_again() {
    // Three keys; the newest is retired after it took over: the middle one does not come back.
    let mut set = KeySet::first(Alg::Es256, t0()).unwrap();
    let b = set.rotate(Alg::Es256, t0(), 10).unwrap().kid().to_owned();
    let c = set.rotate(Alg::Es256, t0().plus_seconds(20), 10).unwrap().kid().to_owned();
    let at = t0().plus_seconds(40);
    assert_eq!(set.signing_key_for(Alg::Es256, at).unwrap().kid(), c);
    assert!(set.retire(&c, at).is_err(), "c is the only key that signs");
    set.retire(&b, at).unwrap();
    assert_eq!(set.signing_key_for(Alg::Es256, at).unwrap().kid(), c);
}

#[test]
fn the_jwks_holds_allow_listed_public_members_only() {
    for alg in Alg::ALL {
        let set = KeySet::first(*alg, t0()).unwrap();
        let jwks = set.jwks(t0());
        let key = &jwks["keys"][0];
        let mut names: Vec<&str> = key.as_object().unwrap().keys().map(String::as_str).collect();
        names.sort_unstable();
        let expected: &[&str] = match alg {
            Alg::Es256 => &["alg", "crv", "kid", "kty", "use", "x", "y"],
            Alg::Rs256 => &["alg", "e", "kid", "kty", "n", "use"],
        };
        assert_eq!(names, expected, "{alg:?}");
        assert_eq!((key["use"].as_str(), key["alg"].as_str()), (Some("sig"), Some(alg.key())));
        for m in PRIVATE_MEMBERS {
            assert!(key.get(*m).is_none(), "{alg:?}: private member {m} published");
        }
        let text = format!("{:?} {}", set.keys()[0], serde_json::to_string(&set.infos(t0())).unwrap());
        let d = set.keys()[0].private_jwk.parameter("d").unwrap().as_str().unwrap().to_owned();
        assert!(!text.contains(&d) && !jwks.to_string().contains(&d), "{alg:?}: private exponent leaked");
    }
    let rsa = KeySet::first(Alg::Rs256, t0()).unwrap();
    let n = rsa.jwks(t0())["keys"][0]["n"].as_str().unwrap().to_owned();
    assert_eq!(data_encoding::BASE64URL_NOPAD.decode(n.as_bytes()).unwrap().len() * 8, RSA_BITS as usize);
}

#[test]
fn a_signed_jwt_verifies_with_the_published_key_for_es256_and_rs256() {
    for alg in Alg::ALL {
        let set = KeySet::first(*alg, t0()).unwrap();
        let claims = json!({ "iss": "https://aidants.exemple.fr", "sub": "u1", "rep_scope": ["argent"] });
        let jwt = set.sign_jwt_with(*alg, &claims, t0()).unwrap();
        let published = set.jwks(t0())["keys"][0].clone();
        let (header, got) = verify_jwt(&jwt, &published).unwrap();
        assert_eq!(got, claims, "{alg:?}");
        assert_eq!(header["alg"], alg.key());
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], published["kid"]);
        let mut tampered = jwt.clone();
        tampered.insert(jwt.find('.').unwrap() + 2, 'A');
        assert!(verify_jwt(&tampered, &published).is_err(), "{alg:?}: a changed token is refused");
        let other = KeySet::first(*alg, t0()).unwrap().jwks(t0())["keys"][0].clone();
        assert!(verify_jwt(&jwt, &other).is_err(), "{alg:?}: another key does not verify it");
    }
}

#[test]
fn an_es256_signature_verifies_with_an_independent_implementation() {
    use p256::ecdsa::signature::Verifier;
    let set = KeySet::first(Alg::Es256, t0()).unwrap();
    let jwt = set.sign_jwt_with(Alg::Es256, &json!({ "sub": "x" }), t0()).unwrap();
    let key = &set.jwks(t0())["keys"][0];
    let b64 = |v: &Value| data_encoding::BASE64URL_NOPAD.decode(v.as_str().unwrap().as_bytes()).unwrap();
    let mut sec1 = vec![4u8];
    sec1.extend(b64(&key["x"]));
    sec1.extend(b64(&key["y"]));
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
    let (signed, sig) = jwt.rsplit_once('.').unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&b64(&Value::String(sig.into()))).unwrap();
    vk.verify(signed.as_bytes(), &sig).expect("ES256 signature (raw r||s over SHA-256)");
}

/// The header of a compact JWS.
fn header(jwt: &str) -> Value {
    let h = data_encoding::BASE64URL_NOPAD.decode(jwt.split('.').next().unwrap().as_bytes()).unwrap();
    serde_json::from_slice(&h).unwrap()
}

/// A set with a first ES256 key, active at `t0`, and a first RS256 key, active at
/// `t1` = `t0` + 1 s (so that the RS256 key is the newer one).
fn both_algorithms() -> (KeySet, String, String) {
    let mut set = KeySet::first(Alg::Es256, t0()).unwrap();
    let es = set.keys()[0].kid().to_owned();
    let rs = set.generate(Alg::Rs256, t1()).unwrap().kid().to_owned();
    (set, es, rs)
}

fn t1() -> Timestamp {
    t0().plus_seconds(1)
}

#[test]
fn the_signature_switches_keys_with_the_rotation_of_its_algorithm() {
    let (mut set, es, rs) = both_algorithms();
    let new = set.rotate(Alg::Es256, t0(), 60).unwrap().kid().to_owned();
    let sign = |alg, t| header(&set.sign_jwt_with(alg, &json!({}), t).unwrap());
    assert_eq!(sign(Alg::Es256, t0().plus_seconds(59))["kid"], es.as_str());
    assert_eq!(sign(Alg::Es256, t0().plus_seconds(60))["kid"], new.as_str());
    for t in [59, 60, 100 * HOUR] {
        let h = sign(Alg::Rs256, t0().plus_seconds(t));
        assert_eq!((h["alg"].as_str(), h["kid"].as_str()), (Some("RS256"), Some(rs.as_str())), "RS256 unaffected at +{t}s");
    }
    assert!(set.sign_jwt_with(Alg::Es256, &json!("pas un objet"), t0()).is_err());
    assert_eq!(kids(set.published(t1())).len(), 3);
}

#[test]
fn without_a_key_of_the_algorithm_signing_is_refused_and_says_how_to_fix_it() {
    let set = KeySet::first(Alg::Es256, t0()).unwrap();
    let e = set.sign_jwt_with(Alg::Rs256, &json!({}), t0()).unwrap_err();
    assert!(matches!(e, SigningError::NoSigningKey(Alg::Rs256)), "{e}");
    assert!(e.to_string().contains("broker keys generate --alg RS256") && !e.is_user_error(), "{e}");
    assert!(matches!(KeySet::default().sign_jwt_with(Alg::Es256, &json!({}), t0()), Err(SigningError::NoSigningKey(Alg::Es256))));
}

#[test]
fn keys_of_both_algorithms_sign_side_by_side_and_are_all_published() {
    let (set, es, rs) = both_algorithms();
    assert_eq!(set.signing_key_for(Alg::Es256, t1()).unwrap().kid(), es);
    assert_eq!(set.signing_key_for(Alg::Rs256, t1()).unwrap().kid(), rs);
    assert_eq!(kids(set.signing_keys(t1())), vec![es.clone(), rs.clone()]);
    assert_eq!(jwks_kids(&set, t1()), vec![rs.clone(), es.clone()], "both published, newest first");
    assert_eq!(jwks_kids(&set, t0()), vec![es.clone()], "the RS256 key from its creation only");
    assert!(set.signing_key_for(Alg::Rs256, t0()).is_none());
    let states: Vec<(Alg, KeyState)> = set.infos(t1()).iter().map(|i| (i.alg, i.state)).collect();
    assert!(states.contains(&(Alg::Es256, KeyState::Signing)) && states.contains(&(Alg::Rs256, KeyState::Signing)), "{states:?}");
    assert!(set.infos(t1()).iter().all(|i| i.stopped_signing_at.is_none() && i.published_until.is_none()));
    assert_eq!(set.next_publication_change(t1()), None, "nothing planned");

    // A newer key of the other algorithm, even much later, does not supersede anything.
    let mut later = KeySet::first(Alg::Rs256, t0()).unwrap();
    let old_rs = later.keys()[0].kid().to_owned();
    let new_es = later.generate(Alg::Es256, t0().plus_seconds(100 * HOUR)).unwrap().kid().to_owned();
    let t = t0().plus_seconds(1000 * HOUR);
    assert_eq!(later.signing_key_for(Alg::Rs256, t).unwrap().kid(), old_rs);
    assert_eq!(later.signing_key_for(Alg::Es256, t).unwrap().kid(), new_es);
    assert_eq!(jwks_kids(&later, t), vec![new_es, old_rs], "both published, newest first");
}

#[test]
fn claims_signed_with_each_algorithm_verify_with_the_published_key_of_the_same_kid() {
    let (set, _, _) = both_algorithms();
    let jwks = set.jwks(t1());
    let claims = json!({ "iss": "https://aidants.exemple.fr", "sub": "u1" });
    for alg in Alg::ALL {
        let jwt = set.sign_jwt_with(*alg, &claims, t1()).unwrap();
        let h = header(&jwt);
        assert_eq!(h["alg"], alg.key());
        let published: Vec<&Value> = jwks["keys"].as_array().unwrap().iter().filter(|k| k["kid"] == h["kid"]).collect();
        assert_eq!(published.len(), 1, "{alg:?}: the kid names one published key");
        assert_eq!(published[0]["alg"], alg.key());
        assert_eq!(verify_jwt(&jwt, published[0]).unwrap().1, claims, "{alg:?}");
        let other = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] != h["kid"]).unwrap();
        assert!(verify_jwt(&jwt, other).is_err(), "{alg:?}: the key of the other algorithm does not verify it");
    }
}

#[test]
fn rotating_one_algorithm_leaves_the_other_signing_at_every_boundary() {
    let (mut set, es, rs) = both_algorithms();
    let at = t0().plus_seconds(10 * HOUR);
    let new = set.rotate(Alg::Rs256, at, HOUR).unwrap().kid().to_owned();
    let active = at.plus_seconds(HOUR);
    let just_before = Timestamp::from_micros(active.micros() - 1);
    let grace_end = active.plus_seconds(RETIRED_KEY_GRACE_SECONDS);

    assert_eq!(set.signing_key_for(Alg::Rs256, just_before).unwrap().kid(), rs);
    assert_eq!(set.signing_key_for(Alg::Rs256, active).unwrap().kid(), new);
    assert_eq!(set.info(&rs, active).unwrap().state, KeyState::Superseded);
    assert_eq!(set.info(&rs, active).unwrap().stopped_signing_at, Some(active.rfc3339()));
    for t in [at, just_before, active, grace_end, grace_end.plus_seconds(100 * HOUR)] {
        assert_eq!(set.signing_key_for(Alg::Es256, t).unwrap().kid(), es, "ES256 keeps signing at {}", t.rfc3339());
        let info = set.info(&es, t).unwrap();
        assert_eq!((info.state, info.published, info.stopped_signing_at), (KeyState::Signing, true, None));
    }
    assert_eq!(jwks_kids(&set, at), vec![new.clone(), rs.clone(), es.clone()]);
    assert_eq!(jwks_kids(&set, Timestamp::from_micros(grace_end.micros() - 1)), vec![new.clone(), rs.clone(), es.clone()]);
    assert_eq!(jwks_kids(&set, grace_end), vec![new.clone(), es.clone()], "only the replaced RS256 key leaves");
    assert_eq!(set.next_publication_change(at), Some(grace_end));
    assert_eq!(set.next_publication_change(grace_end), None);
}

#[test]
fn retirement_rules_apply_per_algorithm() {
    let (mut set, es, rs) = both_algorithms();
    let t = t0().plus_seconds(5);
    // The RS256 key signing does not make the ES256 one retirable, nor the reverse.
    for (kid, alg) in [(&es, "ES256"), (&rs, "RS256")] {
        let e = set.retire(kid, t).unwrap_err().to_string();
        assert!(e.contains(&format!("seule qui signe en {alg}")) && e.contains(&format!("broker keys rotate --alg {alg}")), "{e}");
    }
    // A pending successor of the other algorithm does not count either.
    let new_es = set.rotate(Alg::Es256, t, HOUR).unwrap().kid().to_owned();
    let e = set.retire(&rs, t).unwrap_err().to_string();
    assert!(e.contains("seule qui signe en RS256") && !e.contains(&new_es), "{e}");
    let e = set.retire(&es, t).unwrap_err().to_string();
    assert!(e.contains(&new_es), "the ES256 successor is named: {e}");

    // Once the ES256 successor signs, the old ES256 key can go; RS256 still cannot.
    let active = t.plus_seconds(HOUR);
    assert_eq!(set.retire(&es, active).unwrap().retired_at(), Some(active));
    assert!(set.retire(&rs, active).unwrap_err().to_string().contains("seule qui signe en RS256"));
    assert!(set.retire(&new_es, active).unwrap_err().to_string().contains("seule qui signe en ES256"));
    assert_eq!(kids(set.signing_keys(active)), vec![new_es, rs]);
}
