//! The identity provider's short-lived state, kept in the [`Cache`] (Redis or
//! in-process): flows, authorization codes and access tokens, behind one [`GrantStore`].
//!
//! - **Hashed at rest.** A code or an access token is 32 random bytes, base64url without
//!   padding (43 characters), handed out once; the cache only ever sees a SHA-256 (hex)
//!   in a key (`oidc:code:<hash>`, `oidc:at:<hash>`), never the value itself. A code's
//!   hash covers the client it was issued to as well ([`code_hash`]): the code exists
//!   only for that client.
//! - **A code presented by another client is refused and stays whole.** Since the key
//!   is made of the client and the code, another registered client looking it up finds
//!   nothing: `invalid_grant`, and the rightful client still redeems it (RFC 6749 §10.5:
//!   a code must not be usable by anyone else). The check and the consumption are one
//!   atomic step, the key lookup itself.
//! - **Codes live at most [`MAX_CODE_TTL_SECONDS`]** and are **single use**:
//!   [`GrantStore::exchange_code`] is one cache step ([`crate::redemption`]: one script on
//!   Redis, one lock in process) that takes the code, writes its tombstone and, when the
//!   request matches the code, stores the access token; of several concurrent
//!   redemptions exactly one gets the grant. Every redemption by the rightful client
//!   burns the code, including one that fails the token endpoint's checklist
//!   ([`broker_core::oidc::grant::check_redemption`]: expiry by the caller's clock, the
//!   `redirect_uri`, PKCE): RFC 6749 §4.1.2, a code is used once. The cache checks the
//!   code against hashes of what the request must repeat; the checklist runs again on the
//!   grant that comes back, and names the refusal.
//! - **Replay revokes** (RFC 6749 §4.1.2: "If an authorization code is used more than
//!   once, the authorization server MUST deny the request and SHOULD revoke (when
//!   possible) all tokens previously issued based on that authorization code"). The
//!   access token is drawn before the code is consumed, and the code's tombstone
//!   `oidc:code-used:<hash>` (kept [`TOMBSTONE_TTL`]) names its key. A later redemption
//!   of the same code finds the tombstone, deletes that access token and answers
//!   [`GrantError::Replayed`], in the same single step. Taking the code, writing the
//!   tombstone and storing the token being one atomic step, of two redemptions however
//!   close, one runs entirely first and redeems; the other finds its tombstone and
//!   revokes.
//! - Access tokens live at most [`MAX_ACCESS_TOKEN_TTL_SECONDS`], no longer than the
//!   tombstone, so that a replay can always still find and revoke them.
//!
//! All the functions are blocking (the cache is): from async code, run them on the
//! blocking pool, except [`GrantStore::exchange_code_async`], which does not block.

use crate::cache::{Cache, CacheError};
use crate::redemption::{self, Redeemed, Redemption};
use broker_core::oidc::error::{ErrorCode, OAuthError};
use broker_core::oidc::grant::{check_redemption, Grant, Issued, RedemptionRefusal, TokenRequest};
use broker_core::secret::{random_bytes, sha256_hex};
use broker_core::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// The longest an authorization code lives (shared/docs/franceconnect.md §1: 30–60 s).
pub const MAX_CODE_TTL_SECONDS: u64 = 60;
const _: () = assert!(MAX_ACCESS_TOKEN_TTL_SECONDS <= TOMBSTONE_TTL.as_secs());
/// How long a redeemed code's tombstone is kept, to recognise replays and revoke.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(600);
/// The longest an access token lives: no longer than a code's tombstone.
pub const MAX_ACCESS_TOKEN_TTL_SECONDS: u64 = 600;

const FLOW_PREFIX: &str = "oidc:flow:";
const CODE_PREFIX: &str = "oidc:code:";
const TOMBSTONE_PREFIX: &str = "oidc:code-used:";
const ACCESS_TOKEN_PREFIX: &str = "oidc:at:";

/// Why a code gives nothing at `/token`. [`GrantError::Unknown`] and
/// [`GrantError::Replayed`] are answered `invalid_grant` (RFC 6749 §5.2) with one
/// description, the variant going to the log; [`GrantError::Cache`] is `server_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Never issued (to this client), or its cache entry is gone and no tombstone remains.
    #[error("code inconnu")]
    Unknown,
    /// Already redeemed: the token it issued is revoked.
    #[error("code déjà utilisé")]
    Replayed,
    /// Consumed, but the request does not match it (or it expired): the token
    /// endpoint's checklist says why.
    #[error("{0}")]
    Refused(RedemptionRefusal),
    #[error("cache : {0}")]
    Cache(String),
}

impl From<CacheError> for GrantError {
    fn from(e: CacheError) -> Self {
        GrantError::Cache(e.0)
    }
}

impl GrantError {
    pub fn code(&self) -> ErrorCode {
        match self {
            GrantError::Cache(_) => ErrorCode::ServerError,
            _ => ErrorCode::InvalidGrant,
        }
    }
}

impl From<GrantError> for OAuthError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::Cache(_) => OAuthError::internal(&e),
            GrantError::Refused(r) => r.into(),
            _ => OAuthError::new(ErrorCode::InvalidGrant, "Code d'autorisation invalide, expiré ou déjà utilisé.").with_detail(&e),
        }
    }
}

/// SHA-256 (hex) of an access token: what its cache key is made of.
pub fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// SHA-256 (hex) of the client id, a NUL and the code: a code's cache keys (the code,
/// its tombstone) exist for the client it was issued to only.
pub fn code_hash(client_id: &str, code: &str) -> String {
    let mut bytes = Vec::with_capacity(client_id.len() + 1 + code.len());
    bytes.extend_from_slice(client_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(code.as_bytes());
    sha256_hex(&bytes)
}

/// 32 random bytes, base64url without padding.
fn new_token() -> String {
    base64url_nopad(&random_bytes::<32>())
}

fn base64url_nopad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CacheError> {
    serde_json::to_vec(value).map_err(|e| CacheError(format!("encodage : {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CacheError> {
    serde_json::from_slice(bytes).map_err(|e| CacheError(format!("valeur illisible : {e}")))
}

/// What a successful exchange gives: the code's grant and the access token stored for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchanged {
    pub code: Issued<Grant>,
    pub access_token: String,
}

/// The redemption of `request.code` for `client_id`, and the access token it would store
/// (drawn now, so that the code's tombstone can name it).
fn redemption(client_id: &str, request: &TokenRequest<'_>, now: Timestamp, token_seconds: u64) -> (Redemption, String) {
    let hash = code_hash(client_id, request.code);
    let access_token = new_token();
    let lifetime = token_seconds.min(MAX_ACCESS_TOKEN_TTL_SECONDS);
    let expires_at = Issued::new((), now, lifetime).expires_at;
    let r = Redemption {
        code_key: format!("{CODE_PREFIX}{hash}"),
        tombstone_key: format!("{TOMBSTONE_PREFIX}{hash}"),
        tombstone_ttl: TOMBSTONE_TTL,
        token_key: format!("{ACCESS_TOKEN_PREFIX}{}", token_hash(&access_token)),
        token_ttl: Duration::from_secs(lifetime.max(1)),
        token_tail: redemption::issued_tail(now, expires_at),
        binding: redemption::request_binding(client_id, request.redirect_uri, request.code_verifier),
        now,
    };
    (r, access_token)
}

/// The answer to a redemption. The cache decided on hashes; the token endpoint's
/// checklist ([`check_redemption`]) runs again on the grant itself, and names the
/// refusal for the log.
fn exchanged(outcome: Redeemed, client_id: &str, request: &TokenRequest<'_>, now: Timestamp, access_token: String) -> Result<Exchanged, GrantError> {
    match outcome {
        Redeemed::Issued(entry) => {
            let code = redemption::decode_code(&entry)?;
            // Not expected: the binding covers every check. The token stays unknown to all.
            check_redemption(&code, client_id, request, now).map_err(|r| GrantError::Cache(format!("le cache a accepté un code que la vérification refuse : {r}")))?;
            Ok(Exchanged { code, access_token })
        }
        Redeemed::Refused(entry) => {
            let code = redemption::decode_code(&entry)?;
            match check_redemption(&code, client_id, request, now) {
                Err(r) => Err(GrantError::Refused(r)),
                Ok(()) => Err(GrantError::Cache("le cache a refusé un code que la vérification accepte".into())),
            }
        }
        Redeemed::Unknown => Err(GrantError::Unknown),
        Redeemed::Replayed { revoked } => {
            if revoked {
                tracing::warn!(code = %&code_hash(client_id, request.code)[..12], "code rejoué : jeton révoqué");
            }
            Err(GrantError::Replayed)
        }
    }
}

/// Flows, codes and access tokens, in one cache.
#[derive(Clone, Copy)]
pub struct GrantStore<'a> {
    cache: &'a dyn Cache,
}

impl<'a> GrantStore<'a> {
    pub fn new(cache: &'a dyn Cache) -> Self {
        GrantStore { cache }
    }

    fn flow_key(id: &str) -> String {
        format!("{FLOW_PREFIX}{}", sha256_hex(id.as_bytes()))
    }

    /// Keeps (or updates) the flow `id` until its expiry.
    pub fn put_flow<T: Serialize>(&self, id: &str, flow: &Issued<T>, now: Timestamp) -> Result<(), CacheError> {
        self.cache.put(&Self::flow_key(id), &encode(flow)?, Duration::from_secs(flow.seconds_left(now)))
    }

    /// The flow `id`, if it is still kept.
    pub fn flow<T: DeserializeOwned>(&self, id: &str) -> Result<Option<Issued<T>>, CacheError> {
        self.cache.get(&Self::flow_key(id))?.map(|b| decode(&b)).transpose()
    }

    /// Ends the flow `id`; true when it was still there (of two concurrent calls, one).
    pub fn take_flow(&self, id: &str) -> Result<bool, CacheError> {
        Ok(self.cache.take(&Self::flow_key(id))?.is_some())
    }

    /// Issues a single-use code for `grant`, valid until `grant.expires_at` (at most
    /// [`MAX_CODE_TTL_SECONDS`] from its issue). Returns the code, stored only as a hash.
    pub fn issue_code(&self, grant: &Issued<Grant>) -> Result<String, CacheError> {
        let code = new_token();
        let ttl = grant.seconds_left(grant.issued_at).min(MAX_CODE_TTL_SECONDS);
        self.cache.put(&format!("{CODE_PREFIX}{}", code_hash(&grant.value.client_id, &code)), &redemption::encode_code(grant)?, Duration::from_secs(ttl))?;
        Ok(code)
    }

    /// The token endpoint's exchange, in one cache round trip: consumes `request.code` for
    /// `client_id` (already authenticated by the caller), and when the code is live at
    /// `now` and the request repeats its client, `redirect_uri` and PKCE challenge,
    /// stores a new access token for its grant, living `token_seconds` (at most
    /// [`MAX_ACCESS_TOKEN_TTL_SECONDS`]). A code unknown to this client is
    /// [`GrantError::Unknown`] and is not touched; a code that does not match is spent
    /// and refused ([`GrantError::Refused`]); a code already consumed is
    /// [`GrantError::Replayed`] and the token it gave is revoked.
    pub fn exchange_code(&self, client_id: &str, request: &TokenRequest<'_>, now: Timestamp, token_seconds: u64) -> Result<Exchanged, GrantError> {
        let (r, access_token) = redemption(client_id, request, now, token_seconds);
        let outcome = self.cache.redeem(&r)?;
        exchanged(outcome, client_id, request, now, access_token)
    }

    /// [`GrantStore::exchange_code`] from async code: the same single round trip, on the
    /// cache's async connection (inline for the in-process cache), off the blocking pool.
    pub async fn exchange_code_async(&self, client_id: &str, request: &TokenRequest<'_>, now: Timestamp, token_seconds: u64) -> Result<Exchanged, GrantError> {
        let (r, access_token) = redemption(client_id, request, now, token_seconds);
        let outcome = self.cache.redeem_async(r).await?;
        exchanged(outcome, client_id, request, now, access_token)
    }

    /// The grant of a live access token; `None` when unknown, revoked or expired by `now`.
    pub fn token(&self, token: &str, now: Timestamp) -> Result<Option<Issued<Grant>>, CacheError> {
        let Some(bytes) = self.cache.get(&format!("{ACCESS_TOKEN_PREFIX}{}", token_hash(token)))? else {
            return Ok(None);
        };
        let grant: Issued<Grant> = decode(&bytes)?;
        Ok(grant.live_at(now).then_some(grant))
    }

    /// [`GrantStore::token`] from async code, without the blocking pool.
    pub async fn token_async(&self, token: &str, now: Timestamp) -> Result<Option<Issued<Grant>>, CacheError> {
        let key = format!("{ACCESS_TOKEN_PREFIX}{}", token_hash(token));
        let Some(bytes) = self.cache.get_async(&key).await? else {
            return Ok(None);
        };
        let grant: Issued<Grant> = decode(&bytes)?;
        Ok(grant.live_at(now).then_some(grant))
    }

    pub fn revoke_token(&self, token: &str) -> Result<(), CacheError> {
        self.cache.delete(&format!("{ACCESS_TOKEN_PREFIX}{}", token_hash(token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_the_rfc_4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url_nopad(input.as_bytes()), want);
        }
        assert_eq!(base64url_nopad(&[0xfb, 0xff, 0xbf]), "-_-_");
        let t = new_token();
        assert_eq!(t.len(), 43);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
