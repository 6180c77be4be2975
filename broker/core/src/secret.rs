//! Secrets: random generation, hashing at rest, constant-time comparison, redacted Debug.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// A secret value whose `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// 32 random bytes, hex-encoded.
    pub fn generate() -> Self {
        Self(hex::encode(random_bytes::<32>()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 (hex) of the secret, as stored. Suitable for high-entropy secrets only.
    pub fn hash(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }

    /// Compares against a stored hash in constant time.
    pub fn matches_hash(&self, stored_hex: &str) -> bool {
        constant_time_eq(self.hash().as_bytes(), stored_hex.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// HMAC-SHA-256 of the concatenated `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value_and_hash_matches() {
        let s = Secret::new("s3cr3t-value");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        let h = s.hash();
        assert_eq!(h.len(), 64);
        assert!(s.matches_hash(&h));
        assert!(!Secret::new("s3cr3t-valuf").matches_hash(&h));
        assert_ne!(Secret::generate(), Secret::generate());
    }
}
