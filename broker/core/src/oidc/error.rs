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
#[path = "error_tests.rs"]
mod tests;
