//! Secrets the service must read back (TOTP seeds, HS256 client secrets) are sealed
//! with XChaCha20-Poly1305 under a key kept in the key directory, never in the database.

use crate::StoreError;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const PREFIX: &str = "v1.";

#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(…)")
    }
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Self {
        Self { cipher: XChaCha20Poly1305::new(key.into()) }
    }

    /// `v1.` + hex(nonce ‖ ciphertext). `context` is bound as associated data, so a
    /// sealed value cannot be moved to another row or purpose.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), chacha20poly1305::aead::Payload { msg: plaintext, aad: context.as_bytes() })
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", hex::encode(out))
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, StoreError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .filter(|b| b.len() > 24)
            .ok_or_else(|| StoreError::Seal("format inconnu".into()))?;
        let (nonce, ct) = raw.split_at(24);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), chacha20poly1305::aead::Payload { msg: ct, aad: context.as_bytes() })
            .map_err(|_| StoreError::Seal("clé de scellement différente ou valeur altérée".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_bound_to_key_and_context() {
        let s = Sealer::new(&[7u8; 32]);
        let sealed = s.seal(b"graine", "totp_card:C1");
        assert!(!sealed.contains(&hex::encode(b"graine")));
        assert_eq!(s.open(&sealed, "totp_card:C1").unwrap(), b"graine");
        assert!(s.open(&sealed, "totp_card:C2").is_err());
        assert!(Sealer::new(&[8u8; 32]).open(&sealed, "totp_card:C1").is_err());
        assert_ne!(s.seal(b"graine", "x"), s.seal(b"graine", "x"), "fresh nonce each time");
    }
}
