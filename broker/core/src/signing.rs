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
#[path = "signing_tests.rs"]
mod tests;
