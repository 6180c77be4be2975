//! The rules of the Aidants Connect broker, free of HTTP and SQL types.
//!
//! Every decision the service takes lives here: which démarches exist, how long a
//! mandat lasts and what its status is, which autorisations a new mandat supersedes,
//! what an operator may register, how journal entries are encoded and chained, and
//! which signing key signs and which ones the JWKS publishes.
//! The `store` crate applies these decisions; the `web` crate renders them.

pub mod attestation;
pub mod capability;
pub mod checkpoint;
pub mod client;
pub mod demarche;
pub mod identite;
pub mod journal;
pub mod mandat;
pub mod merkle;
pub mod oidc;
pub mod secret;
pub mod signing;
pub mod time;
pub mod totp;
pub mod validate;

pub use demarche::Demarche;
pub use time::Timestamp;
