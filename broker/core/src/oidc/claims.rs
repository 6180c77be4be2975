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

// Serialised as its key (`"profile"`).
serde_as_key!(Scope, Scope::parse, "scope");

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
#[path = "claims_tests.rs"]
mod tests;
