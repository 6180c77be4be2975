//! Who is signed in, and the freshness of the second factor; the CSRF helpers of
//! [`crate::csrf`] are re-exported here.
//!
//! The session holds: the aidant id, when they signed in (absolute lifetime), when a
//! second factor was last proved (freshness), and a CSRF token. Times come from the
//! application clock so that tests can move it.

pub use crate::csrf::{csrf_ok, csrf_token, field, parse_form, K_CSRF};
pub use crate::page_error::see_other;

use crate::page_error::{csrf_refused_page, PageError};
use crate::AppState;
use actix_session::Session;
use actix_web::{HttpResponse, ResponseError};
use broker_core::secret::random_bytes;
use broker_core::Timestamp;

pub const K_AIDANT: &str = "aidant";
pub const K_SIGNED_IN_AT: &str = "signed_in_at";
pub const K_FRESH_AT: &str = "fresh_at";
pub const K_LINK_BINDING: &str = "link_binding";
pub const K_CEREMONY: &str = "ceremony";
/// How the last second factor was proved, as RFC 8176 `amr` values separated by commas.
pub const K_AMR: &str = "amr";

/// `amr` of a security key (WebAuthn with user verification).
pub const AMR_KEY: &str = "hwk,mfa";
/// `amr` of a TOTP code (with, at sign-in, the e-mailed link).
pub const AMR_TOTP: &str = "otp,mfa";

/// A session lasts at most this long after sign-in, whatever the activity.
pub const SESSION_HOURS: i64 = 12;
/// Sensitive actions need a second factor proved this recently.
pub const FRESH_MINUTES: i64 = 15;

fn get_i64(session: &Session, key: &str) -> Option<i64> {
    session.get::<i64>(key).ok().flatten()
}

/// A POST's CSRF check: the form's `csrf` field must be the session's token.
pub fn csrf_checked(session: &Session, form: &[(String, String)]) -> Result<(), HttpResponse> {
    if csrf_ok(session, field(form, "csrf").unwrap_or("")) {
        Ok(())
    } else {
        Err(csrf_refused())
    }
}

/// [`csrf_checked`] as a [`PageError`].
pub fn check_csrf(session: &Session, form: &[(String, String)]) -> Result<(), PageError> {
    if csrf_ok(session, field(form, "csrf").unwrap_or("")) {
        Ok(())
    } else {
        Err(PageError::CsrfRefused)
    }
}

pub fn csrf_refused() -> HttpResponse {
    csrf_refused_page()
}

/// A signed-in aidant, as the session tells.
#[derive(Debug, Clone, Copy)]
pub struct SignedIn {
    pub aidant_id: i64,
    pub signed_in_at: Timestamp,
    pub fresh_at: Timestamp,
}

impl SignedIn {
    /// The session's aidant, if the session is still within its absolute lifetime.
    pub fn from_session(session: &Session, now: Timestamp) -> Option<SignedIn> {
        let aidant_id = get_i64(session, K_AIDANT)?;
        let signed_in_at = Timestamp::from_micros(get_i64(session, K_SIGNED_IN_AT)?);
        let fresh_at = Timestamp::from_micros(get_i64(session, K_FRESH_AT).unwrap_or(0));
        if now >= signed_in_at.plus_seconds(SESSION_HOURS * 3600) {
            session.purge();
            return None;
        }
        Some(SignedIn { aidant_id, signed_in_at, fresh_at })
    }

    pub fn is_fresh(&self, now: Timestamp) -> bool {
        now < self.fresh_at.plus_seconds(FRESH_MINUTES * 60)
    }
}

/// Starts an authenticated session: a new session key (no fixation), the aidant, and
/// a second factor proved now.
pub fn sign_in(session: &Session, aidant_id: i64, now: Timestamp, amr: &str) -> Result<(), actix_session::SessionInsertError> {
    session.renew();
    session.remove(K_LINK_BINDING);
    session.remove(K_CEREMONY);
    session.insert(K_AIDANT, aidant_id)?;
    session.insert(K_SIGNED_IN_AT, now.micros())?;
    session.insert(K_FRESH_AT, now.micros())?;
    session.insert(K_AMR, amr)?;
    // A new CSRF token for the authenticated session.
    session.insert(K_CSRF, hex::encode(random_bytes::<32>()))?;
    Ok(())
}

pub fn mark_fresh(session: &Session, now: Timestamp, amr: &str) -> Result<(), actix_session::SessionInsertError> {
    session.insert(K_AMR, amr)?;
    session.insert(K_FRESH_AT, now.micros())
}

/// The `amr` values of the session's last second-factor proof.
pub fn amr(session: &Session) -> Vec<String> {
    session.get::<String>(K_AMR).ok().flatten().unwrap_or_default().split(',').filter(|v| !v.is_empty()).map(str::to_owned).collect()
}

/// A local path to come back to: an absolute path on this site, in printable ASCII (a
/// tab or a space that a browser would drop could turn `/\t/host` into `//host`), with
/// no backslash and no `.` or `..` segment, written or percent-encoded (so that a path
/// that starts like one page cannot lead to another). Anything else gives `/espace`.
pub fn safe_next(next: Option<&str>) -> String {
    let local = |p: &str| {
        let path = p.split(['?', '#']).next().unwrap_or_default();
        p.len() < 512
            && p.starts_with('/')
            && !p.starts_with("//")
            && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
            && !path.to_ascii_lowercase().contains("%2e")
            && !path.split('/').any(|segment| segment == "." || segment == "..")
    };
    match next {
        Some(p) if local(p) => p.to_owned(),
        _ => "/espace".to_owned(),
    }
}

/// The cancel action of the identity-provider flow that `suite` (already [`safe_next`])
/// returns to, when it returns to one: `/autorisation/{flow}/annuler`, the flow id being
/// 32 hexadecimal digits.
pub fn flow_cancel_action(suite: &str) -> Option<String> {
    let rest = suite.strip_prefix("/autorisation/")?;
    let id = rest.split(['/', '?', '#']).next()?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("/autorisation/{id}/annuler"))
}

/// Redirect to sign-in when nobody is signed in.
pub fn require_signed_in(state: &AppState, session: &Session, here: &str) -> Result<SignedIn, HttpResponse> {
    signed_in(state, session, here).map_err(|e| e.error_response())
}

/// Redirect to the short re-authentication page when the second factor is not fresh.
pub fn require_fresh(state: &AppState, session: &Session, here: &str) -> Result<SignedIn, HttpResponse> {
    fresh(state, session, here).map_err(|e| e.error_response())
}

/// The signed-in aidant, or [`PageError::SignIn`] coming back to `here`.
pub fn signed_in(state: &AppState, session: &Session, here: &str) -> Result<SignedIn, PageError> {
    SignedIn::from_session(session, state.clock.now()).ok_or_else(|| PageError::SignIn { suite: here.to_owned() })
}

/// The signed-in aidant with a fresh second factor, or the redirect that gets one.
pub fn fresh(state: &AppState, session: &Session, here: &str) -> Result<SignedIn, PageError> {
    let who = signed_in(state, session, here)?;
    if who.is_fresh(state.clock.now()) {
        Ok(who)
    } else {
        Err(PageError::Reauthenticate { suite: here.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::{flow_cancel_action, safe_next};

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(safe_next(Some("/espace/securite")), "/espace/securite");
        assert_eq!(safe_next(Some("/autorisation/0a1b/demarche?x=1")), "/autorisation/0a1b/demarche?x=1");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "espace",
            "/\t/evil.example",
            "/ /evil.example",
            "/\n/evil.example",
            "/autorisation/x/../../referent/aidants/42/desactiver?",
            "/autorisation/x/%2e%2E/referent",
            "/./espace",
            "/espace/é",
        ] {
            assert_eq!(safe_next(Some(bad)), "/espace", "{bad}");
        }
        assert_eq!(safe_next(None), "/espace");
    }

    #[test]
    fn the_cancel_action_names_a_flow_id_only() {
        let id = "0123456789abcdef0123456789ABCDEF";
        assert_eq!(flow_cancel_action(&format!("/autorisation/{id}")), Some(format!("/autorisation/{id}/annuler")));
        assert_eq!(flow_cancel_action(&format!("/autorisation/{id}/demarche?x=1")), Some(format!("/autorisation/{id}/annuler")));
        for other in ["/espace", "/autorisation/", "/autorisation/abc", "/autorisation/0123456789abcdef0123456789abcdeg", "/referent/autorisation/0123456789abcdef0123456789abcdef"] {
            assert_eq!(flow_cancel_action(other), None, "{other}");
        }
    }
}
