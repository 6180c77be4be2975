//! The broker's signing keys (ES256 on P-256, RS256 on 2048-bit RSA) and its public JWKS.
//!
//! Signing is **per algorithm**: a client registers the algorithm of its id_tokens
//! (FranceConnect: ES256 or RS256), so the key set holds one line of keys per algorithm,
//! side by side, all published. Rules, for a key set, an algorithm `A` and an instant `t`:
//! - a key is **published** in the JWKS from its creation, so a key added by a rotation
//!   is published before it signs anything;
//! - the **signing key for `A`** at `t` is the newest key of algorithm `A` (by
//!   `active_from`) whose `active_from` is at or before `t` and that is not retired at
//!   `t`; a key **stops signing** when it is retired, or when a newer key *of the same
//!   algorithm* takes over (becomes active without being retired first), whichever comes
//!   first, and never signs again. Keys of other algorithms never take over;
//! - a key that stopped signing stays published for [`RETIRED_KEY_GRACE_SECONDS`] after
//!   that moment, then leaves the JWKS (its file stays: files are never deleted
//!   automatically);
//! - the only signing key of an algorithm cannot be retired: a successor of the same
//!   algorithm must be active first.
//!
//! The JWKS is built from an allow-list of public members (`kty`, `crv`, `x`, `y` for EC;
//! `kty`, `n`, `e` for RSA; plus `kid`, `alg`, `use`), taken from the public key that
//! OpenSSL derives from the private key, never by serialising the private JWK. Each key
//! is checked when it is built: a signature made with it must verify with its published
//! members.
//!
//! [`files`] keeps a key set in a directory (one `<kid>.json` per key); [`store`] holds
//! it at run time (reloaded when the directory changes) with its JWKS document cached.

pub mod files;
pub mod store;

use crate::time::Timestamp;
use crate::validate::Invalid;
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
use josekit::jwk::alg::rsa::RsaKeyPair;
use josekit::jwk::{Jwk, KeyPair};
use josekit::jws::{JwsHeader, JwsSigner, JwsVerifier, ES256, RS256};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// How long a key stays published after it stopped signing: longer than any token it
/// may have signed lives (id_tokens and signed userinfo responses live minutes, never
/// more than an hour), so that every such token can still be verified.
pub const RETIRED_KEY_GRACE_SECONDS: i64 = 3600;

/// Default delay between a rotation and the moment the new key signs
/// (`AC_KEY_PUBLISH_DELAY_SECONDS`): clients refresh their copy of the JWKS meanwhile.
pub const DEFAULT_PUBLISH_DELAY_SECONDS: i64 = 3600;

/// How long clients may keep the JWKS (`Cache-Control: max-age` of `/jwks`). A rotation's
/// publish delay must be longer, so that clients see a new key before it signs.
pub const JWKS_MAX_AGE_SECONDS: i64 = 300;

/// Size of generated RSA keys, and the smallest one accepted from a key file.
pub const RSA_BITS: u32 = 2048;

/// Public members copied into the JWKS, per key type. Nothing else is ever published.
const EC_PUBLIC_MEMBERS: &[&str] = &["kty", "crv", "x", "y"];
const RSA_PUBLIC_MEMBERS: &[&str] = &["kty", "n", "e"];

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The operator asked for something the rules refuse; the message says what to do.
    #[error("{0}")]
    Refused(String),
    /// A key file cannot be read, parsed or written.
    #[error("{0}")]
    File(String),
    /// No key of this algorithm signs now.
    #[error(
        "aucune clé de signature {alg} ne signe maintenant : créez-la avec « broker keys generate --alg {alg} » \
         (voir « broker keys list »)",
        alg = .0.key()
    )]
    NoSigningKey(Alg),
    #[error("cryptographie : {0}")]
    Crypto(String),
}

impl SigningError {
    /// True when the caller gave bad input (exit code 2 for the CLI).
    pub fn is_user_error(&self) -> bool {
        matches!(self, SigningError::Refused(_))
    }
}

impl From<Invalid> for SigningError {
    fn from(e: Invalid) -> Self {
        SigningError::Refused(e.0)
    }
}

fn crypto(e: impl std::fmt::Display) -> SigningError {
    SigningError::Crypto(e.to_string())
}

/// A signing algorithm offered for the broker's own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    Es256,
    Rs256,
}

impl Alg {
    pub const ALL: &'static [Alg] = &[Alg::Es256, Alg::Rs256];
    /// The algorithm of `broker keys generate` and `rotate` without `--alg`, and of
    /// clients registered without one: production needs a key that signs with it.
    pub const DEFAULT: Alg = Alg::Es256;

    pub const fn key(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }

    pub fn parse(v: &str) -> Result<Self, Invalid> {
        Alg::ALL
            .iter()
            .copied()
            .find(|a| a.key() == v)
            .ok_or_else(|| Invalid(format!("algorithme de signature inconnu : « {v} » (ES256 ou RS256)")))
    }

    fn public_members(self) -> &'static [&'static str] {
        match self {
            Alg::Es256 => EC_PUBLIC_MEMBERS,
            Alg::Rs256 => RSA_PUBLIC_MEMBERS,
        }
    }
}

impl Serialize for Alg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.key())
    }
}

/// A key id: 16 random bytes, base64url without padding (22 characters).
pub fn new_kid() -> String {
    data_encoding::BASE64URL_NOPAD.encode(&crate::secret::random_bytes::<16>())
}

/// Key ids accepted from files and the command line: 1 to 64 characters of the
/// base64url alphabet (they name files, so nothing else).
pub fn valid_kid(kid: &str) -> bool {
    (1..=64).contains(&kid.len()) && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One private signing key and its life cycle.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    created_at: Timestamp,
    active_from: Timestamp,
    retired_at: Option<Timestamp>,
    /// Key material; leaves this module only towards the key file.
    private_jwk: Jwk,
    /// The allow-listed public members, `kid`, `alg` and `use`.
    public_jwk: Map<String, Value>,
    signer: Box<dyn JwsSigner>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("active_from", &self.active_from)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl Clone for SigningKey {
    fn clone(&self) -> Self {
        Self {
            kid: self.kid.clone(),
            alg: self.alg,
            created_at: self.created_at,
            active_from: self.active_from,
            retired_at: self.retired_at,
            private_jwk: self.private_jwk.clone(),
            public_jwk: self.public_jwk.clone(),
            signer: self.signer.clone(),
        }
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate(alg: Alg, created_at: Timestamp, active_from: Timestamp) -> Result<Self, SigningError> {
        let private_jwk = match alg {
            Alg::Es256 => EcKeyPair::generate(EcCurve::P256).map_err(crypto)?.to_jwk_key_pair(),
            Alg::Rs256 => RsaKeyPair::generate(RSA_BITS).map_err(crypto)?.to_jwk_key_pair(),
        };
        Self::from_parts(new_kid(), alg, created_at, active_from, None, private_jwk)
    }

    /// Builds a key from its stored parts, deriving the public members from the private
    /// key and checking that they verify its signatures.
    pub(crate) fn from_parts(
        kid: String,
        alg: Alg,
        created_at: Timestamp,
        active_from: Timestamp,
        retired_at: Option<Timestamp>,
        private_jwk: Jwk,
    ) -> Result<Self, SigningError> {
        if !valid_kid(&kid) {
            return Err(SigningError::File(format!("identifiant de clé invalide : « {kid} »")));
        }
        let (public, signer): (Jwk, Box<dyn JwsSigner>) = match alg {
            Alg::Es256 => {
                if private_jwk.curve() != Some("P-256") {
                    return Err(crypto("ES256 demande une clé EC sur la courbe P-256"));
                }
                let pair = EcKeyPair::from_jwk(&private_jwk).map_err(crypto)?;
                (pair.to_jwk_public_key(), Box::new(ES256.signer_from_jwk(&private_jwk).map_err(crypto)?))
            }
            Alg::Rs256 => {
                let pair = RsaKeyPair::from_jwk(&private_jwk).map_err(crypto)?;
                if pair.key_len() * 8 < RSA_BITS {
                    return Err(crypto(format!("RS256 demande une clé RSA d'au moins {RSA_BITS} bits")));
                }
                (pair.to_jwk_public_key(), Box::new(RS256.signer_from_jwk(&private_jwk).map_err(crypto)?))
            }
        };
        let mut public_jwk = Map::new();
        for name in alg.public_members() {
            let value = public.parameter(name).ok_or_else(|| crypto(format!("membre public « {name} » absent")))?;
            public_jwk.insert((*name).to_owned(), value.clone());
        }
        public_jwk.insert("kid".into(), Value::String(kid.clone()));
        public_jwk.insert("alg".into(), Value::String(alg.key().into()));
        public_jwk.insert("use".into(), Value::String("sig".into()));
        let key = Self { kid, alg, created_at, active_from, retired_at, private_jwk, public_jwk, signer };
        key.self_check()?;
        Ok(key)
    }

    /// A signature made with the private key verifies with the published members.
    fn self_check(&self) -> Result<(), SigningError> {
        let message = b"aidants-connect: signing key self-check";
        let signature = self.signer.sign(message).map_err(crypto)?;
        verifier(&Value::Object(self.public_jwk.clone()))?
            .verify(message, &signature)
            .map_err(|_| crypto(format!("la clé {} ne vérifie pas ses propres signatures (fichier altéré ?)", self.kid)))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
    pub fn alg(&self) -> Alg {
        self.alg
    }
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }
    pub fn active_from(&self) -> Timestamp {
        self.active_from
    }
    pub fn retired_at(&self) -> Option<Timestamp> {
        self.retired_at
    }

    /// The key as published in the JWKS: allow-listed members only.
    pub fn public_jwk(&self) -> Value {
        Value::Object(self.public_jwk.clone())
    }

    /// Whether this key takes over from older ones when it becomes active.
    fn takes_over(&self) -> bool {
        self.retired_at.is_none_or(|r| r > self.active_from)
    }

    /// Order of age: the newest key is the greatest.
    fn age_order(&self) -> (Timestamp, Timestamp, &str) {
        (self.active_from, self.created_at, &self.kid)
    }
}

/// A verifier for a published JWK (as found in the JWKS).
pub fn verifier(public_jwk: &Value) -> Result<Box<dyn JwsVerifier>, SigningError> {
    let map = public_jwk.as_object().cloned().ok_or_else(|| crypto("JWK attendue sous forme d'objet"))?;
    let jwk = Jwk::from_map(map).map_err(crypto)?;
    Ok(match jwk.algorithm() {
        Some("ES256") => Box::new(ES256.verifier_from_jwk(&jwk).map_err(crypto)?),
        Some("RS256") => Box::new(RS256.verifier_from_jwk(&jwk).map_err(crypto)?),
        other => return Err(crypto(format!("algorithme non pris en charge : {other:?}"))),
    })
}

/// Verifies a compact JWS with a published JWK and returns its header and claims.
pub fn verify_jwt(jwt: &str, public_jwk: &Value) -> Result<(Value, Value), SigningError> {
    let v = verifier(public_jwk)?;
    let (payload, header) = josekit::jws::deserialize_compact(jwt, &*v).map_err(crypto)?;
    let claims = serde_json::from_slice(&payload).map_err(crypto)?;
    Ok((Value::Object(header.claims_set().clone()), claims))
}

/// Where a key stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Published, not signing yet.
    Pending,
    /// The key that signs now.
    Signing,
    /// A newer key took over; published during the grace period.
    Superseded,
    /// Retired by the operator.
    Retired,
}

impl KeyState {
    pub fn french(self) -> &'static str {
        match self {
            KeyState::Pending => "en attente",
            KeyState::Signing => "signe",
            KeyState::Superseded => "remplacée",
            KeyState::Retired => "retirée",
        }
    }
}

/// What the operator sees of a key: never any private member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: Alg,
    pub state: KeyState,
    pub published: bool,
    pub created_at: String,
    pub active_from: String,
    pub retired_at: Option<String>,
    /// When it stopped (or will stop) signing, if known.
    pub stopped_signing_at: Option<String>,
    /// When it leaves the JWKS, if known.
    pub published_until: Option<String>,
}

/// Every key of the broker, oldest first.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<SigningKey>,
}

impl KeySet {
    pub fn new(mut keys: Vec<SigningKey>) -> Self {
        keys.sort_by(|a, b| a.age_order().cmp(&b.age_order()));
        Self { keys }
    }

    /// A set with one new key, active at `now` (development, tests).
    pub fn first(alg: Alg, now: Timestamp) -> Result<Self, SigningError> {
        let mut set = Self::default();
        set.generate(alg, now)?;
        Ok(set)
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    fn insert(&mut self, key: SigningKey) -> &SigningKey {
        let kid = key.kid.clone();
        self.keys.push(key);
        self.keys.sort_by(|a, b| a.age_order().cmp(&b.age_order()));
        self.get(&kid).expect("just inserted")
    }

    /// The keys of one algorithm, oldest first.
    pub fn keys_of(&self, alg: Alg) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter().filter(move |k| k.alg == alg)
    }

    /// Whether the set holds a key of `alg` (in whatever state).
    pub fn has(&self, alg: Alg) -> bool {
        self.keys_of(alg).next().is_some()
    }

    /// The first key of `alg`, active immediately. Refused when a key of `alg` exists
    /// already (keys of the other algorithm do not matter).
    pub fn generate(&mut self, alg: Alg, now: Timestamp) -> Result<&SigningKey, SigningError> {
        let existing = self.keys_of(alg).count();
        if existing > 0 {
            return Err(SigningError::Refused(format!(
                "{existing} clé(s) de signature {a} existent déjà : pour en ajouter une, utilisez « broker keys rotate --alg {a} »",
                a = alg.key()
            )));
        }
        let key = SigningKey::generate(alg, now, now)?;
        Ok(self.insert(key))
    }

    /// A new key of `alg`, published now and signing from `now + publish_delay_seconds`,
    /// when it takes over from the key of `alg` that signs then. Refused when there is no
    /// key of `alg` yet (the first one is made by [`KeySet::generate`]).
    pub fn rotate(&mut self, alg: Alg, now: Timestamp, publish_delay_seconds: i64) -> Result<&SigningKey, SigningError> {
        if !self.has(alg) {
            return Err(SigningError::Refused(format!(
                "aucune clé de signature {a} à remplacer : créez la première avec « broker keys generate --alg {a} »",
                a = alg.key()
            )));
        }
        if publish_delay_seconds < 0 {
            return Err(SigningError::Refused(format!("délai de publication négatif : {publish_delay_seconds} s")));
        }
        let key = SigningKey::generate(alg, now, now.plus_seconds(publish_delay_seconds))?;
        Ok(self.insert(key))
    }

    /// Stops a key signing at `now`. Refused for an unknown or already retired key, and
    /// for the only signing key of its algorithm (no active successor of the same
    /// algorithm would sign; a key of another algorithm does not sign for it).
    pub fn retire(&mut self, kid: &str, now: Timestamp) -> Result<&SigningKey, SigningError> {
        let Some(i) = self.keys.iter().position(|k| k.kid == kid) else {
            return Err(SigningError::Refused(format!("clé de signature inconnue : « {kid} » (voir « broker keys list »)")));
        };
        if let Some(at) = self.keys[i].retired_at {
            return Err(SigningError::Refused(format!("la clé {kid} est déjà retirée (depuis le {})", at.rfc3339())));
        }
        let alg = self.keys[i].alg;
        let signing_before = self.signing_key_for(alg, now).is_some();
        let mut after = self.clone();
        after.keys[i].retired_at = Some(now);
        if signing_before && after.signing_key_for(alg, now).is_none() {
            let successor = self.keys[i + 1..].iter().find(|k| k.alg == alg && k.active_from > now && k.retired_at.is_none());
            let a = alg.key();
            return Err(SigningError::Refused(match successor {
                Some(next) => format!(
                    "la clé {kid} est la seule qui signe en {a} : sa remplaçante {} ne signe qu'à partir du {} ; retirez celle-ci ensuite",
                    next.kid,
                    next.active_from.rfc3339()
                ),
                None => format!(
                    "la clé {kid} est la seule qui signe en {a} : créez d'abord celle qui lui succède \
                     (« broker keys rotate --alg {a} »), puis retirez celle-ci une fois la nouvelle active"
                ),
            }));
        }
        self.keys[i].retired_at = Some(now);
        Ok(&self.keys[i])
    }

    /// When each key stops signing (`None`: not planned), in the order of `keys`: at its
    /// retirement, or when a newer key of the same algorithm takes over.
    fn stops(&self) -> Vec<Option<Timestamp>> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let superseded = self.keys[i + 1..]
                    .iter()
                    .filter(|j| j.alg == k.alg && j.takes_over())
                    .map(|j| j.active_from)
                    .min();
                match (k.retired_at, superseded) {
                    (Some(r), Some(s)) => Some(r.min(s)),
                    (r, s) => r.or(s),
                }
            })
            .collect()
    }

    fn signs_at(k: &SigningKey, stop: Option<Timestamp>, t: Timestamp) -> bool {
        k.active_from <= t && stop.is_none_or(|s| t < s)
    }

    fn published_at(k: &SigningKey, stop: Option<Timestamp>, t: Timestamp) -> bool {
        k.created_at <= t && stop.is_none_or(|s| t < s.plus_seconds(RETIRED_KEY_GRACE_SECONDS))
    }

    /// The key that signs for `alg` at `t`, if any.
    pub fn signing_key_for(&self, alg: Alg, t: Timestamp) -> Option<&SigningKey> {
        let stops = self.stops();
        self.keys
            .iter()
            .zip(stops)
            .rev()
            .find(|(k, stop)| k.alg == alg && Self::signs_at(k, *stop, t))
            .map(|(k, _)| k)
    }

    /// The keys that sign at `t`: at most one per algorithm, in the order of [`Alg::ALL`].
    pub fn signing_keys(&self, t: Timestamp) -> Vec<&SigningKey> {
        Alg::ALL.iter().filter_map(|a| self.signing_key_for(*a, t)).collect()
    }

    /// The keys published at `t`, newest first (every algorithm).
    pub fn published(&self, t: Timestamp) -> Vec<&SigningKey> {
        let stops = self.stops();
        self.keys.iter().zip(stops).rev().filter(|(k, stop)| Self::published_at(k, *stop, t)).map(|(k, _)| k).collect()
    }

    /// The public JWKS at `t`: `{"keys":[...]}`, newest key first.
    pub fn jwks(&self, t: Timestamp) -> Value {
        json!({ "keys": self.published(t).into_iter().map(SigningKey::public_jwk).collect::<Vec<_>>() })
    }

    /// The first instant after `t` at which the set of published keys changes.
    pub fn next_publication_change(&self, t: Timestamp) -> Option<Timestamp> {
        let stops = self.stops();
        self.keys
            .iter()
            .zip(stops)
            .flat_map(|(k, stop)| [Some(k.created_at), stop.map(|s| s.plus_seconds(RETIRED_KEY_GRACE_SECONDS))])
            .flatten()
            .filter(|c| *c > t)
            .min()
    }

    /// Every key as the operator sees it at `t`, oldest first. States are per algorithm:
    /// each algorithm has at most one key in state [`KeyState::Signing`].
    pub fn infos(&self, t: Timestamp) -> Vec<KeyInfo> {
        let stops = self.stops();
        self.keys
            .iter()
            .zip(stops)
            .map(|(k, stop)| {
                let state = if k.retired_at.is_some_and(|r| r <= t) {
                    KeyState::Retired
                } else if Self::signs_at(k, stop, t) {
                    KeyState::Signing
                } else if k.active_from > t && stop.is_none_or(|s| s > t) {
                    KeyState::Pending
                } else {
                    KeyState::Superseded
                };
                KeyInfo {
                    kid: k.kid.clone(),
                    alg: k.alg,
                    state,
                    published: Self::published_at(k, stop, t),
                    created_at: k.created_at.rfc3339(),
                    active_from: k.active_from.rfc3339(),
                    retired_at: k.retired_at.map(Timestamp::rfc3339),
                    stopped_signing_at: stop.map(Timestamp::rfc3339),
                    published_until: stop.map(|s| s.plus_seconds(RETIRED_KEY_GRACE_SECONDS).rfc3339()),
                }
            })
            .collect()
    }

    pub fn info(&self, kid: &str, t: Timestamp) -> Option<KeyInfo> {
        self.infos(t).into_iter().find(|i| i.kid == kid)
    }

    /// A compact JWS of `claims` (a JSON object) signed with the key that signs for `alg`
    /// at `now`; header `alg`, `kid` and `typ: JWT`. [`SigningError::NoSigningKey`] when
    /// no key of `alg` signs then.
    pub fn sign_jwt_with(&self, alg: Alg, claims: &Value, now: Timestamp) -> Result<String, SigningError> {
        if !claims.is_object() {
            return Err(crypto("les claims d'un JWT forment un objet JSON"));
        }
        let key = self.signing_key_for(alg, now).ok_or(SigningError::NoSigningKey(alg))?;
        let mut header = JwsHeader::new();
        header.set_token_type("JWT");
        header.set_key_id(key.kid.clone());
        let payload = serde_json::to_vec(claims).map_err(crypto)?;
        josekit::jws::serialize_compact(&payload, &header, &*key.signer).map_err(crypto)
    }
}

#[cfg(test)]
mod tests {
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
}
