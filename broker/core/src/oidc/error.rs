//! OAuth 2.0 / OpenID Connect protocol errors that know where they may go.
//!
//! An [`OAuthError`] carries its RFC code, a short description safe to show (to the
//! aidant on an error page, to the client in a redirect or a JSON body), whether it may
//! be sent back to the client's `redirect_uri`, and an internal detail meant for the log
//! only — never for a response. Unknown failures become `server_error` with a generic
//! description ([`OAuthError::internal`]).
//!
//! On the wire (`to_json`, `redirect_url`), `error_description` is restricted to the
//! characters RFC 6749 §4.1.2.1 allows (printable ASCII without `"` and `\`): accented
//! French letters are folded (`é` → `e`), guillemets become `'`. `description` itself
//! keeps the French text for the pages.

use std::fmt;

use serde_json::json;
use url::Url;

/// The protocol error codes the broker answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// RFC 6749 §4.1.2.1 / §5.2
    InvalidRequest,
    /// RFC 6749 §4.1.2.1 / §5.2
    UnauthorizedClient,
    /// RFC 6749 §4.1.2.1 (the aidant cancels, or the request is not allowed)
    AccessDenied,
    /// RFC 6749 §4.1.2.1
    UnsupportedResponseType,
    /// RFC 6749 §4.1.2.1 / §5.2
    InvalidScope,
    /// RFC 6749 §4.1.2.1; any unexpected failure
    ServerError,
    /// RFC 6749 §4.1.2.1
    TemporarilyUnavailable,
    /// OpenID Connect Core §3.1.2.6 (`prompt=none` without a session)
    LoginRequired,
    /// `prompt=none`, but the request needs the aidant (the choice of the usager).
    InteractionRequired,
    /// RFC 6749 §5.2 (token endpoint client authentication failed)
    InvalidClient,
    /// RFC 6749 §5.2 (code unknown, expired, replayed, or bound to another client)
    InvalidGrant,
    /// RFC 6749 §5.2
    UnsupportedGrantType,
    /// RFC 6750 §3.1 (userinfo bearer token)
    InvalidToken,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidRequest,
        ErrorCode::UnauthorizedClient,
        ErrorCode::AccessDenied,
        ErrorCode::UnsupportedResponseType,
        ErrorCode::InvalidScope,
        ErrorCode::ServerError,
        ErrorCode::TemporarilyUnavailable,
        ErrorCode::LoginRequired,
        ErrorCode::InteractionRequired,
        ErrorCode::InvalidClient,
        ErrorCode::InvalidGrant,
        ErrorCode::UnsupportedGrantType,
        ErrorCode::InvalidToken,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::InteractionRequired => "interaction_required",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidToken => "invalid_token",
        }
    }

    /// HTTP status of a JSON error response (token endpoint, userinfo):
    /// `invalid_client` and `invalid_token` 401 (RFC 6749 §5.2, RFC 6750 §3.1),
    /// `server_error` 500, `temporarily_unavailable` 503, every other code 400.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => 401,
            ErrorCode::ServerError => 500,
            ErrorCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol error. `Display` shows the code and the description, never the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    /// Short text, French or English, safe to show to anyone.
    pub description: String,
    /// Whether the error may be sent to the client's `redirect_uri` (once that URI has
    /// been checked against the registration). `false` for errors about the client or
    /// the redirect URI themselves: those are shown on a page, never redirected.
    pub redirectable: bool,
    /// Internal detail, for the log only.
    pub detail: Option<String>,
}

/// Why an error redirect URL could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("cette erreur ne peut pas être renvoyée au client par redirection")]
    NotRedirectable,
    #[error("URI de redirection invalide : {0}")]
    BadRedirectUri(#[from] url::ParseError),
}

pub const GENERIC_SERVER_ERROR: &str =
    "Une erreur interne est survenue, veuillez réessayer plus tard.";

impl OAuthError {
    /// A redirectable error.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            redirectable: true,
            detail: None,
        }
    }

    /// An error that is shown on a page and never redirected (unknown client, redirect
    /// URI not registered).
    pub fn page(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            redirectable: false,
            detail: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    /// An unexpected failure: `server_error` with a generic description; what went
    /// wrong goes to `detail` only.
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::new(ErrorCode::ServerError, GENERIC_SERVER_ERROR).with_detail(detail)
    }

    /// The detail is bounded ([`crate::validate::log_value`]): it may quote a caller's
    /// input, and a log line never carries more than a few hundred bytes of it.
    pub fn with_detail(mut self, detail: impl fmt::Display) -> Self {
        self.detail = Some(crate::validate::log_value(&detail.to_string()));
        self
    }

    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }

    /// The RFC 6749 §5.2 JSON body: `{"error": …, "error_description": …}`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "error": self.code.as_str(),
            "error_description": wire_description(&self.description),
        })
    }

    /// The RFC 6749 §4.1.2.1 error redirect: the registered `redirect_uri` (its own
    /// query kept as is) with `error`, `error_description`, `state` (when the request
    /// had one) and `iss` (RFC 9207) appended as query pairs.
    pub fn redirect_url(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        iss: &str,
    ) -> Result<Url, RedirectError> {
        if !self.redirectable {
            return Err(RedirectError::NotRedirectable);
        }
        let mut url = Url::parse(redirect_uri)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("error", self.code.as_str());
            q.append_pair("error_description", &wire_description(&self.description));
            if let Some(state) = state {
                q.append_pair("state", state);
            }
            q.append_pair("iss", iss);
        }
        Ok(url)
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl std::error::Error for OAuthError {}

/// Folds a description into the RFC 6749 `error_description` character set:
/// %x20-21 / %x23-5B / %x5D-7E.
fn wire_description(text: &str) -> String {
    // "« x »" becomes "'x'": drop the spaces French typography puts inside guillemets.
    let text = text
        .replace("« ", "«")
        .replace("«\u{a0}", "«")
        .replace(" »", "»")
        .replace("\u{a0}»", "»");
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let folded: &str = match c {
            'à' | 'â' | 'ä' => "a",
            'À' | 'Â' | 'Ä' => "A",
            'é' | 'è' | 'ê' | 'ë' => "e",
            'É' | 'È' | 'Ê' | 'Ë' => "E",
            'î' | 'ï' => "i",
            'Î' | 'Ï' => "I",
            'ô' | 'ö' => "o",
            'Ô' | 'Ö' => "O",
            'ù' | 'û' | 'ü' => "u",
            'Ù' | 'Û' | 'Ü' => "U",
            'ç' => "c",
            'Ç' => "C",
            'œ' => "oe",
            'Œ' => "OE",
            'æ' => "ae",
            'Æ' => "AE",
            '«' | '»' | '"' | '’' | '‘' | '“' | '”' => "'",
            '\\' => "/",
            '…' => "...",
            '\u{a0}' | '\u{202f}' => " ",
            c if (' '..='~').contains(&c) => {
                out.push(c);
                continue;
            }
            _ => "?",
        };
        out.push_str(folded);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_rfc_strings() {
        let strs: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            strs,
            [
                "invalid_request",
                "unauthorized_client",
                "access_denied",
                "unsupported_response_type",
                "invalid_scope",
                "server_error",
                "temporarily_unavailable",
                "login_required",
                "interaction_required",
                "invalid_client",
                "invalid_grant",
                "unsupported_grant_type",
                "invalid_token",
            ]
        );
        assert_eq!(ErrorCode::InvalidGrant.to_string(), "invalid_grant");
    }

    #[test]
    fn http_status_for_json_errors() {
        assert_eq!(ErrorCode::InvalidClient.http_status(), 401);
        assert_eq!(ErrorCode::InvalidToken.http_status(), 401);
        assert_eq!(ErrorCode::ServerError.http_status(), 500);
        assert_eq!(ErrorCode::TemporarilyUnavailable.http_status(), 503);
        for c in [
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidGrant,
            ErrorCode::UnsupportedGrantType,
            ErrorCode::UnauthorizedClient,
            ErrorCode::InvalidScope,
        ] {
            assert_eq!(c.http_status(), 400, "{c}");
        }
        assert_eq!(
            OAuthError::new(ErrorCode::InvalidClient, "x").http_status(),
            401
        );
    }

    #[test]
    fn json_body_has_error_and_description_only() {
        let e = OAuthError::new(ErrorCode::InvalidGrant, "code expiré ou déjà utilisé")
            .with_detail("code abc123 replayed");
        assert_eq!(
            e.to_json(),
            json!({"error": "invalid_grant", "error_description": "code expire ou deja utilise"})
        );
        assert!(!e.to_json().to_string().contains("abc123"));
    }

    #[test]
    fn internal_failures_become_generic_server_errors() {
        let e = OAuthError::internal("pool timed out: postgres://broker:hunter2@db/broker");
        assert_eq!(e.code, ErrorCode::ServerError);
        assert_eq!(e.description, GENERIC_SERVER_ERROR);
        assert_eq!(e.http_status(), 500);
        assert!(e.detail.as_deref().unwrap().contains("pool timed out"));
        for shown in [
            e.to_string(),
            e.to_json().to_string(),
            e.redirect_url("https://rp.exemple/cb", None, "https://broker.exemple")
                .unwrap()
                .to_string(),
        ] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("pool"),
                "{shown}"
            );
        }
    }

    fn pairs(url: &Url) -> Vec<(String, String)> {
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn redirect_url_appends_query_pairs() {
        let e = OAuthError::invalid_request("state est obligatoire");
        let url = e
            .redirect_url(
                "https://fc.exemple/api/v2/oidc-callback",
                Some("a b&c=d"),
                "https://broker.exemple",
            )
            .unwrap();
        assert_eq!(url.path(), "/api/v2/oidc-callback");
        assert_eq!(
            pairs(&url),
            [
                ("error".into(), "invalid_request".into()),
                ("error_description".into(), "state est obligatoire".into()),
                ("state".into(), "a b&c=d".into()),
                ("iss".into(), "https://broker.exemple".into()),
            ]
        );
        assert!(url.as_str().contains("state=a+b%26c%3Dd"), "{url}");
        assert!(url.fragment().is_none());
    }

    #[test]
    fn redirect_url_without_state_keeps_the_registered_query() {
        let e = OAuthError::new(ErrorCode::AccessDenied, "L'aidant a annulé");
        let url = e
            .redirect_url(
                "https://rp.exemple/cb?tenant=a%20b&x=1",
                None,
                "https://broker.exemple",
            )
            .unwrap();
        assert!(
            url.as_str()
                .starts_with("https://rp.exemple/cb?tenant=a%20b&x=1&error=access_denied&"),
            "{url}"
        );
        let p = pairs(&url);
        assert_eq!(p[0], ("tenant".into(), "a b".into()));
        assert_eq!(p[1], ("x".into(), "1".into()));
        assert!(!p.iter().any(|(k, _)| k == "state"));
        assert_eq!(
            p.last().unwrap(),
            &("iss".into(), "https://broker.exemple".into())
        );
    }

    #[test]
    fn page_errors_are_never_redirected() {
        let e = OAuthError::page(ErrorCode::InvalidRequest, "redirect_uri non enregistrée");
        assert!(!e.redirectable);
        assert_eq!(
            e.redirect_url("https://rp.exemple/cb", Some("s"), "https://broker.exemple"),
            Err(RedirectError::NotRedirectable)
        );
        assert!(matches!(
            OAuthError::invalid_request("x").redirect_url("/relative", None, "i"),
            Err(RedirectError::BadRedirectUri(_))
        ));
    }

    #[test]
    fn wire_description_uses_the_rfc_character_set() {
        let d = wire_description("Démarche inconnue : « impôts » \\ “x” … ☃");
        assert_eq!(d, "Demarche inconnue : 'impots' / 'x' ... ?");
        assert!(d
            .chars()
            .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\'));
        assert_eq!(
            wire_description("Votre structure n'est pas habilitée pour ces démarches : argent"),
            "Votre structure n'est pas habilitee pour ces demarches : argent"
        );
    }
}
