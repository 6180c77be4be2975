//! `/authorize`: parsing and validating an authorization request, as a checklist.
//!
//! The raw parameters (GET query or POST form, in the order received) go through:
//!
//! 1. `client_id` present once, and known → else an error **page**;
//! 2. `redirect_uri` present once, and byte-for-byte one of the client's registered
//!    URIs (no normalisation: no trailing-slash, case or query leniency) → else an
//!    error **page**.
//!
//! From then on every fault is an error **redirect** to that `redirect_uri`, carrying
//! the request's `state` when it was given once and is well formed:
//!
//! 3. no parameter given twice (`invalid_request`);
//! 4. `response_type=code` (`invalid_request` when missing, else
//!    `unsupported_response_type`);
//! 5. `scope` containing `openid` (`invalid_scope`); `profile`, `email`, `birth` are
//!    recorded as claim bundles. **Other scope values are ignored**, as OpenID Connect
//!    Core §3.1.2.1 asks ("scope values used that are not understood by an
//!    implementation SHOULD be ignored"): refusing them would break a core that adds a
//!    scope value, and ignoring one grants nothing;
//! 6. `acr_values` containing `eidas1` (`invalid_request`);
//! 7. `state`, then 8. `nonce`: required, 1 to 256 visible ASCII characters
//!    (`invalid_request`);
//! 9. `prompt`: values among login, none, consent, select_account; `none` alone
//!    (`invalid_request`);
//! 10. `claims`: JSON object (8 KiB at most); `id_token.rep_scope`, when present, is
//!     read by [`RepScope::parse`]: an empty or absent list restricts nothing, keys and
//!     FranceConnect's labels are understood, unknown values beside known ones are
//!     ignored, and only unknown values is `invalid_request` naming them;
//! 11. PKCE: `code_challenge_method=S256` only, and with a `code_challenge` of 43 to 128
//!     unreserved characters (`invalid_request`). A `code_challenge` without a method
//!     means `plain` (RFC 7636 §4.3), which is refused too.
//!
//! As RFC 6749 §3.1 asks, a parameter sent with an empty value is treated as omitted.
//! Whether the organisation may act for the requested démarches is checked once the
//! aidant is known: [`RepScope::within`]. The code's PKCE binding is checked at
//! the token endpoint: [`verify_pkce`].

use data_encoding::BASE64URL_NOPAD;
use sha2::{Digest, Sha256};

use super::claims::{Scope, ACR_EIDAS1};
use super::error::{ErrorCode, OAuthError};
use super::rep_scope::RepScope;
use crate::secret::constant_time_eq;

/// What the checks need to know about a registered client, borrowed from whatever
/// storage holds it.
#[derive(Debug, Clone, Copy)]
pub struct ClientView<'a> {
    pub client_id: &'a str,
    pub redirect_uris: &'a [String],
}

/// Anything that can show itself as a [`ClientView`]: the storage crate implements it
/// for its own client type, so `validate` can take an owned lookup result.
pub trait AsClientView {
    fn client_view(&self) -> ClientView<'_>;
}

impl AsClientView for ClientView<'_> {
    fn client_view(&self) -> ClientView<'_> {
        *self
    }
}

impl<T: AsClientView + ?Sized> AsClientView for &T {
    fn client_view(&self) -> ClientView<'_> {
        (**self).client_view()
    }
}

/// A `redirect_uri` found, byte for byte, among the client's registered ones: the only
/// value an answer may send the browser to. Built by the registered-URI check alone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RegisteredUri(String);

impl RegisteredUri {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an authorization step answers the browser with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Client or redirect URI not trusted (or the service failed before knowing them): a
    /// page, never a redirect.
    Page(OAuthError),
    /// An error sent back to the client (RFC 6749 §4.1.2.1).
    Error { to: RegisteredUri, state: Option<String>, error: OAuthError },
    /// The code (RFC 6749 §4.1.2).
    Code { to: RegisteredUri, state: String, code: String },
}

/// A validated authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    pub client_id: String,
    /// Exactly as given (and registered).
    pub redirect_uri: RegisteredUri,
    pub state: String,
    pub nonce: String,
    /// Known scope values, deduplicated, in the order of [`Scope::ALL`].
    pub scopes: Vec<Scope>,
    /// `prompt` contains `login`: ask for a fresh second factor even with a live session.
    pub prompt_login: bool,
    /// `prompt=none`: answer `login_required` when there is no session.
    pub prompt_none: bool,
    /// `Some` when `claims.id_token.rep_scope` was requested (the id_token then carries
    /// `rep_scope`): which démarches the e-service accepts, and in which spelling.
    pub rep_scope: Option<RepScope>,
    /// `rep_scope` values the broker does not know, ignored beside known ones (bounded,
    /// for an info-level log line).
    pub rep_scope_ignored: Vec<String>,
    /// The S256 PKCE challenge, when the client sent one.
    pub code_challenge: Option<String>,
    /// Always [`ACR_EIDAS1`], the only level the broker answers.
    pub acr: &'static str,
}

/// Why a request is refused, and where the answer may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Client or redirect URI not trusted: show a page, never redirect.
    ErrorPage(OAuthError),
    /// Redirect to the (checked) `redirect_uri` with the error and `state`.
    Redirect {
        redirect_uri: RegisteredUri,
        state: Option<String>,
        error: OAuthError,
    },
}

impl From<Rejection> for Outcome {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::ErrorPage(e) => Outcome::Page(e),
            Rejection::Redirect { redirect_uri, state, error } => Outcome::Error { to: redirect_uri, state, error },
        }
    }
}

impl Rejection {
    pub fn error(&self) -> &OAuthError {
        match self {
            Rejection::ErrorPage(e) | Rejection::Redirect { error: e, .. } => e,
        }
    }
}

/// Validates an authorization request. `find_client` looks a client up by id; it is
/// called at most once.
pub fn validate<K, V, C>(
    params: &[(K, V)],
    find_client: impl FnOnce(&str) -> Option<C>,
) -> Result<AuthorizeRequest, Rejection>
where
    K: AsRef<str>,
    V: AsRef<str>,
    C: AsClientView,
{
    try_validate(params, |id| {
        Ok::<_, std::convert::Infallible>(find_client(id))
    })
}

/// [`validate`] with a fallible lookup: a lookup failure (storage down…) becomes a
/// `server_error` page with a generic description, the failure itself in `detail`.
pub fn try_validate<K, V, C, E>(
    params: &[(K, V)],
    find_client: impl FnOnce(&str) -> Result<Option<C>, E>,
) -> Result<AuthorizeRequest, Rejection>
where
    K: AsRef<str>,
    V: AsRef<str>,
    C: AsClientView,
    E: std::fmt::Display,
{
    let p = Params::new(params);
    let client_id = client_id(&p).map_err(Rejection::ErrorPage)?;
    let client = find_client(client_id)
        .map_err(|e| {
            let mut error = OAuthError::internal(e);
            error.redirectable = false;
            Rejection::ErrorPage(error)
        })?
        .ok_or_else(|| Rejection::ErrorPage(unknown_client()))?;
    let client = client.client_view();
    // A lookup that matched loosely (case-insensitive collation…) is not a match.
    if client.client_id != client_id {
        return Err(Rejection::ErrorPage(unknown_client()));
    }
    let redirect_uri = registered_redirect_uri(&p, &client).map_err(Rejection::ErrorPage)?;

    checklist(&p, client_id, redirect_uri).map_err(|error| Rejection::Redirect {
        redirect_uri: RegisteredUri(redirect_uri.to_owned()),
        state: echoable_state(&p),
        error,
    })
}

fn checklist(
    p: &Params<'_>,
    client_id: &str,
    redirect_uri: &str,
) -> Result<AuthorizeRequest, OAuthError> {
    no_duplicates(p)?;
    response_type_code(p)?;
    let scopes = scopes(p)?;
    let acr = acr(p)?;
    let state = bounded_token(p, "state")?;
    let nonce = bounded_token(p, "nonce")?;
    let (prompt_login, prompt_none) = prompt(p)?;
    let (rep_scope, rep_scope_ignored) = match claims_rep_scope(p)? {
        Some(parsed) => (Some(parsed.scope), parsed.ignored),
        None => (None, Vec::new()),
    };
    let code_challenge = pkce(p)?;
    Ok(AuthorizeRequest {
        client_id: client_id.to_owned(),
        redirect_uri: RegisteredUri(redirect_uri.to_owned()),
        state: state.to_owned(),
        nonce: nonce.to_owned(),
        scopes,
        prompt_login,
        prompt_none,
        rep_scope,
        rep_scope_ignored,
        code_challenge,
        acr,
    })
}

// ---- parameters ----------------------------------------------------------------------

/// The non-empty parameters, in order.
struct Params<'p>(Vec<(&'p str, &'p str)>);

enum Param<'p> {
    Absent,
    One(&'p str),
    Repeated,
}

impl<'p> Params<'p> {
    fn new<K: AsRef<str>, V: AsRef<str>>(raw: &'p [(K, V)]) -> Self {
        Params(
            raw.iter()
                .map(|(k, v)| (k.as_ref(), v.as_ref()))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Param<'p> {
        let mut found = Param::Absent;
        for &(k, v) in &self.0 {
            if k == name {
                found = match found {
                    Param::Absent => Param::One(v),
                    _ => return Param::Repeated,
                };
            }
        }
        found
    }

    fn one(&self, name: &str) -> Option<&'p str> {
        match self.get(name) {
            Param::One(v) => Some(v),
            _ => None,
        }
    }
}

fn invalid(description: impl Into<String>) -> OAuthError {
    OAuthError::invalid_request(description)
}

// ---- 1, 2: client and redirect URI (error pages) --------------------------------------

fn unknown_client() -> OAuthError {
    OAuthError::page(ErrorCode::InvalidRequest, "Client inconnu (client_id).")
}

fn client_id<'p>(p: &Params<'p>) -> Result<&'p str, OAuthError> {
    match p.get("client_id") {
        Param::One(v) => Ok(v),
        Param::Absent => Err(OAuthError::page(
            ErrorCode::InvalidRequest,
            "Le paramètre client_id est obligatoire.",
        )),
        Param::Repeated => Err(OAuthError::page(
            ErrorCode::InvalidRequest,
            "Le paramètre client_id est répété.",
        )),
    }
}

fn registered_redirect_uri<'p>(
    p: &Params<'p>,
    client: &ClientView<'_>,
) -> Result<&'p str, OAuthError> {
    let page = |d: &str| OAuthError::page(ErrorCode::InvalidRequest, d);
    match p.get("redirect_uri") {
        Param::Absent => Err(page("Le paramètre redirect_uri est obligatoire.")),
        Param::Repeated => Err(page("Le paramètre redirect_uri est répété.")),
        Param::One(uri) if client.redirect_uris.iter().any(|r| r == uri) => Ok(uri),
        Param::One(uri) => Err(page(
            "redirect_uri ne correspond à aucune URI enregistrée pour ce client.",
        )
        .with_detail(format_args!(
            "client {} redirect_uri {uri:?}",
            client.client_id
        ))),
    }
}

/// The `state` to send back with an error: only when given once and well formed, so
/// that arbitrary input is never reflected.
fn echoable_state(p: &Params<'_>) -> Option<String> {
    p.one("state")
        .filter(|s| is_bounded_token(s))
        .map(str::to_owned)
}

// ---- 3 .. 11: the checklist (error redirects) -----------------------------------------

fn no_duplicates(p: &Params<'_>) -> Result<(), OAuthError> {
    for (i, (name, _)) in p.0.iter().enumerate() {
        if p.0[..i].iter().any(|(k, _)| k == name) {
            return Err(invalid(format!(
                "Le paramètre {} est répété.",
                printable(name)
            )));
        }
    }
    Ok(())
}

fn response_type_code(p: &Params<'_>) -> Result<(), OAuthError> {
    match p.one("response_type") {
        Some("code") => Ok(()),
        None => Err(invalid("Le paramètre response_type est obligatoire.")),
        Some(_) => Err(OAuthError::new(
            ErrorCode::UnsupportedResponseType,
            "Seul response_type=code est pris en charge.",
        )),
    }
}

fn scopes(p: &Params<'_>) -> Result<Vec<Scope>, OAuthError> {
    let mut scopes: Vec<Scope> = p
        .one("scope")
        .unwrap_or("")
        .split(' ')
        .filter_map(Scope::parse) // unknown values are ignored (OIDC Core §3.1.2.1)
        .collect();
    scopes.sort();
    scopes.dedup();
    if !scopes.contains(&Scope::OpenId) {
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            "Le scope doit contenir openid.",
        ));
    }
    Ok(scopes)
}

fn acr(p: &Params<'_>) -> Result<&'static str, OAuthError> {
    let values = p.one("acr_values").unwrap_or("");
    if values.split(' ').any(|v| v == ACR_EIDAS1) {
        Ok(ACR_EIDAS1)
    } else {
        Err(invalid(
            "acr_values doit contenir eidas1 (seul niveau proposé).",
        ))
    }
}

const TOKEN_MAX: usize = 256;

fn is_bounded_token(v: &str) -> bool {
    (1..=TOKEN_MAX).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic())
}

/// `state` and `nonce`: required, 1 to 256 visible ASCII characters.
fn bounded_token<'p>(p: &Params<'p>, name: &str) -> Result<&'p str, OAuthError> {
    match p.one(name) {
        None => Err(invalid(format!("Le paramètre {name} est obligatoire."))),
        Some(v) if is_bounded_token(v) => Ok(v),
        Some(_) => Err(invalid(format!(
            "Le paramètre {name} doit compter 1 à {TOKEN_MAX} caractères ASCII visibles."
        ))),
    }
}

/// Returns `(prompt_login, prompt_none)`.
fn prompt(p: &Params<'_>) -> Result<(bool, bool), OAuthError> {
    let values: Vec<&str> = p
        .one("prompt")
        .unwrap_or("")
        .split(' ')
        .filter(|v| !v.is_empty())
        .collect();
    if let Some(bad) = values
        .iter()
        .find(|v| !matches!(**v, "login" | "none" | "consent" | "select_account"))
    {
        return Err(invalid(format!(
            "Valeur de prompt non prise en charge : {}.",
            printable(bad)
        )));
    }
    let none = values.contains(&"none");
    if none && values.iter().any(|v| *v != "none") {
        return Err(invalid(
            "prompt=none ne peut pas être combiné avec une autre valeur.",
        ));
    }
    Ok((values.contains(&"login"), none))
}

const CLAIMS_MAX: usize = 8 * 1024;

/// `claims`: a JSON object; only `id_token.rep_scope` is read, other members ignored.
fn claims_rep_scope(p: &Params<'_>) -> Result<Option<super::rep_scope::ParsedRepScope>, OAuthError> {
    let Some(raw) = p.one("claims") else {
        return Ok(None);
    };
    if raw.len() > CLAIMS_MAX {
        return Err(invalid("Le paramètre claims est trop long."));
    }
    let claims: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| invalid("Le paramètre claims n'est pas un JSON valide.").with_detail(e))?;
    let serde_json::Value::Object(claims) = claims else {
        return Err(invalid("Le paramètre claims doit être un objet JSON."));
    };
    let id_token = match claims.get("id_token") {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Object(o)) => o,
        Some(_) => return Err(invalid("claims.id_token doit être un objet JSON.")),
    };
    match id_token.get("rep_scope") {
        None => Ok(None),
        Some(request) => RepScope::parse(request).map(Some),
    }
}

fn is_pkce_value(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// PKCE (RFC 7636): S256 only.
fn pkce(p: &Params<'_>) -> Result<Option<String>, OAuthError> {
    let method = p.one("code_challenge_method");
    let challenge = p.one("code_challenge");
    match method {
        None | Some("S256") => {}
        Some("plain") => {
            return Err(invalid(
                "PKCE : la méthode plain est refusée, utilisez S256.",
            ))
        }
        Some(_) => {
            return Err(invalid(
                "PKCE : code_challenge_method non pris en charge (S256 seulement).",
            ))
        }
    }
    match (method, challenge) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid("PKCE : code_challenge_method sans code_challenge.")),
        (None, Some(_)) => Err(invalid(
            "PKCE : code_challenge sans code_challenge_method (plain par défaut, refusé) ; utilisez S256.",
        )),
        (Some(_), Some(c)) if is_pkce_value(c) => Ok(Some(c.to_owned())),
        (Some(_), Some(_)) => Err(invalid("PKCE : code_challenge doit compter 43 à 128 caractères [A-Za-z0-9-._~].")),
    }
}

/// Input quoted in a description: at most 40 visible ASCII characters.
fn printable(v: &str) -> String {
    let mut out: String = v
        .chars()
        .take(40)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if v.chars().count() > 40 {
        out.push('…');
    }
    out
}

// ---- later checks ------------------------------------------------------------------

/// At the token endpoint: `BASE64URL-NOPAD(SHA-256(verifier)) == challenge`, compared
/// in constant time; the verifier must be 43 to 128 unreserved characters.
pub fn verify_pkce(challenge: &str, verifier: &str) -> bool {
    pkce_s256(verifier).is_some_and(|computed| constant_time_eq(computed.as_bytes(), challenge.as_bytes()))
}

/// The S256 challenge of a well-formed verifier (RFC 7636 §4.1, §4.2); `None` for a
/// malformed one, which matches no challenge.
pub fn pkce_s256(verifier: &str) -> Option<String> {
    is_pkce_value(verifier).then(|| BASE64URL_NOPAD.encode(&Sha256::digest(verifier.as_bytes())))
}

#[cfg(test)]
#[path = "authorize_tests.rs"]
mod tests;
