//! A software WebAuthn authenticator for tests: behaves like a FIDO2 security key
//! whose PIN has just been entered. It answers the options a relying party gives
//! (`{"publicKey": {...}}`) with the JSON a browser would post back, base64url fields
//! without padding, as `webauthn-rs-proto`'s `RegisterPublicKeyCredential` and
//! `PublicKeyCredential` read them.
//!
//! - ES256 keys (`p256`), attestation `none`, zero AAGUID, 16-byte random credential ids;
//! - flags UP | UV (no backup flags: a hardware key), AT at registration;
//! - one signature counter for the whole device, incremented at every operation;
//! - every credential is resident: kept with its RP id and user handle, so that a
//!   sign-in without `allowCredentials` finds it.
//!
//! Knobs for negative tests: [`SoftAuthenticator::bad_signature`] signs something else,
//! [`SoftAuthenticator::user_verification`] set to `false` leaves the UV flag out.

use ciborium::value::Value as Cbor;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_AT: u8 = 0x40;

/// COSE algorithm id of ES256.
const ES256: i64 = -7;

fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(bytes)
}

fn unb64(s: &str) -> Result<Vec<u8>, String> {
    data_encoding::BASE64URL_NOPAD
        .decode(s.trim_end_matches('=').as_bytes())
        .map_err(|e| format!("base64url illisible: {e}"))
}

/// A credential the authenticator holds.
#[derive(Clone)]
pub struct ResidentCredential {
    pub rp_id: String,
    pub credential_id: Vec<u8>,
    pub user_handle: Vec<u8>,
    pub user_name: String,
    key: SigningKey,
}

impl ResidentCredential {
    /// Base64url without padding, as the relying party stores it.
    pub fn id_b64(&self) -> String {
        b64(&self.credential_id)
    }
}

/// Why the authenticator (or the browser in front of it) would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatorError(pub String);

impl std::fmt::Display for AuthenticatorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthenticatorError {}

fn err(msg: impl Into<String>) -> AuthenticatorError {
    AuthenticatorError(msg.into())
}

pub struct SoftAuthenticator {
    credentials: Vec<ResidentCredential>,
    counter: u32,
    /// Sign with a key that is not the credential's (default `false`).
    pub bad_signature: bool,
    /// Set the UV flag (default `true`: the PIN was entered).
    pub user_verification: bool,
}

impl Default for SoftAuthenticator {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftAuthenticator {
    pub fn new() -> Self {
        Self { credentials: Vec::new(), counter: 0, bad_signature: false, user_verification: true }
    }

    /// The credentials held, oldest first.
    pub fn credentials(&self) -> &[ResidentCredential] {
        &self.credentials
    }

    /// The device's signature counter (last value used).
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// Answers `navigator.credentials.create(options)` from a page at `origin`.
    /// Panics where a browser would reject (see [`SoftAuthenticator::try_register`]).
    pub fn register(&mut self, options: &Value, origin: &str) -> Value {
        self.try_register(options, origin).unwrap_or_else(|e| panic!("registration refused: {e}"))
    }

    /// Answers `navigator.credentials.get(options)` from a page at `origin`.
    /// Panics where a browser would reject (see [`SoftAuthenticator::try_sign_in`]).
    pub fn sign_in(&mut self, options: &Value, origin: &str) -> Value {
        self.try_sign_in(options, origin).unwrap_or_else(|e| panic!("sign-in refused: {e}"))
    }

    fn flags(&self) -> u8 {
        FLAG_UP | if self.user_verification { FLAG_UV } else { 0 }
    }

    fn next_counter(&mut self) -> u32 {
        self.counter += 1;
        self.counter
    }

    /// Registration; refuses, as a browser would, options without ES256, a user
    /// handle or challenge missing, or an `excludeCredentials` entry this device holds.
    /// A credential for the same RP and user handle replaces the earlier one (CTAP2).
    pub fn try_register(&mut self, options: &Value, origin: &str) -> Result<Value, AuthenticatorError> {
        let pk = options.get("publicKey").unwrap_or(options);
        let str_at = |p: &str| pk.pointer(p).and_then(Value::as_str).ok_or_else(|| err(format!("options sans {p}")));
        let challenge = str_at("/challenge")?.to_owned();
        let rp_id = str_at("/rp/id")?.to_owned();
        let user_handle = unb64(str_at("/user/id")?).map_err(err)?;
        let user_name = str_at("/user/name")?.to_owned();
        let es256 = pk
            .get("pubKeyCredParams")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().any(|p| p.get("alg").and_then(Value::as_i64) == Some(ES256)));
        if !es256 {
            return Err(err("ES256 non proposé"));
        }
        if let Some(excluded) = pk.get("excludeCredentials").and_then(Value::as_array) {
            for d in excluded {
                let id = d.get("id").and_then(Value::as_str).map(unb64).transpose().map_err(err)?;
                if self.credentials.iter().any(|c| c.rp_id == rp_id && Some(&c.credential_id) == id.as_ref()) {
                    return Err(err("InvalidStateError: cet appareil est déjà enregistré"));
                }
            }
        }
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let credential_id: [u8; 16] = rand::random();
        let point = key.verifying_key().to_encoded_point(false);
        let cose = Cbor::Map(vec![
            (Cbor::Integer(1.into()), Cbor::Integer(2.into())),            // kty: EC2
            (Cbor::Integer(3.into()), Cbor::Integer(ES256.into())),        // alg: ES256
            (Cbor::Integer((-1).into()), Cbor::Integer(1.into())),         // crv: P-256
            (Cbor::Integer((-2).into()), Cbor::Bytes(point.x().expect("x").to_vec())),
            (Cbor::Integer((-3).into()), Cbor::Bytes(point.y().expect("y").to_vec())),
        ]);
        let mut cose_bytes = Vec::new();
        ciborium::into_writer(&cose, &mut cose_bytes).expect("CBOR");

        let counter = self.next_counter();
        let mut auth_data = Vec::with_capacity(37 + 18 + 16 + cose_bytes.len());
        auth_data.extend_from_slice(&Sha256::digest(rp_id.as_bytes()));
        auth_data.push(self.flags() | FLAG_AT);
        auth_data.extend_from_slice(&counter.to_be_bytes());
        auth_data.extend_from_slice(&[0u8; 16]); // AAGUID
        auth_data.extend_from_slice(&(credential_id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&credential_id);
        auth_data.extend_from_slice(&cose_bytes);

        let attestation_object = Cbor::Map(vec![
            (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
            (Cbor::Text("attStmt".into()), Cbor::Map(vec![])),
            (Cbor::Text("authData".into()), Cbor::Bytes(auth_data)),
        ]);
        let mut ao_bytes = Vec::new();
        ciborium::into_writer(&attestation_object, &mut ao_bytes).expect("CBOR");
        let client_data = client_data_json("webauthn.create", &challenge, origin);

        self.credentials.retain(|c| !(c.rp_id == rp_id && c.user_handle == user_handle));
        self.credentials.push(ResidentCredential {
            rp_id,
            credential_id: credential_id.to_vec(),
            user_handle,
            user_name,
            key,
        });
        let id = b64(&credential_id);
        Ok(json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "response": {
                "attestationObject": b64(&ao_bytes),
                "clientDataJSON": b64(&client_data),
                "transports": ["usb"],
            },
            "clientExtensionResults": { "credProps": { "rk": true } },
        }))
    }

    /// Assertion with the most recent credential for the options' RP id (restricted to
    /// `allowCredentials` when the list is not empty). Refuses when none fits.
    pub fn try_sign_in(&mut self, options: &Value, origin: &str) -> Result<Value, AuthenticatorError> {
        let pk = options.get("publicKey").unwrap_or(options);
        let challenge = pk.get("challenge").and_then(Value::as_str).ok_or_else(|| err("options sans challenge"))?.to_owned();
        let rp_id = pk.get("rpId").and_then(Value::as_str).ok_or_else(|| err("options sans rpId"))?.to_owned();
        let allowed: Vec<Vec<u8>> = pk
            .get("allowCredentials")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(|d| d.get("id").and_then(Value::as_str)).map(unb64).collect::<Result<_, _>>())
            .transpose()
            .map_err(err)?
            .unwrap_or_default();
        let cred = self
            .credentials
            .iter()
            .rev()
            .find(|c| c.rp_id == rp_id && (allowed.is_empty() || allowed.contains(&c.credential_id)))
            .cloned()
            .ok_or_else(|| err("NotAllowedError: aucun identifiant pour ce site"))?;
        Ok(self.assert_with(&cred, &challenge, origin))
    }

    /// An assertion signed by `cred` (which may come from another authenticator, to
    /// test a substituted key), bumping this device's counter.
    pub fn assert_with(&mut self, cred: &ResidentCredential, challenge: &str, origin: &str) -> Value {
        let counter = self.next_counter();
        let mut auth_data = Vec::with_capacity(37);
        auth_data.extend_from_slice(&Sha256::digest(cred.rp_id.as_bytes()));
        auth_data.push(self.flags());
        auth_data.extend_from_slice(&counter.to_be_bytes());
        let client_data = client_data_json("webauthn.get", challenge, origin);
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(&client_data));
        let signature: Signature = if self.bad_signature {
            SigningKey::random(&mut rand::rngs::OsRng).sign(&signed)
        } else {
            cred.key.sign(&signed)
        };
        let id = b64(&cred.credential_id);
        json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(signature.to_der().as_bytes()),
                "userHandle": b64(&cred.user_handle),
            },
            "clientExtensionResults": {},
        })
    }
}

/// `clientDataJSON` as browsers serialise it (key order: type, challenge, origin,
/// crossOrigin).
fn client_data_json(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
    let origin = origin.trim_end_matches('/');
    format!(
        "{{\"type\":{},\"challenge\":{},\"origin\":{},\"crossOrigin\":false}}",
        Value::from(kind),
        Value::from(challenge),
        Value::from(origin)
    )
    .into_bytes()
}
