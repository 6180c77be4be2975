//! OpenID Connect provider rules (the broker as FranceConnect's identity provider):
//! request validation, protocol errors, and the claims the broker hands out.

pub mod authorize;
pub mod claims;
pub mod error;
pub mod grant;
pub mod rep_scope;
pub mod subject;
