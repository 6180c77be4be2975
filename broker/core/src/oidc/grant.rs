//! One grant, from the aidant's choice of a démarche to the `autorisation_used` entry.
//!
//! A [`Grant`] is made once, when the code is issued, from the checked request and an
//! [`ActingFor`]; the code and then the access token each carry it unchanged inside an
//! [`Issued`] (its own issue and expiry instants). `/token` checks a redemption with the
//! named checklist [`check_redemption`]; `/userinfo` discloses for the grant's
//! [`ActingFor`], checked again at that instant by the store.

use super::authorize::verify_pkce;
use super::claims::Scope;
use super::error::{ErrorCode, OAuthError};
use crate::capability::ActingFor;
use crate::secret::constant_time_eq;
use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// What a code, then an access token, stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub client_id: String,
    /// The request's `redirect_uri`, which `/token` must repeat exactly.
    pub redirect_uri: String,
    pub nonce: String,
    /// The S256 PKCE challenge, when the request had one.
    pub code_challenge: Option<String>,
    pub scopes: Vec<Scope>,
    /// Who acts for whom, on which démarche, checked when the code was issued.
    pub acting: ActingFor,
    /// The usager's broker id (a client sees it as is, or pairwise).
    pub usager_sub: String,
    /// The id_token's `rep_scope` value when the client asked for it, in its spelling.
    pub rep_scope: Option<String>,
    /// When the aidant proved their second factor (`auth_time`).
    pub auth_time: Timestamp,
    pub amr: Vec<String>,
}

/// A value handed out for a while: a flow, a code, an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued<T> {
    pub value: T,
    pub issued_at: Timestamp,
    /// Valid strictly before this instant.
    pub expires_at: Timestamp,
}

impl<T> Issued<T> {
    pub fn new(value: T, now: Timestamp, lifetime_seconds: u64) -> Self {
        Issued { value, issued_at: now, expires_at: now.plus_seconds(i64::try_from(lifetime_seconds).unwrap_or(i64::MAX / 2_000_000)) }
    }

    pub fn live_at(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }

    /// Whole seconds left at `now` (at least 1: a cache entry needs a lifetime).
    pub fn seconds_left(&self, now: Timestamp) -> u64 {
        u64::try_from((self.expires_at.micros() - now.micros()) / 1_000_000).unwrap_or(0).max(1)
    }
}

/// The parameters of a token request, each present once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest<'a> {
    pub code: &'a str,
    pub redirect_uri: &'a str,
    pub code_verifier: Option<&'a str>,
}

/// The value of parameter `name` (an empty value counts as absent, RFC 6749 §3.1), or
/// `invalid_request` when it is given twice.
pub fn one<'a>(params: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, OAuthError> {
    let mut found = params.iter().filter(|(k, v)| k == name && !v.is_empty());
    let first = found.next().map(|(_, v)| v.as_str());
    if found.next().is_some() {
        return Err(OAuthError::invalid_request(format!("le paramètre {name} est répété")));
    }
    Ok(first)
}

impl<'a> TokenRequest<'a> {
    /// The request's checklist before any lookup: `grant_type=authorization_code`, then
    /// `code` and `redirect_uri` present, each parameter at most once.
    pub fn parse(params: &'a [(String, String)]) -> Result<Self, OAuthError> {
        match one(params, "grant_type")? {
            Some("authorization_code") => {}
            Some(_) => return Err(OAuthError::new(ErrorCode::UnsupportedGrantType, "Seul grant_type=authorization_code est accepté.")),
            None => return Err(OAuthError::invalid_request("grant_type est obligatoire")),
        }
        Ok(TokenRequest {
            code: one(params, "code")?.ok_or_else(|| OAuthError::invalid_request("code est obligatoire"))?,
            redirect_uri: one(params, "redirect_uri")?.ok_or_else(|| OAuthError::invalid_request("redirect_uri est obligatoire"))?,
            code_verifier: one(params, "code_verifier")?,
        })
    }
}

/// Why a redeemed code does not give tokens. All are `invalid_grant` with one
/// description, so that the answer does not tell which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedemptionRefusal {
    #[error("code expiré")]
    Expired,
    #[error("code délivré à un autre client")]
    OtherClient,
    #[error("redirect_uri différente de celle de la demande d'autorisation")]
    OtherRedirect,
    #[error("PKCE : vérificateur absent, inattendu ou faux")]
    Pkce,
}

impl From<RedemptionRefusal> for OAuthError {
    fn from(r: RedemptionRefusal) -> Self {
        OAuthError::new(ErrorCode::InvalidGrant, "Code d'autorisation invalide, expiré ou déjà utilisé.").with_detail(r)
    }
}

/// The token endpoint's checks on a code just consumed, in order: not expired at `now`,
/// issued to this client, the same `redirect_uri`, and PKCE (a verifier exactly when the
/// request had a challenge, and matching it). Comparisons are constant-time.
pub fn check_redemption(code: &Issued<Grant>, client_id: &str, request: &TokenRequest<'_>, now: Timestamp) -> Result<(), RedemptionRefusal> {
    let g = &code.value;
    if !code.live_at(now) {
        return Err(RedemptionRefusal::Expired);
    }
    if !constant_time_eq(g.client_id.as_bytes(), client_id.as_bytes()) {
        return Err(RedemptionRefusal::OtherClient);
    }
    if !constant_time_eq(g.redirect_uri.as_bytes(), request.redirect_uri.as_bytes()) {
        return Err(RedemptionRefusal::OtherRedirect);
    }
    let pkce_ok = match (&g.code_challenge, request.code_verifier) {
        (Some(challenge), Some(v)) => verify_pkce(challenge, v),
        (None, None) => true,
        _ => false,
    };
    if !pkce_ok {
        return Err(RedemptionRefusal::Pkce);
    }
    Ok(())
}

#[cfg(test)]
#[path = "grant_tests.rs"]
mod tests;
