//! The session's CSRF token and the url-encoded forms that carry it.

use actix_session::Session;
use broker_core::secret::{constant_time_eq, random_bytes};

pub const K_CSRF: &str = "csrf";

/// The session's CSRF token, created on first use.
pub fn csrf_token(session: &Session) -> String {
    if let Ok(Some(t)) = session.get::<String>(K_CSRF) {
        return t;
    }
    let t = hex::encode(random_bytes::<32>());
    let _ = session.insert(K_CSRF, &t);
    t
}

/// True when `provided` is the session's CSRF token (constant-time comparison).
pub fn csrf_ok(session: &Session, provided: &str) -> bool {
    match session.get::<String>(K_CSRF) {
        Ok(Some(t)) => constant_time_eq(t.as_bytes(), provided.as_bytes()),
        _ => false,
    }
}

/// The url-encoded fields of a form body.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The first value of `name` in a parsed form.
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}
