//! Storage for the Aidants Connect broker: PostgreSQL or embedded SQLite through one
//! diesel code path, the journal appender and verifier, sealed secrets, and the
//! short-lived state cache (Redis or in-process).

pub mod admin;
pub mod attestations;
pub mod audit;
pub mod auth;
pub mod breaker;
pub mod cache;
pub mod capabilities;
pub mod checkpoints;
pub mod conn;
pub mod db;
pub mod disclosure;
pub mod group;
pub mod idp;
pub mod jobs;
pub mod journal;
pub mod lifecycle;
pub mod mail_queue;
pub mod mandat_changes;
pub mod mandat_facts;
pub mod mandats;
pub mod metrics;
pub mod oidc_state;
pub mod redemption;
pub mod referent;
pub mod revocation;
pub mod schema;
pub mod seal;
pub mod second_factors;
pub mod stats;
pub mod tiles;
pub mod tx;
pub mod usager_space;
pub mod webauthn;

pub use conn::{AnyConnection, Backend, DatabaseUrl};
pub use db::Db;

use broker_core::validate::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Input refused by a rule; the message is for the person who typed it.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("base de données injoignable : {0}")]
    Unavailable(String),
    #[error("migration : {0}")]
    Migration(String),
    #[error("erreur de base de données : {0}")]
    Database(#[from] diesel::result::Error),
    #[error("secret scellé illisible : {0}")]
    Seal(String),
    /// A file written together with a change (a signing key) could not be written.
    #[error("{0}")]
    File(String),
}

impl From<cache::CacheError> for StoreError {
    fn from(e: cache::CacheError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<Invalid> for StoreError {
    fn from(e: Invalid) -> Self {
        StoreError::Invalid(e.0)
    }
}

impl StoreError {
    /// True when the caller gave bad input (exit code 2 for the CLI, 4xx for HTTP).
    pub fn is_user_error(&self) -> bool {
        matches!(self, StoreError::Invalid(_) | StoreError::NotFound(_) | StoreError::Conflict(_))
    }
}
