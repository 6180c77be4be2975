//! Why a page handler did not render its page, and the response that says so.
//!
//! Handlers return `Result<HttpResponse, PageError>` and use `?`; each variant renders
//! exactly the response the handlers used to build by hand.

use crate::pages;
use actix_web::error::BlockingError;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse, ResponseError};
use broker_core::validate::log_value;
use broker_store::StoreError;
use std::borrow::Cow;
use std::fmt;

#[derive(Debug)]
pub enum PageError {
    /// A DSFR error page.
    Page { status: StatusCode, title: Cow<'static, str>, message: Cow<'static, str> },
    /// 303 to sign-in, coming back to `suite` afterwards.
    SignIn { suite: String },
    /// 303 to the re-authentication page, coming back to `suite` afterwards.
    Reauthenticate { suite: String },
    /// 303 to `location`.
    Redirect(String),
    /// 404 "Page introuvable" with this message.
    NotFound(&'static str),
    /// 403 with this title and message.
    Forbidden { title: &'static str, message: &'static str },
    /// 403: the form's CSRF token is not the session's.
    CsrfRefused,
    /// 500; the cause is logged.
    Server(String),
}

impl PageError {
    pub fn page(status: StatusCode, title: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> Self {
        PageError::Page { status, title: title.into(), message: message.into() }
    }

    /// A server error whose cause is `what`.
    pub fn server(what: impl fmt::Display) -> Self {
        PageError::Server(what.to_string())
    }

    /// A store error, logged under `context`.
    pub fn store(context: &str, e: StoreError) -> Self {
        PageError::Server(format!("{context}: {e}"))
    }
}

impl fmt::Display for PageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageError::Page { status, title, .. } => write!(f, "{status}: {title}"),
            PageError::SignIn { .. } => f.write_str("sign-in required"),
            PageError::Reauthenticate { .. } => f.write_str("fresh second factor required"),
            PageError::Redirect(to) => write!(f, "redirect to {to}"),
            PageError::NotFound(_) => f.write_str("not found"),
            PageError::Forbidden { title, .. } => write!(f, "forbidden: {title}"),
            PageError::CsrfRefused => f.write_str("CSRF token refused"),
            PageError::Server(cause) => write!(f, "server error: {}", log_value(cause)),
        }
    }
}

fn with_suite(path: &str, suite: &str) -> String {
    let mut u = url::form_urlencoded::Serializer::new(String::new());
    u.append_pair("suite", suite);
    format!("{path}?{}", u.finish())
}

/// 303 See Other to `location`.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

/// The 403 page of a form whose CSRF token is not the session's.
pub fn csrf_refused_page() -> HttpResponse {
    pages::error_page(
        StatusCode::FORBIDDEN,
        "Le formulaire a expiré",
        "Pour votre sécurité, ce formulaire n'est plus valable. Rechargez la page et recommencez.",
    )
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::Page { status, .. } => *status,
            PageError::SignIn { .. } | PageError::Reauthenticate { .. } | PageError::Redirect(_) => StatusCode::SEE_OTHER,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Forbidden { .. } | PageError::CsrfRefused => StatusCode::FORBIDDEN,
            PageError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            PageError::Page { status, title, message } => pages::error_page(*status, title, message),
            PageError::SignIn { suite } => see_other(&with_suite("/connexion", suite)),
            PageError::Reauthenticate { suite } => see_other(&with_suite("/reauthentification", suite)),
            PageError::Redirect(to) => see_other(to),
            PageError::NotFound(message) => pages::error_page(StatusCode::NOT_FOUND, "Page introuvable", message),
            PageError::Forbidden { title, message } => pages::error_page(StatusCode::FORBIDDEN, title, message),
            PageError::CsrfRefused => csrf_refused_page(),
            PageError::Server(cause) => {
                tracing::error!(error = %log_value(cause), "page failed");
                pages::server_error()
            }
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError::Server(e.to_string())
    }
}

impl From<BlockingError> for PageError {
    fn from(_: BlockingError) -> Self {
        PageError::Server("blocking task failed".to_owned())
    }
}

/// Runs a store call on the blocking pool.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<T, PageError> {
    web::block(f).await?.map_err(PageError::from)
}

/// Runs a store call on the blocking pool and keeps its store error for the caller to
/// match on; only a failure of the pool itself becomes a `PageError`.
pub async fn blocking_keep<T: Send + 'static>(f: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<Result<T, StoreError>, PageError> {
    Ok(web::block(f).await?)
}
