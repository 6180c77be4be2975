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
    if !is_pkce_value(verifier) {
        return false;
    }
    let computed = BASE64URL_NOPAD.encode(&Sha256::digest(verifier.as_bytes()));
    constant_time_eq(computed.as_bytes(), challenge.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::rep_scope::Accepted;
    use crate::Demarche;

    const CB: &str = "https://fc.exemple/api/v2/oidc-callback";
    const CB_WITH_QUERY: &str = "https://rp.exemple/cb?tenant=a%20b";
    const STATE: &str = "5d2c7a0f9b1e4c6a8d3f2b7e1a9c4d6f5d2c7a0f9b1e4c6a8d3f2b7e1a9c4d6f";
    const NONCE: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const ISS: &str = "https://broker.exemple";

    type P = Vec<(String, String)>;

    /// What FranceConnect's core sends.
    fn fc_request() -> P {
        [
            ("client_id", "fc"),
            ("response_type", "code"),
            ("redirect_uri", CB),
            ("scope", "openid profile email birth"),
            ("acr_values", "eidas1"),
            ("state", STATE),
            ("nonce", NONCE),
            ("prompt", "login"),
            (
                "claims",
                r#"{"id_token":{"rep_scope":{"essential":true,"values":["argent","social"]}}}"#,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn set(mut p: P, name: &str, value: &str) -> P {
        match p.iter_mut().find(|(k, _)| k == name) {
            Some(pair) => pair.1 = value.to_owned(),
            None => p.push((name.to_owned(), value.to_owned())),
        }
        p
    }

    fn without(mut p: P, name: &str) -> P {
        p.retain(|(k, _)| k != name);
        p
    }

    fn add(mut p: P, name: &str, value: &str) -> P {
        p.push((name.to_owned(), value.to_owned()));
        p
    }

    fn run(p: &P) -> Result<AuthorizeRequest, Rejection> {
        let uris = vec![CB.to_owned(), CB_WITH_QUERY.to_owned()];
        validate(p, |id| {
            (id == "fc").then_some(ClientView {
                client_id: "fc",
                redirect_uris: &uris,
            })
        })
    }

    fn page(p: &P) -> OAuthError {
        match run(p) {
            Err(Rejection::ErrorPage(e)) => {
                assert!(!e.redirectable, "{e}");
                e
            }
            other => panic!("expected an error page, got {other:?}"),
        }
    }

    fn redirect(p: &P) -> (String, Option<String>, OAuthError) {
        match run(p) {
            Err(Rejection::Redirect {
                redirect_uri,
                state,
                error,
            }) => {
                assert!(error.redirectable, "{error}");
                (redirect_uri.as_str().to_owned(), state, error)
            }
            other => panic!("expected an error redirect, got {other:?}"),
        }
    }

    /// The error code and description of a redirected error.
    fn fault(p: &P) -> (ErrorCode, String) {
        let (_, _, e) = redirect(p);
        (e.code, e.description)
    }

    fn assert_fault(p: &P, code: ErrorCode, needle: &str) {
        let (c, d) = fault(p);
        assert_eq!(c, code, "{d}");
        assert!(d.contains(needle), "{d:?} should mention {needle:?}");
    }

    #[test]
    fn franceconnect_core_request_is_accepted() {
        let r = run(&fc_request()).unwrap();
        assert_eq!(
            r,
            AuthorizeRequest {
                client_id: "fc".into(),
                redirect_uri: RegisteredUri(CB.into()),
                state: STATE.into(),
                nonce: NONCE.into(),
                scopes: vec![Scope::OpenId, Scope::Profile, Scope::Email, Scope::Birth],
                prompt_login: true,
                prompt_none: false,
                rep_scope: Some(RepScope::Among(vec![
                    Accepted { demarche: Demarche::Social, spelling: "social".into() },
                    Accepted { demarche: Demarche::Argent, spelling: "argent".into() },
                ])),
                rep_scope_ignored: Vec::new(),
                code_challenge: None,
                acr: "eidas1",
            }
        );
    }

    #[test]
    fn params_may_be_borrowed_pairs_and_clients_owned() {
        struct Stored {
            id: String,
            uris: Vec<String>,
        }
        impl AsClientView for Stored {
            fn client_view(&self) -> ClientView<'_> {
                ClientView {
                    client_id: &self.id,
                    redirect_uris: &self.uris,
                }
            }
        }
        let owned = fc_request();
        let p: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut calls = 0;
        let r = validate(&p, |id| {
            calls += 1;
            Some(Stored {
                id: id.to_owned(),
                uris: vec![CB.to_owned()],
            })
        });
        assert!(r.is_ok());
        assert_eq!(calls, 1);
    }

    #[test]
    fn client_problems_are_pages_even_when_other_faults_exist() {
        let bad_scope = set(fc_request(), "scope", "profile");
        let e = page(&set(bad_scope.clone(), "client_id", "inconnu"));
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.description.contains("Client inconnu"));
        assert!(page(&without(bad_scope.clone(), "client_id"))
            .description
            .contains("obligatoire"));
        assert!(page(&add(bad_scope.clone(), "client_id", "fc"))
            .description
            .contains("répété"));
        assert!(
            page(&set(bad_scope, "client_id", ""))
                .description
                .contains("obligatoire"),
            "empty = omitted"
        );
        // unknown client + no redirect_uri: still a page, never a redirect
        page(&without(
            set(fc_request(), "client_id", "x"),
            "redirect_uri",
        ));
    }

    #[test]
    fn a_failing_lookup_is_a_generic_server_error_page() {
        let r = try_validate(&fc_request(), |_| {
            Err::<Option<ClientView<'_>>, _>("connection refused: postgres://broker:hunter2@db")
        });
        let Err(Rejection::ErrorPage(e)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(e.code, ErrorCode::ServerError);
        assert!(!e.redirectable);
        assert!(!e.description.contains("hunter2"));
        assert!(e.detail.unwrap().contains("connection refused"));
    }

    #[test]
    fn a_loosely_matching_lookup_is_an_unknown_client() {
        let uris = vec![CB.to_owned()];
        let r = validate(&set(fc_request(), "client_id", "FC"), |_| {
            Some(ClientView {
                client_id: "fc",
                redirect_uris: &uris,
            })
        });
        assert!(
            matches!(r, Err(Rejection::ErrorPage(e)) if e.description.contains("Client inconnu"))
        );
    }

    #[test]
    fn redirect_uri_must_be_exactly_a_registered_one() {
        for bad in [
            "https://fc.exemple/api/v2/oidc-callback/",
            "https://FC.exemple/api/v2/oidc-callback",
            "https://fc.exemple/api/v2/OIDC-callback",
            "https://fc.exemple/api/v2/oidc-callback?x=1",
            "https://fc.exemple/api/v2/oidc-callback#",
            "https://fc.exemple:443/api/v2/oidc-callback",
            "http://fc.exemple/api/v2/oidc-callback",
            "https://rp.exemple/cb",
            "https://rp.exemple/cb?tenant=a+b",
            "https://evil.exemple/cb",
        ] {
            let e = page(&set(set(fc_request(), "redirect_uri", bad), "scope", "bad"));
            assert!(
                e.description.contains("aucune URI enregistrée"),
                "{bad}: {e}"
            );
            assert!(e.detail.as_deref().unwrap().contains(bad));
        }
        assert!(page(&without(fc_request(), "redirect_uri"))
            .description
            .contains("obligatoire"));
        assert!(page(&add(fc_request(), "redirect_uri", CB))
            .description
            .contains("répété"));
        let r = run(&set(fc_request(), "redirect_uri", CB_WITH_QUERY)).unwrap();
        assert_eq!(r.redirect_uri.as_str(), CB_WITH_QUERY);
    }

    #[test]
    fn any_repeated_parameter_is_refused_first() {
        for name in [
            "scope",
            "response_type",
            "nonce",
            "claims",
            "prompt",
            "ui_locales",
        ] {
            let mut p = add(set(fc_request(), "response_type", "token"), name, "x");
            if name == "ui_locales" {
                p = add(p, name, "fr");
            }
            assert_fault(&p, ErrorCode::InvalidRequest, &format!("{name} est répété"));
        }
        // a repeated state is reported, and not echoed (which one would it be?)
        let (uri, state, e) = redirect(&add(fc_request(), "state", "autre"));
        assert_eq!(
            (uri.as_str(), state, e.code),
            (CB, None, ErrorCode::InvalidRequest)
        );
        // empty values count as omitted (RFC 6749 §3.1)
        assert!(run(&add(fc_request(), "nonce", "")).is_ok());
        assert!(run(&add(fc_request(), "foo", "")).is_ok());
    }

    #[test]
    fn response_type_is_checked_before_state() {
        // bad response_type and missing state: unsupported_response_type, no state
        let (_, state, e) = redirect(&without(
            set(fc_request(), "response_type", "token"),
            "state",
        ));
        assert_eq!((e.code, state), (ErrorCode::UnsupportedResponseType, None));
        // bad response_type and a state: the state is carried back
        let (uri, state, e) = redirect(&set(fc_request(), "response_type", "code id_token"));
        assert_eq!(e.code, ErrorCode::UnsupportedResponseType);
        assert_eq!((uri.as_str(), state.as_deref()), (CB, Some(STATE)));
        assert_fault(
            &without(fc_request(), "response_type"),
            ErrorCode::InvalidRequest,
            "response_type",
        );
        assert_fault(
            &set(fc_request(), "response_type", "CODE"),
            ErrorCode::UnsupportedResponseType,
            "code",
        );
    }

    #[test]
    fn the_checks_run_in_the_documented_order() {
        // Everything wrong at once; fix one fault at a time and watch the next appear.
        let mut p = fc_request();
        p = add(p, "prompt", "login");
        p = set(p, "response_type", "token");
        p = set(p, "scope", "profile");
        p = set(p, "acr_values", "eidas2");
        p = without(p, "state");
        p = set(p, "nonce", &"n".repeat(257));
        p = set(p, "prompt", "none login");
        p = set(p, "claims", "{");
        p = set(p, "code_challenge_method", "plain");

        type Fix = fn(P) -> P;
        let steps: [(ErrorCode, &str, Fix); 9] = [
            (ErrorCode::InvalidRequest, "prompt est répété", |p| {
                let mut seen = false;
                p.into_iter()
                    .filter(|(k, _)| !(k == "prompt" && std::mem::replace(&mut seen, true)))
                    .collect()
            }),
            (ErrorCode::UnsupportedResponseType, "response_type", |p| {
                set(p, "response_type", "code")
            }),
            (ErrorCode::InvalidScope, "openid", |p| {
                set(p, "scope", "openid")
            }),
            (ErrorCode::InvalidRequest, "eidas1", |p| {
                set(p, "acr_values", "eidas1")
            }),
            (ErrorCode::InvalidRequest, "state est obligatoire", |p| {
                set(p, "state", STATE)
            }),
            (ErrorCode::InvalidRequest, "nonce", |p| {
                set(p, "nonce", NONCE)
            }),
            (ErrorCode::InvalidRequest, "prompt=none", |p| {
                set(p, "prompt", "login")
            }),
            (ErrorCode::InvalidRequest, "JSON valide", |p| {
                without(p, "claims")
            }),
            (ErrorCode::InvalidRequest, "plain", |p| {
                without(p, "code_challenge_method")
            }),
        ];
        for (code, needle, fix) in steps {
            assert_fault(&p, code, needle);
            p = fix(p);
        }
        assert!(run(&p).is_ok());
    }

    #[test]
    fn scope_needs_openid_and_ignores_unknown_values() {
        assert_fault(
            &set(fc_request(), "scope", "profile email birth"),
            ErrorCode::InvalidScope,
            "openid",
        );
        assert_fault(
            &without(fc_request(), "scope"),
            ErrorCode::InvalidScope,
            "openid",
        );
        assert_fault(
            &set(fc_request(), "scope", "OpenID"),
            ErrorCode::InvalidScope,
            "openid",
        );
        assert_fault(
            &set(fc_request(), "scope", "openid,profile"),
            ErrorCode::InvalidScope,
            "openid",
        );
        let r = run(&set(
            fc_request(),
            "scope",
            "birth  openid given_name offline_access openid email",
        ))
        .unwrap();
        assert_eq!(r.scopes, [Scope::OpenId, Scope::Email, Scope::Birth]);
        assert_eq!(
            run(&set(fc_request(), "scope", "openid")).unwrap().scopes,
            [Scope::OpenId]
        );
    }

    #[test]
    fn acr_values_must_contain_eidas1() {
        for bad in ["eidas2", "eidas1x", "EIDAS1", "eidas2,eidas1"] {
            assert_fault(
                &set(fc_request(), "acr_values", bad),
                ErrorCode::InvalidRequest,
                "acr_values",
            );
        }
        assert_fault(
            &without(fc_request(), "acr_values"),
            ErrorCode::InvalidRequest,
            "acr_values",
        );
        assert_eq!(
            run(&set(fc_request(), "acr_values", "eidas3 eidas1"))
                .unwrap()
                .acr,
            "eidas1"
        );
    }

    #[test]
    fn state_and_nonce_are_required_and_bounded() {
        for name in ["state", "nonce"] {
            assert_fault(
                &without(fc_request(), name),
                ErrorCode::InvalidRequest,
                &format!("{name} est obligatoire"),
            );
            let max = "~".repeat(256);
            let r = run(&set(fc_request(), name, &max)).unwrap();
            assert_eq!(if name == "state" { &r.state } else { &r.nonce }, &max);
            assert_eq!(run(&set(fc_request(), name, "x")).map(|_| ()), Ok(()));
            for bad in [
                "a".repeat(257),
                "a b".into(),
                "été".into(),
                "a\tb".into(),
                "a\u{7f}".into(),
            ] {
                assert_fault(
                    &set(fc_request(), name, &bad),
                    ErrorCode::InvalidRequest,
                    &format!("{name} doit compter"),
                );
            }
        }
        // a malformed state is not reflected in the redirect
        let (_, state, _) = redirect(&set(fc_request(), "state", &"a".repeat(257)));
        assert_eq!(state, None);
        let (_, state, _) = redirect(&set(fc_request(), "nonce", &"a".repeat(257)));
        assert_eq!(state.as_deref(), Some(STATE));
    }

    #[test]
    fn prompt_values() {
        let r = run(&without(fc_request(), "prompt")).unwrap();
        assert_eq!((r.prompt_login, r.prompt_none), (false, false));
        let r = run(&set(fc_request(), "prompt", "none")).unwrap();
        assert_eq!((r.prompt_login, r.prompt_none), (false, true));
        let r = run(&set(fc_request(), "prompt", "consent login select_account")).unwrap();
        assert_eq!((r.prompt_login, r.prompt_none), (true, false));
        for bad in ["none login", "consent none", "none none login"] {
            assert_fault(
                &set(fc_request(), "prompt", bad),
                ErrorCode::InvalidRequest,
                "prompt=none",
            );
        }
        for bad in ["create", "Login", "login,consent"] {
            assert_fault(
                &set(fc_request(), "prompt", bad),
                ErrorCode::InvalidRequest,
                "prompt",
            );
        }
    }

    fn with_claims(claims: &str) -> P {
        set(fc_request(), "claims", claims)
    }

    #[test]
    fn claims_must_be_a_json_object() {
        for bad in ["{", "rep_scope=argent", r#"{"id_token":}"#] {
            assert_fault(&with_claims(bad), ErrorCode::InvalidRequest, "JSON valide");
        }
        for bad in ["[]", "\"x\"", "null", "1"] {
            assert_fault(&with_claims(bad), ErrorCode::InvalidRequest, "objet JSON");
        }
        assert_fault(
            &with_claims(r#"{"id_token":["rep_scope"]}"#),
            ErrorCode::InvalidRequest,
            "id_token doit",
        );
        let long = format!(r#"{{"userinfo":{{"x":"{}"}}}}"#, "a".repeat(CLAIMS_MAX));
        assert_fault(&with_claims(&long), ErrorCode::InvalidRequest, "trop long");
        // no claims, or claims without id_token.rep_scope: rep_scope not requested
        for none in [
            "{}",
            r#"{"id_token":null}"#,
            r#"{"id_token":{"acr":{"essential":true}}}"#,
            r#"{"userinfo":{"rep_scope":{"values":["inconnue"]}}}"#,
        ] {
            assert_eq!(run(&with_claims(none)).unwrap().rep_scope, None, "{none}");
        }
        assert_eq!(
            run(&without(fc_request(), "claims")).unwrap().rep_scope,
            None
        );
    }

    #[test]
    fn rep_scope_as_franceconnect_core_sends_it() {
        let rep = |claims: &str| run(&with_claims(claims)).map(|r| r.rep_scope.and_then(|s| s.restricted_to()));
        assert_eq!(
            rep(r#"{"id_token":{"rep_scope":{"values":["social","argent","social"],"extra":1}}}"#),
            Ok(Some(vec![Demarche::Social, Demarche::Argent]))
        );
        assert_eq!(rep(r#"{"id_token":{"rep_scope":{"value":"justice"}}}"#), Ok(Some(vec![Demarche::Justice])));
        // No list, or an empty one: requested, restricting nothing.
        for any in [
            r#"{"id_token":{"rep_scope":null}}"#,
            r#"{"id_token":{"rep_scope":{"essential":true}}}"#,
            r#"{"id_token":{"rep_scope":{"essential":true,"values":[]}}}"#,
        ] {
            assert_eq!(run(&with_claims(any)).unwrap().rep_scope, Some(RepScope::Any), "{any}");
        }
        // Labels, and an unknown value beside a known one.
        let r = run(&with_claims(r#"{"id_token":{"rep_scope":{"essential":true,"values":["Famille-Scolarité","impots"]}}}"#)).unwrap();
        assert_eq!(r.rep_scope.as_ref().and_then(RepScope::restricted_to), Some(vec![Demarche::Famille]));
        assert_eq!(r.rep_scope_ignored, vec!["impots".to_owned()]);

        assert_fault(
            &with_claims(r#"{"id_token":{"rep_scope":{"essential":true,"values":["impots"]}}}"#),
            ErrorCode::InvalidRequest,
            "« impots »",
        );
        assert_fault(&with_claims(r#"{"id_token":{"rep_scope":{"values":["Argent"]}}}"#), ErrorCode::InvalidRequest, "Argent");
        for (bad, needle) in [
            (r#"{"id_token":{"rep_scope":{"values":"argent"}}}"#, "liste"),
            (r#"{"id_token":{"rep_scope":{"values":["argent",1]}}}"#, "chaînes"),
            (r#"{"id_token":{"rep_scope":{"value":1}}}"#, "chaînes"),
            (r#"{"id_token":{"rep_scope":{"value":"argent","values":["argent"]}}}"#, "ensemble"),
            (r#"{"id_token":{"rep_scope":{"essential":"true","values":["argent"]}}}"#, "essential"),
            (r#"{"id_token":{"rep_scope":["argent"]}}"#, "rep_scope doit"),
        ] {
            assert_fault(&with_claims(bad), ErrorCode::InvalidRequest, needle);
        }
    }

    #[test]
    fn pkce_s256_only() {
        let pk = |m: Option<&str>, c: Option<&str>| {
            let mut p = fc_request();
            if let Some(m) = m {
                p = set(p, "code_challenge_method", m);
            }
            if let Some(c) = c {
                p = set(p, "code_challenge", c);
            }
            p
        };
        assert_eq!(
            run(&pk(Some("S256"), Some(CHALLENGE)))
                .unwrap()
                .code_challenge
                .as_deref(),
            Some(CHALLENGE)
        );
        assert_eq!(run(&pk(None, None)).unwrap().code_challenge, None);
        assert_fault(
            &pk(Some("plain"), Some(CHALLENGE)),
            ErrorCode::InvalidRequest,
            "plain est refusée",
        );
        assert_fault(
            &pk(Some("s256"), Some(CHALLENGE)),
            ErrorCode::InvalidRequest,
            "S256 seulement",
        );
        assert_fault(
            &pk(Some("S256"), None),
            ErrorCode::InvalidRequest,
            "sans code_challenge",
        );
        assert_fault(
            &pk(None, Some(CHALLENGE)),
            ErrorCode::InvalidRequest,
            "sans code_challenge_method",
        );
        let ok43 = "a".repeat(43);
        let ok128 = "-._~".repeat(32);
        assert!(run(&pk(Some("S256"), Some(&ok43))).is_ok());
        assert!(run(&pk(Some("S256"), Some(&ok128))).is_ok());
        for bad in [
            "a".repeat(42),
            "a".repeat(129),
            format!("{}+", "a".repeat(42)),
            format!("{}=", "a".repeat(42)),
        ] {
            assert_fault(
                &pk(Some("S256"), Some(&bad)),
                ErrorCode::InvalidRequest,
                "43 à 128",
            );
        }
    }

    #[test]
    fn error_redirect_url_shape() {
        let p = set(
            set(fc_request(), "redirect_uri", CB_WITH_QUERY),
            "scope",
            "profile",
        );
        let r = run(&p).unwrap_err();
        let Rejection::Redirect {
            redirect_uri,
            state,
            error,
        } = &r
        else {
            panic!("{r:?}")
        };
        assert_eq!(r.error().code, ErrorCode::InvalidScope);
        let url = error
            .redirect_url(redirect_uri.as_str(), state.as_deref(), ISS)
            .unwrap();
        assert!(
            url.as_str()
                .starts_with("https://rp.exemple/cb?tenant=a%20b&error=invalid_scope&"),
            "{url}"
        );
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["tenant", "error", "error_description", "state", "iss"]
        );
        assert_eq!(pairs[3].1, STATE);
        assert_eq!(pairs[4].1, ISS);

        // page errors refuse to become redirects
        let r = run(&set(
            fc_request(),
            "redirect_uri",
            "https://evil.exemple/cb",
        ))
        .unwrap_err();
        assert!(r
            .error()
            .redirect_url("https://evil.exemple/cb", None, ISS)
            .is_err());
    }

    #[test]
    fn organisation_must_be_allowed_every_requested_demarche() {
        use Demarche::*;
        let scope = |v: &str| RepScope::parse(&serde_json::from_str(v).unwrap()).unwrap().scope;
        assert_eq!(scope(r#"{"values":["argent","social"]}"#).within(&Demarche::ALL), Ok(vec![Social, Argent]));
        assert_eq!(RepScope::Any.within(&[Social]), Ok(vec![Social]));
        let e = scope(r#"{"values":["argent","social","papiers"]}"#).within(&[Social]).unwrap_err();
        assert_eq!(e.code, ErrorCode::AccessDenied);
        assert!(e.redirectable);
        assert_eq!(e.description, "Votre structure n'est pas habilitée pour ces démarches : papiers, argent.");
    }

    #[test]
    fn pkce_verification_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(verify_pkce(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            verifier
        ));
        assert!(!verify_pkce(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN",
            verifier
        ));
        assert!(!verify_pkce(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM=",
            verifier
        ));
        assert!(!verify_pkce(
            CHALLENGE,
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj"
        ));
        assert!(!verify_pkce(verifier, verifier), "plain is never accepted");
        // the verifier's own format: 43..=128 unreserved characters
        let short = &verifier[..42];
        let challenge_of = |v: &str| BASE64URL_NOPAD.encode(&Sha256::digest(v.as_bytes()));
        assert!(!verify_pkce(&challenge_of(short), short));
        let long = "a".repeat(129);
        assert!(!verify_pkce(&challenge_of(&long), &long));
        let max = "~".repeat(128);
        assert!(verify_pkce(&challenge_of(&max), &max));
        let bad = format!("{verifier}+");
        assert!(!verify_pkce(&challenge_of(&bad), &bad));
    }
}
