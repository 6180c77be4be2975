//! An authorization code redeemed in one cache step: the code taken, its tombstone
//! written, and the access token stored when the caller's request matches the code, all
//! at once ([`crate::cache::Cache::redeem`]: one script on Redis, one lock in process).
//!
//! To decide without a second round trip, the cache must be able to check the code
//! without understanding the grant. A code's entry is therefore a one-line head and the
//! grant's JSON ([`encode_code`]):
//!
//! ```text
//! <issued_at µs> <expires_at µs> <binding: 64 hex digits>\n<grant JSON>
//! ```
//!
//! The binding is a SHA-256 of what the token request must repeat: the client, the
//! `redirect_uri` and the PKCE challenge ([`grant_binding`]); the token endpoint computes
//! the same from the request ([`request_binding`]), deriving the challenge from the
//! verifier. The cache compares two hashes and the expiry with the caller's clock, and
//! builds the access token's entry (`Issued<Grant>` as JSON) from the grant's JSON and a
//! tail the caller serialised: the grant is copied, never parsed, by the cache.

use crate::cache::CacheError;
use broker_core::oidc::authorize::pkce_s256;
use broker_core::oidc::grant::{Grant, Issued};
use broker_core::Timestamp;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// One redemption, as the cache runs it. Keys are the cache's keys (before any prefix).
#[derive(Debug, Clone)]
pub struct Redemption {
    /// The code's entry, taken (read and deleted) whatever follows.
    pub code_key: String,
    /// Written when the code is taken: it holds `token_key`, so that a replay of the code
    /// finds the token to revoke.
    pub tombstone_key: String,
    pub tombstone_ttl: Duration,
    /// Where the access token is stored when the request matches the code.
    pub token_key: String,
    pub token_ttl: Duration,
    /// `,"issued_at":…,"expires_at":…}`: closes the token's `Issued<Grant>` JSON after
    /// the grant.
    pub token_tail: String,
    /// [`request_binding`] of the request.
    pub binding: String,
    /// The caller's clock: a code is live strictly before its `expires_at`.
    pub now: Timestamp,
}

/// What a redemption did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// The code was taken and matched: the access token is stored. The code's entry.
    Issued(Vec<u8>),
    /// The code was taken (and is spent) but expired or did not match: nothing stored.
    /// The code's entry, for the caller to tell why.
    Refused(Vec<u8>),
    /// No such code (for this client) and no tombstone: nothing touched.
    Unknown,
    /// No such code but its tombstone: the token it gave was deleted (`revoked` tells
    /// whether one was still there).
    Replayed { revoked: bool },
}

/// The cache's primitive calls, for [`run`]: a backend without a script of its own runs
/// the redemption through them (atomically when it holds one lock around them all).
pub trait Steps {
    fn take(&mut self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    fn put(&mut self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError>;
    /// Deletes `key`; answers whether it held a live value.
    fn delete(&mut self, key: &str) -> Result<bool, CacheError>;
}

/// The redemption, step by step; [`REDEEM_SCRIPT`] is the same on Redis.
pub fn run(steps: &mut impl Steps, r: &Redemption) -> Result<Redeemed, CacheError> {
    let Some(entry) = steps.take(&r.code_key)? else {
        return Ok(match steps.get(&r.tombstone_key)? {
            None => Redeemed::Unknown,
            Some(token_key) => {
                let token_key = String::from_utf8(token_key).map_err(|_| CacheError("pierre tombale illisible".into()))?;
                Redeemed::Replayed { revoked: steps.delete(&token_key)? }
            }
        });
    };
    steps.put(&r.tombstone_key, r.token_key.as_bytes(), r.tombstone_ttl)?;
    match matching_grant(&entry, r) {
        Some(grant) => {
            steps.put(&r.token_key, &token_value(grant, &r.token_tail), r.token_ttl)?;
            Ok(Redeemed::Issued(entry))
        }
        None => Ok(Redeemed::Refused(entry)),
    }
}

/// The same as [`run`], in one Redis script. KEYS: code, tombstone, access token.
/// ARGV: now (µs), binding, token ttl (ms), token tail, tombstone ttl (ms), the cache's
/// key prefix (the tombstone holds the token's key without it). Returns
/// `{status, entry or nil, revoked}`: 0 unknown, 1 issued, 2 refused, 3 replayed.
pub const REDEEM_SCRIPT: &str = r#"
local entry = redis.call('GETDEL', KEYS[1])
if not entry then
  local token_key = redis.call('GET', KEYS[2])
  if not token_key then return {0, false, 0} end
  return {3, false, redis.call('DEL', ARGV[6] .. token_key)}
end
redis.call('SET', KEYS[2], string.sub(KEYS[3], #ARGV[6] + 1), 'PX', ARGV[5])
local nl = string.find(entry, '\n', 1, true)
if not nl then return {2, entry, 0} end
local expires_at, binding = string.match(string.sub(entry, 1, nl - 1), '^%-?%d+ (%-?%d+) (%x+)$')
if not binding or tonumber(ARGV[1]) >= tonumber(expires_at) or binding ~= ARGV[2] then
  return {2, entry, 0}
end
redis.call('SET', KEYS[3], '{"value":' .. string.sub(entry, nl + 1) .. ARGV[4], 'PX', ARGV[3])
return {1, entry, 0}
"#;

/// The grant's JSON when the entry is live at `r.now` and its binding is the request's.
fn matching_grant<'e>(entry: &'e [u8], r: &Redemption) -> Option<&'e [u8]> {
    let (head, grant) = split(entry)?;
    let mut fields = head.split(' ');
    let (_issued, expires_at, binding) = (fields.next()?, fields.next()?.parse::<i64>().ok()?, fields.next()?);
    (fields.next().is_none() && r.now.micros() < expires_at && binding == r.binding).then_some(grant)
}

fn split(entry: &[u8]) -> Option<(&str, &[u8])> {
    let nl = entry.iter().position(|&b| b == b'\n')?;
    Some((std::str::from_utf8(&entry[..nl]).ok()?, &entry[nl + 1..]))
}

/// The access token's entry: `{"value":<grant>` and the tail.
fn token_value(grant: &[u8], tail: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(grant.len() + tail.len() + 9);
    v.extend_from_slice(b"{\"value\":");
    v.extend_from_slice(grant);
    v.extend_from_slice(tail.as_bytes());
    v
}

/// The tail of an `Issued` JSON after its value, for `issued_at` and `expires_at`.
pub fn issued_tail(issued_at: Timestamp, expires_at: Timestamp) -> String {
    format!(",\"issued_at\":{},\"expires_at\":{}}}", issued_at.micros(), expires_at.micros())
}

fn binding(client_id: &str, redirect_uri: &str, challenge: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(client_id.as_bytes());
    h.update([0]);
    h.update(redirect_uri.as_bytes());
    h.update([0]);
    match challenge {
        Some(c) => {
            h.update([1]);
            h.update(c.as_bytes());
        }
        None => h.update([0]),
    }
    hex::encode(h.finalize())
}

/// What a code binds the token request to: its client, `redirect_uri` and challenge.
pub fn grant_binding(g: &Grant) -> String {
    binding(&g.client_id, &g.redirect_uri, g.code_challenge.as_deref())
}

/// The binding a token request claims. A malformed verifier gives a value that matches
/// no code.
pub fn request_binding(client_id: &str, redirect_uri: &str, code_verifier: Option<&str>) -> String {
    match code_verifier.map(pkce_s256) {
        None => binding(client_id, redirect_uri, None),
        Some(Some(challenge)) => binding(client_id, redirect_uri, Some(&challenge)),
        Some(None) => "-".to_owned(),
    }
}

/// A code's entry (module docs).
pub fn encode_code(code: &Issued<Grant>) -> Result<Vec<u8>, CacheError> {
    let mut v = format!("{} {} {}\n", code.issued_at.micros(), code.expires_at.micros(), grant_binding(&code.value)).into_bytes();
    serde_json::to_writer(&mut v, &code.value).map_err(|e| CacheError(format!("encodage : {e}")))?;
    Ok(v)
}

/// A code's entry read back.
pub fn decode_code(entry: &[u8]) -> Result<Issued<Grant>, CacheError> {
    let unreadable = || CacheError("code illisible".into());
    let (head, grant) = split(entry).ok_or_else(unreadable)?;
    let mut fields = head.split(' ');
    let mut instant = || fields.next().and_then(|f| f.parse::<i64>().ok()).map(Timestamp::from_micros).ok_or_else(unreadable);
    let (issued_at, expires_at) = (instant()?, instant()?);
    let value: Grant = serde_json::from_slice(grant).map_err(|e| CacheError(format!("code illisible : {e}")))?;
    Ok(Issued { value, issued_at, expires_at })
}
