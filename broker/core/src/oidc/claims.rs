//! The claims the broker hands out as FranceConnect's identity provider, and their
//! signature (shared/docs/franceconnect.md §1).
//!
//! - [`Scope`]: the scope bundles (`profile` → given_name, family_name, birthdate, gender,
//!   preferred_username; `birth` → birthplace, birthcountry; `email` → email).
//! - [`userinfo_claims`]: the identité pivot claims the granted scopes allow, `sub` always.
//! - [`id_token_claims`]: `iss`, `sub`, `aud`, `exp`, `iat`, `auth_time`, `nonce`,
//!   `acr` = `eidas1`, `amr`, `at_hash`, and `rep_scope` (an array with the chosen
//!   démarche) when the client asked for it.
//! - [`sign_id_token`] / [`userinfo_jwt`]: a compact JWS with the client's registered
//!   algorithm: ES256 or RS256 with the broker's signing key *of that algorithm* (header
//!   `kid`; the key set holds one signing key per algorithm), HS256 with the client
//!   secret (no `kid`).
//!
//! Pure functions: the instants come from the caller.

use crate::client::IdTokenAlg;
use crate::identite::{IdentitePivot, FRANCE};
use crate::signing::{Alg, KeySet, SigningError};
use crate::time::Timestamp;
use josekit::jws::{JwsHeader, HS256};
pub use serde_json::Map;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The only authentication context the broker answers (`acr`).
pub const ACR_EIDAS1: &str = "eidas1";

// Authentication method references (`amr`, RFC 8176 §2), as the broker uses them.
/// Password-based authentication.
pub const AMR_PWD: &str = "pwd";
/// One-time password (the aidant's TOTP code).
pub const AMR_OTP: &str = "otp";
/// Proof of possession of a hardware-secured key (a FIDO2 / WebAuthn security key).
pub const AMR_HWK: &str = "hwk";
/// Proof of possession of a software-secured key (e.g. a platform passkey).
pub const AMR_SWK: &str = "swk";
/// User presence test (the security key's touch).
pub const AMR_USER: &str = "user";
/// Multiple-factor authentication: more than one of the above. RFC 8176 §2: when `mfa`
/// is present, the methods used should be listed as well, e.g. `["pwd", "otp", "mfa"]`.
pub const AMR_MFA: &str = "mfa";

/// An OpenID Connect scope the broker knows. Unknown scopes are ignored by [`Scope::parse`]
/// callers (OIDC Core §3.1.2.1); `openid` is the caller's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    OpenId,
    Profile,
    Email,
    Birth,
}

/// Serialised as its key (`"profile"`).
impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.key())
    }
}

impl<'de> serde::Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let key = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Scope::parse(&key).ok_or_else(|| serde::de::Error::custom(format!("scope inconnu : {key}")))
    }
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::OpenId, Scope::Profile, Scope::Email, Scope::Birth];

    pub const fn key(self) -> &'static str {
        match self {
            Scope::OpenId => "openid",
            Scope::Profile => "profile",
            Scope::Email => "email",
            Scope::Birth => "birth",
        }
    }

    /// One scope value (case-sensitive, as OAuth scope tokens are).
    pub fn parse(v: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.key() == v)
    }

    /// The userinfo claims the scope grants.
    pub const fn claims(self) -> &'static [&'static str] {
        match self {
            Scope::OpenId => &["sub"],
            Scope::Profile => &["given_name", "family_name", "birthdate", "gender", "preferred_username"],
            Scope::Email => &["email"],
            Scope::Birth => &["birthplace", "birthcountry"],
        }
    }
}

/// The value of one identité pivot claim, in the format FranceConnect's core checks;
/// `None` when the claim is absent (no usage name) or not an identity claim.
fn identity_claim(name: &str, identity: &IdentitePivot) -> Option<String> {
    let v = match name {
        "given_name" => identity.given_name.clone(),
        "family_name" => identity.family_name.clone(),
        "birthdate" => identity.birthdate.clone(),
        "gender" => identity.gender.clone(),
        "preferred_username" => identity.preferred_username.clone().filter(|u| !u.is_empty())?,
        // INSEE commune code when born in France, the empty string otherwise.
        "birthplace" if identity.birthcountry == FRANCE => identity.birthplace.clone(),
        "birthplace" => String::new(),
        "birthcountry" => identity.birthcountry.clone(),
        "email" => identity.email.clone(),
        _ => return None,
    };
    Some(v)
}

/// The userinfo claims: `sub`, plus the identité pivot claims the granted scopes allow.
/// `preferred_username` only when the usager has a usage name.
pub fn userinfo_claims(sub: &str, identity: &IdentitePivot, scopes: &[Scope]) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("sub".into(), Value::String(sub.to_owned()));
    for name in scopes.iter().flat_map(|s| s.claims()) {
        if let Some(v) = identity_claim(name, identity) {
            out.insert((*name).to_owned(), Value::String(v));
        }
    }
    out
}

/// What an id_token says.
#[derive(Clone, Copy)]
pub struct IdTokenInput<'a> {
    /// The broker's issuer, exactly as in the discovery document.
    pub issuer: &'a str,
    /// The audience: the client's id (a single string, so no `azp`).
    pub client_id: &'a str,
    /// The usager's broker id (the same `sub` as userinfo's).
    pub sub: &'a str,
    /// The `nonce` of the authorization request, echoed.
    pub nonce: &'a str,
    /// When the aidant authenticated (`auth_time`).
    pub auth_time: Timestamp,
    /// Issue instant (`iat`); `exp` = `now` + `lifetime_seconds`.
    pub now: Timestamp,
    pub lifetime_seconds: i64,
    /// Authentication method references (RFC 8176 §2): e.g. `["pwd", "hwk", "mfa"]` for a
    /// password and a security key, `["pwd", "otp", "mfa"]` for a password and a TOTP code.
    /// See the `AMR_*` constants. Omitted from the token when empty.
    pub amr: &'a [&'a str],
    /// The démarche the aidant chose, in the spelling the client's `rep_scope` request
    /// used, when it asked for `rep_scope`.
    pub rep_scope: Option<&'a str>,
    /// The access token issued with this id_token (for `at_hash`).
    pub access_token: &'a str,
    /// The client's id_token algorithm (for `at_hash`; all three hash with SHA-256).
    pub alg: IdTokenAlg,
    /// The `act` claim, for a client registered with it ([`super::subject::act_claim`]).
    pub act: Option<&'a Value>,
}

/// The id_token claims. Instants are whole seconds since the epoch (JSON numbers).
pub fn id_token_claims(input: &IdTokenInput<'_>) -> Value {
    let mut c = Map::new();
    c.insert("iss".into(), input.issuer.into());
    c.insert("sub".into(), input.sub.into());
    c.insert("aud".into(), input.client_id.into());
    c.insert("exp".into(), input.now.plus_seconds(input.lifetime_seconds).unix_seconds().into());
    c.insert("iat".into(), input.now.unix_seconds().into());
    c.insert("auth_time".into(), input.auth_time.unix_seconds().into());
    c.insert("nonce".into(), input.nonce.into());
    c.insert("acr".into(), ACR_EIDAS1.into());
    if !input.amr.is_empty() {
        c.insert("amr".into(), input.amr.iter().map(|m| Value::from(*m)).collect());
    }
    c.insert("at_hash".into(), at_hash(input.access_token, input.alg).into());
    if let Some(d) = input.rep_scope {
        c.insert("rep_scope".into(), Value::Array(vec![d.into()]));
    }
    if let Some(act) = input.act {
        c.insert("act".into(), act.clone());
    }
    Value::Object(c)
}

/// `at_hash` (OIDC Core §3.1.3.6): the left half of the hash of the ASCII access token,
/// base64url without padding. The hash is the one of the JWS algorithm: SHA-256 for
/// ES256, RS256 and HS256 alike.
pub fn at_hash(access_token: &str, alg: IdTokenAlg) -> String {
    let digest = match alg {
        IdTokenAlg::Es256 | IdTokenAlg::Rs256 | IdTokenAlg::Hs256 => Sha256::digest(access_token.as_bytes()),
    };
    data_encoding::BASE64URL_NOPAD.encode(&digest[..digest.len() / 2])
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("HS256 : le secret du client est nécessaire pour signer")]
    MissingSecret,
    /// Includes [`SigningError::NoSigningKey`]: no key of the client's algorithm signs now
    /// (the message names the command that creates one, e.g.
    /// `broker keys generate --alg RS256`).
    #[error(transparent)]
    Signing(#[from] SigningError),
    #[error("signature HS256 : {0}")]
    Hmac(String),
}

/// A compact JWS of `claims` (a JSON object) signed HS256 with the client secret; header
/// `alg: HS256`, `typ: JWT`, no `kid`. The secret must be at least 32 bytes (RFC 7518 §3.2).
pub fn sign_hs256(claims: &Value, client_secret: &[u8]) -> Result<String, SignError> {
    let hmac = |e: &dyn std::fmt::Display| SignError::Hmac(e.to_string());
    if !claims.is_object() {
        return Err(hmac(&"les claims d'un JWT forment un objet JSON"));
    }
    let signer = HS256.signer_from_bytes(client_secret).map_err(|e| hmac(&e))?;
    let mut header = JwsHeader::new();
    header.set_token_type("JWT");
    let payload = serde_json::to_vec(claims).map_err(|e| hmac(&e))?;
    josekit::jws::serialize_compact(&payload, &header, &signer).map_err(|e| hmac(&e))
}

/// The claims of a JWT the broker signed HS256 with `client_secret`, if the signature
/// holds (expiry is not checked: an `id_token_hint` may have expired).
pub fn verify_hs256(jwt: &str, client_secret: &[u8]) -> Option<Value> {
    let verifier = HS256.verifier_from_bytes(client_secret).ok()?;
    let (payload, _) = josekit::jws::deserialize_compact(jwt, &verifier).ok()?;
    serde_json::from_slice(&payload).ok()
}

/// The claims of a JWT signed by one of the broker's keys in `keys` (found by `kid`), if
/// the signature holds (expiry is not checked).
pub fn verify_broker_jwt(jwt: &str, keys: &KeySet) -> Option<Value> {
    let header = jwt.split('.').next()?;
    let header: Value = serde_json::from_slice(&data_encoding::BASE64URL_NOPAD.decode(header.as_bytes()).ok()?).ok()?;
    let key = keys.get(header.get("kid")?.as_str()?)?;
    crate::signing::verify_jwt(jwt, &key.public_jwk()).ok().map(|(_, claims)| claims)
}

/// The broker's key algorithm for a client's id_token algorithm (`None`: HS256, signed
/// with the client secret).
pub const fn key_alg(alg: IdTokenAlg) -> Option<Alg> {
    match alg {
        IdTokenAlg::Es256 => Some(Alg::Es256),
        IdTokenAlg::Rs256 => Some(Alg::Rs256),
        IdTokenAlg::Hs256 => None,
    }
}

/// Signs `claims` with the client's algorithm: HS256 with `client_secret` (required), or
/// ES256 / RS256 with the key set's signing key of that algorithm at `now`
/// ([`SigningError::NoSigningKey`] when there is none).
pub fn sign_id_token(
    claims: &Value,
    alg: IdTokenAlg,
    keys: &KeySet,
    client_secret: Option<&[u8]>,
    now: Timestamp,
) -> Result<String, SignError> {
    match key_alg(alg) {
        None => sign_hs256(claims, client_secret.ok_or(SignError::MissingSecret)?),
        Some(key_alg) => Ok(keys.sign_jwt_with(key_alg, claims, now)?),
    }
}

/// The userinfo response as a signed JWT (`application/jwt`): the claims plus `iss`,
/// `aud` (the client id) and `iat` (OIDC Core §5.3.2), signed as [`sign_id_token`] does.
pub fn userinfo_jwt(
    mut claims: Map<String, Value>,
    issuer: &str,
    client_id: &str,
    now: Timestamp,
    alg: IdTokenAlg,
    keys: &KeySet,
    client_secret: Option<&[u8]>,
) -> Result<String, SignError> {
    claims.insert("iss".into(), issuer.into());
    claims.insert("aud".into(), client_id.into());
    claims.insert("iat".into(), now.unix_seconds().into());
    sign_id_token(&Value::Object(claims), alg, keys, client_secret, now)
}

#[cfg(test)]
mod tests {
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
}
