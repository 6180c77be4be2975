//! The rules of the Aidants Connect broker, free of HTTP and SQL types.
//!
//! Every decision the service takes lives here: which démarches exist, how long a
//! mandat lasts and what its status is, which autorisations a new mandat supersedes,
//! what an operator may register, how journal entries are encoded and chained, and
//! which signing key signs and which ones the JWKS publishes.
//! The `store` crate applies these decisions; the `web` crate renders them.

/// Serialises a type as its key (`$t::key`), read back with `$parse` (`&str` to
/// `Option<$t>`); an unknown key is an error naming `$what`.
macro_rules! serde_as_key {
    ($t:ty, $parse:path, $what:literal) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.key())
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let key = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $parse(&key).ok_or_else(|| serde::de::Error::custom(format!("{} inconnu(e) : {key}", $what)))
            }
        }
    };
}

pub mod attestation;
pub mod capability;
pub mod checkpoint;
pub mod client;
pub mod demarche;
pub mod duree;
pub mod identite;
pub mod journal;
pub mod lifecycle;
pub mod mandat;
pub mod mandat_facts;
pub mod notice;
pub mod merkle;
pub mod oidc;
pub mod secret;
pub mod signing;
pub mod time;
pub mod totp;
pub mod validate;

pub use demarche::Demarche;
pub use time::Timestamp;
