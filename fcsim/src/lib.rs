//! FranceConnect simulators.
//!
//! Core side: an OpenID Connect client that calls the broker's identity provider endpoints
//! exactly as FranceConnect's core does (see `docs/franceconnect.md`), with the
//! `openidconnect` crate.
//!
//! [`demo`] is the demonstration e-service of the embedded default (development only):
//! pages under `/demo` where a newcomer clicks "Se connecter avec FranceConnect", picks
//! "Aidants Connect", goes through the broker's flow and comes back to see the identity and
//! the démarche received.
//!
//! [`provider`] is the other side: a FranceConnect v2 simulator that the broker, as a
//! relying party, calls to identify a usager when a mandat is made (embedded default and
//! tests), with test identities and failure scenarios.

pub mod demo;
pub mod provider;
