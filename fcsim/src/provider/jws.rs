//! The simulator's ES256 key and compact JWS (RFC 7515), signed and verified with `p256`.
//!
//! The key is derived from a 32-byte seed, so every instance given the same seed publishes
//! the same JWKS and accepts the codes and tokens the others issued.

use data_encoding::BASE64URL_NOPAD;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub const ALG: &str = "ES256";

/// An ES256 key pair and its key id.
pub struct Key {
    signing: SigningKey,
    verifying: VerifyingKey,
    kid: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl Key {
    /// The key derived from `seed` for `label`: SHA-256 over label, counter and seed, taken
    /// as the private scalar (the counter moves on in the negligible case of an invalid one).
    pub fn derive(seed: &[u8; 32], label: &str) -> Key {
        for counter in 0u8..=u8::MAX {
            let mut h = Sha256::new();
            h.update(label.as_bytes());
            h.update([0, counter]);
            h.update(seed);
            if let Ok(signing) = SigningKey::from_slice(&h.finalize()) {
                let verifying = *signing.verifying_key();
                let point = verifying.to_encoded_point(false);
                let mut t = Sha256::new();
                t.update(point.as_bytes());
                let kid = hex::encode(&t.finalize()[..8]);
                return Key { signing, verifying, kid };
            }
        }
        unreachable!("256 consecutive invalid P-256 scalars")
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK, built from its public members only.
    pub fn public_jwk(&self) -> serde_json::Value {
        let point = self.verifying.to_encoded_point(false);
        let (x, y) = (point.x().expect("uncompressed point"), point.y().expect("uncompressed point"));
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": BASE64URL_NOPAD.encode(x),
            "y": BASE64URL_NOPAD.encode(y),
            "kid": self.kid,
            "alg": ALG,
            "use": "sig",
        })
    }

    /// A compact JWS of `claims`, with this key's kid.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> String {
        self.sign_as(&self.kid, typ, claims)
    }

    /// A compact JWS of `claims` whose header names `kid` (used to sign with a key that does
    /// not match the kid announced, for the bad-signature scenarios).
    pub fn sign_as<T: Serialize>(&self, kid: &str, typ: &str, claims: &T) -> String {
        let header = serde_json::json!({ "alg": ALG, "kid": kid, "typ": typ });
        let payload = serde_json::to_vec(claims).expect("claims serialise");
        let input = format!("{}.{}", BASE64URL_NOPAD.encode(header.to_string().as_bytes()), BASE64URL_NOPAD.encode(&payload));
        let signature: Signature = self.signing.sign(input.as_bytes());
        format!("{input}.{}", BASE64URL_NOPAD.encode(&signature.to_bytes()))
    }

    /// The claims of a compact JWS signed by this key with header `typ`, or `None` when the
    /// token is malformed, of another type or algorithm, or its signature does not verify.
    pub fn verify<T: DeserializeOwned>(&self, typ: &str, token: &str) -> Option<T> {
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let h: serde_json::Value = serde_json::from_slice(&BASE64URL_NOPAD.decode(header.as_bytes()).ok()?).ok()?;
        if h.get("alg")?.as_str()? != ALG || h.get("typ")?.as_str()? != typ {
            return None;
        }
        let signature = Signature::from_slice(&BASE64URL_NOPAD.decode(signature.as_bytes()).ok()?).ok()?;
        let input = &token[..header.len() + 1 + payload.len()];
        self.verifying.verify(input.as_bytes(), &signature).ok()?;
        serde_json::from_slice(&BASE64URL_NOPAD.decode(payload.as_bytes()).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Claims {
        a: String,
    }

    #[test]
    fn the_same_seed_gives_the_same_key_and_another_seed_another_key() {
        let a = Key::derive(&[7; 32], "k");
        let b = Key::derive(&[7; 32], "k");
        let c = Key::derive(&[8; 32], "k");
        let d = Key::derive(&[7; 32], "other");
        assert_eq!(a.public_jwk(), b.public_jwk());
        assert_ne!(a.public_jwk(), c.public_jwk());
        assert_ne!(a.kid(), d.kid());
        let token = a.sign("t", &Claims { a: "x".into() });
        assert_eq!(b.verify::<Claims>("t", &token), Some(Claims { a: "x".into() }));
        assert_eq!(c.verify::<Claims>("t", &token), None);
    }

    #[test]
    fn verification_checks_type_signature_and_shape() {
        let k = Key::derive(&[1; 32], "k");
        let token = k.sign("t", &Claims { a: "x".into() });
        assert!(k.verify::<Claims>("t", &token).is_some());
        assert!(k.verify::<Claims>("u", &token).is_none(), "another typ");
        let forged = Key::derive(&[2; 32], "k").sign_as(k.kid(), "t", &Claims { a: "x".into() });
        assert!(k.verify::<Claims>("t", &forged).is_none(), "signed by another key under the same kid");
        let parts: Vec<&str> = token.split('.').collect();
        let other_payload = BASE64URL_NOPAD.encode(br#"{"a":"y"}"#);
        assert!(k.verify::<Claims>("t", &format!("{}.{other_payload}.{}", parts[0], parts[2])).is_none(), "payload changed");
        assert!(k.verify::<Claims>("t", &format!("{token}.x")).is_none());
        assert!(k.verify::<Claims>("t", "a.b").is_none());
    }

    #[test]
    fn the_public_jwk_has_only_public_members() {
        let jwk = Key::derive(&[3; 32], "k").public_jwk();
        let mut names: Vec<&String> = jwk.as_object().unwrap().keys().collect();
        names.sort();
        assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
        assert_eq!(BASE64URL_NOPAD.decode(jwk["x"].as_str().unwrap().as_bytes()).unwrap().len(), 32);
    }
}
