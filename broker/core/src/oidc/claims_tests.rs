use super::*;
use crate::identite::sample;
use crate::signing::{files, verify_jwt, Alg};

const ISSUER: &str = "https://aidants.exemple.fr";
const CLIENT: &str = "0123456789abcdef0123456789abcdef";
const SECRET: &[u8] = b"0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const ACCESS_TOKEN: &str = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y";

fn now() -> Timestamp {
    Timestamp::from_micros(1_800_000_000_250_000)
}

/// Claim names, sorted (serde_json may keep insertion order, depending on features).
fn names(m: &Map<String, Value>) -> Vec<&str> {
    let mut n: Vec<&str> = m.keys().map(String::as_str).collect();
    n.sort_unstable();
    n
}

fn input(rep_scope: Option<&'static str>, alg: IdTokenAlg) -> IdTokenInput<'static> {
    IdTokenInput {
        issuer: ISSUER,
        client_id: CLIENT,
        sub: "usager-1",
        nonce: "7f3a9c0e1b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a",
        auth_time: Timestamp::from_micros(1_799_999_940_900_000),
        now: now(),
        lifetime_seconds: 60,
        amr: &[AMR_PWD, AMR_HWK, AMR_MFA],
        rep_scope,
        access_token: ACCESS_TOKEN,
        alg,
        act: None,
    }
}

fn decode_part(jwt: &str, i: usize) -> Value {
    let part = jwt.split('.').nth(i).unwrap();
    serde_json::from_slice(&data_encoding::BASE64URL_NOPAD.decode(part.as_bytes()).unwrap()).unwrap()
}

/// A key set with a first key of each of `algs`, written to key files and read back.
fn key_set_in_temp_dir(algs: &[Alg]) -> (tempfile::TempDir, KeySet) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join(files::DIR_NAME);
    let mut set = KeySet::default();
    for alg in algs {
        let key = set.generate(*alg, now()).unwrap();
        files::write_new(&d, key).unwrap();
    }
    let loaded = files::load(&d).unwrap();
    assert_eq!(loaded.keys().len(), algs.len());
    (dir, loaded)
}

/// The published key named by the token's `kid`, which must be in the JWKS once.
fn published_key_of(jwt: &str, keys: &KeySet) -> Value {
    let kid = decode_part(jwt, 0)["kid"].clone();
    let jwks = keys.jwks(now());
    let found: Vec<&Value> = jwks["keys"].as_array().unwrap().iter().filter(|k| k["kid"] == kid).collect();
    assert_eq!(found.len(), 1, "kid {kid} published once in {jwks}");
    found[0].clone()
}

#[test]
fn scopes_parse_and_name_their_claims() {
    for s in Scope::ALL {
        assert_eq!(Scope::parse(s.key()), Some(s));
    }
    assert_eq!(Scope::parse("openid"), Some(Scope::OpenId));
    assert_eq!(Scope::parse("OpenID"), None);
    assert_eq!(Scope::parse("phone"), None);
    assert_eq!(Scope::parse(""), None);
    assert_eq!(Scope::Profile.claims(), ["given_name", "family_name", "birthdate", "gender", "preferred_username"]);
    assert_eq!(Scope::Birth.claims(), ["birthplace", "birthcountry"]);
    assert_eq!(Scope::Email.claims(), ["email"]);
    assert_eq!(Scope::OpenId.claims(), ["sub"]);
}

#[test]
fn profile_only_gives_no_email_nor_birthplace() {
    let c = userinfo_claims("u1", &sample(), &[Scope::OpenId, Scope::Profile]);
    assert_eq!(names(&c), ["birthdate", "family_name", "gender", "given_name", "sub"]);
    assert_eq!(c["given_name"], "Angela Claire Louise");
    assert_eq!(c["family_name"], "Dubois");
    assert_eq!(c["birthdate"], "1962-08-24");
    assert_eq!(c["gender"], "female");
    assert_eq!(c["sub"], "u1");

    let with_usage_name = IdentitePivot { preferred_username: Some("Martin".into()), ..sample() };
    let c = userinfo_claims("u1", &with_usage_name, &[Scope::OpenId, Scope::Profile]);
    assert_eq!(c["preferred_username"], "Martin");
    let empty_usage_name = IdentitePivot { preferred_username: Some(String::new()), ..sample() };
    assert!(!userinfo_claims("u1", &empty_usage_name, &[Scope::Profile]).contains_key("preferred_username"));
}

#[test]
fn birth_only_gives_birthplace_and_birthcountry() {
    let c = userinfo_claims("u1", &sample(), &[Scope::OpenId, Scope::Birth]);
    assert_eq!(names(&c), ["birthcountry", "birthplace", "sub"]);
    assert_eq!(c["birthplace"], "75107");
    assert_eq!(c["birthcountry"], "99100");
}

#[test]
fn born_abroad_gives_an_empty_birthplace() {
    let abroad = IdentitePivot { birthcountry: "99217".into(), birthplace: String::new(), ..sample() };
    let c = userinfo_claims("u1", &abroad, &[Scope::Birth]);
    assert_eq!(c["birthplace"], "");
    assert_eq!(c["birthcountry"], "99217");
    // Even if a commune code were left over, it is not handed out for a foreign birth.
    let stale = IdentitePivot { birthcountry: "99217".into(), ..sample() };
    assert_eq!(userinfo_claims("u1", &stale, &[Scope::Birth])["birthplace"], "");
}

#[test]
fn email_openid_and_every_scope() {
    let c = userinfo_claims("u1", &sample(), &[Scope::Email]);
    assert_eq!(names(&c), ["email", "sub"]);
    assert_eq!(c["email"], "Angela.Dubois@exemple.fr");
    assert_eq!(names(&userinfo_claims("u1", &sample(), &[Scope::OpenId])), ["sub"]);
    assert_eq!(names(&userinfo_claims("u1", &sample(), &[])), ["sub"], "sub always");
    let all = userinfo_claims("u1", &sample(), &Scope::ALL);
    assert_eq!(
        names(&all),
        ["birthcountry", "birthdate", "birthplace", "email", "family_name", "gender", "given_name", "sub"]
    );
    assert!(all.values().all(Value::is_string));
}

#[test]
fn id_token_claims_have_the_exact_set_and_types() {
    let v = id_token_claims(&input(None, IdTokenAlg::Es256));
    let c = v.as_object().unwrap();
    assert_eq!(names(c), ["acr", "amr", "at_hash", "aud", "auth_time", "exp", "iat", "iss", "nonce", "sub"]);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["sub"], "usager-1");
    assert_eq!(c["aud"], CLIENT, "aud is the client id as a single string");
    assert!(c["aud"].is_string());
    assert_eq!(c["nonce"], input(None, IdTokenAlg::Es256).nonce);
    assert_eq!(c["acr"], "eidas1");
    assert_eq!(c["amr"], serde_json::json!(["pwd", "hwk", "mfa"]));
    for n in ["exp", "iat", "auth_time"] {
        assert!(c[n].is_u64(), "{n} is a JSON integer: {}", c[n]);
    }
    assert_eq!(c["iat"], 1_800_000_000u64);
    assert_eq!(c["exp"], 1_800_000_060u64, "exp = now + lifetime");
    assert_eq!(c["auth_time"], 1_799_999_940u64);
    assert_eq!(c["at_hash"], at_hash(ACCESS_TOKEN, IdTokenAlg::Es256));

    let no_amr = IdTokenInput { amr: &[], ..input(None, IdTokenAlg::Es256) };
    assert!(id_token_claims(&no_amr).get("amr").is_none());
}

#[test]
fn rep_scope_only_when_requested() {
    assert!(id_token_claims(&input(None, IdTokenAlg::Es256)).get("rep_scope").is_none());
    let v = id_token_claims(&input(Some("argent"), IdTokenAlg::Es256));
    assert_eq!(v["rep_scope"], serde_json::json!(["argent"]));
}

#[test]
fn at_hash_is_the_left_half_of_sha256_base64url() {
    // OpenID Connect Core 1.0, Appendix A (example id_tokens, RS256): access_token and at_hash.
    assert_eq!(at_hash(ACCESS_TOKEN, IdTokenAlg::Rs256), "77QmUPtjPfzWtF2AnpK9RQ");
    for token in [ACCESS_TOKEN, "a", "un-jeton-d-acces-aleatoire-0123456789"] {
        // Recomputed another way: the padded base64url alphabet, padding stripped.
        let digest = Sha256::digest(token.as_bytes());
        let padded = data_encoding::BASE64URL.encode(&digest[..16]);
        let expected = padded.trim_end_matches('=');
        for alg in [IdTokenAlg::Es256, IdTokenAlg::Rs256, IdTokenAlg::Hs256] {
            let h = at_hash(token, alg);
            assert_eq!(h, expected, "{alg:?}");
            assert_eq!(h.len(), 22);
            assert!(!h.contains(['=', '+', '/']));
        }
    }
}

#[test]
fn hs256_verifies_with_the_secret_only() {
    let claims = id_token_claims(&input(Some("Social-Santé"), IdTokenAlg::Hs256));
    let jwt = sign_id_token(&claims, IdTokenAlg::Hs256, &KeySet::default(), Some(SECRET), now()).unwrap();
    let header = decode_part(&jwt, 0);
    assert_eq!(header, serde_json::json!({ "alg": "HS256", "typ": "JWT" }), "no kid");

    let verifier = HS256.verifier_from_bytes(SECRET).unwrap();
    let (payload, _) = josekit::jws::deserialize_compact(&jwt, &verifier).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap(), claims);

    let other = HS256.verifier_from_bytes(b"1f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0").unwrap();
    assert!(josekit::jws::deserialize_compact(&jwt, &other).is_err(), "another secret does not verify it");
    // Recomputed independently: HMAC-SHA-256 of the signing input under the secret.
    use hmac::Mac;
    let (signed, sig) = jwt.rsplit_once('.').unwrap();
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(signed.as_bytes());
    assert_eq!(data_encoding::BASE64URL_NOPAD.encode(&mac.finalize().into_bytes()), sig);

    assert!(matches!(
        sign_id_token(&claims, IdTokenAlg::Hs256, &KeySet::default(), None, now()),
        Err(SignError::MissingSecret)
    ));
    assert!(matches!(sign_hs256(&claims, b"trop court"), Err(SignError::Hmac(_))), "RFC 7518: key ≥ 256 bits");
    assert!(sign_hs256(&serde_json::json!(["pas un objet"]), SECRET).is_err());
}

#[test]
fn es256_and_rs256_id_tokens_verify_with_the_published_jwk_of_their_kid() {
    // One key per algorithm side by side: each client gets a token of its own algorithm.
    let (_dir, keys) = key_set_in_temp_dir(&[Alg::Es256, Alg::Rs256]);
    let mut kids = Vec::new();
    for id_alg in [IdTokenAlg::Es256, IdTokenAlg::Rs256] {
        let claims = id_token_claims(&input(Some("argent"), id_alg));
        let jwt = sign_id_token(&claims, id_alg, &keys, None, now()).unwrap();
        let jwk = published_key_of(&jwt, &keys);
        assert_eq!(jwk["alg"], id_alg.key(), "signed with the key of the client's algorithm");
        let (header, got) = verify_jwt(&jwt, &jwk).unwrap();
        assert_eq!(got, claims, "{id_alg:?}");
        assert_eq!(header["alg"], id_alg.key());
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], jwk["kid"]);
        kids.push(jwk["kid"].clone());
        // A secret given by mistake is not used for an asymmetric algorithm.
        let jwt = sign_id_token(&claims, id_alg, &keys, Some(SECRET), now()).unwrap();
        assert_eq!(decode_part(&jwt, 0)["alg"], id_alg.key());
    }
    assert_ne!(kids[0], kids[1]);
    assert_eq!(key_alg(IdTokenAlg::Hs256), None);
}

#[test]
fn a_client_algorithm_without_a_signing_key_of_its_own_is_refused() {
    let (_dir, es) = key_set_in_temp_dir(&[Alg::Es256]);
    let claims = id_token_claims(&input(None, IdTokenAlg::Rs256));
    let e = sign_id_token(&claims, IdTokenAlg::Rs256, &es, None, now()).unwrap_err();
    assert!(matches!(e, SignError::Signing(SigningError::NoSigningKey(Alg::Rs256))), "{e}");
    let message = e.to_string();
    assert!(message.contains("aucune clé de signature RS256") && message.contains("broker keys generate --alg RS256"), "{message}");
    let (_dir, rs) = key_set_in_temp_dir(&[Alg::Rs256]);
    let e = userinfo_jwt(Map::new(), ISSUER, CLIENT, now(), IdTokenAlg::Es256, &rs, None).unwrap_err();
    assert!(e.to_string().contains("broker keys generate --alg ES256"), "{e}");
    assert!(matches!(
        sign_id_token(&claims, IdTokenAlg::Es256, &KeySet::default(), None, now()),
        Err(SignError::Signing(SigningError::NoSigningKey(Alg::Es256)))
    ));
}

#[test]
fn the_userinfo_jwt_carries_iss_and_aud_and_the_claims() {
    let claims = userinfo_claims("usager-1", &sample(), &Scope::ALL);
    let (_dir, keys) = key_set_in_temp_dir(&[Alg::Es256, Alg::Rs256]);
    for id_alg in [IdTokenAlg::Es256, IdTokenAlg::Rs256] {
        let jwt = userinfo_jwt(claims.clone(), ISSUER, CLIENT, now(), id_alg, &keys, None).unwrap();
        let jwk = published_key_of(&jwt, &keys);
        assert_eq!(jwk["alg"], id_alg.key());
        let (_, got) = verify_jwt(&jwt, &jwk).unwrap();
        assert_eq!(got["iss"], ISSUER);
        assert_eq!(got["aud"], CLIENT);
        assert_eq!(got["iat"], 1_800_000_000u64);
        let mut expected = claims.clone();
        for n in ["iss", "aud", "iat"] {
            expected.insert(n.into(), got[n].clone());
        }
        assert_eq!(got, Value::Object(expected), "{id_alg:?}");
    }

    let jwt = userinfo_jwt(claims, ISSUER, CLIENT, now(), IdTokenAlg::Hs256, &keys, Some(SECRET)).unwrap();
    let (payload, _) = josekit::jws::deserialize_compact(&jwt, &HS256.verifier_from_bytes(SECRET).unwrap()).unwrap();
    let got: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!((got["iss"].as_str(), got["aud"].as_str(), got["sub"].as_str()), (Some(ISSUER), Some(CLIENT), Some("usager-1")));
}
