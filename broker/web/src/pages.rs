//! Server-rendered pages in the State design system (DSFR), and the page header that
//! shows who is signed in.

use crate::csrf::csrf_token;
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_store::auth;

/// What the page header shows: the signed-in aidant and the sign-out form.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub aidant_name: Option<String>,
    pub organisation: Option<String>,
    pub csrf: String,
}

impl Header {
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Nobody signed in, but the page's scripts need the session's CSRF token.
    pub fn anonymous_with_csrf(session: &Session) -> Self {
        Self { csrf: csrf_token(session), ..Self::default() }
    }
}

/// The header for a signed-in aidant.
pub async fn header_for(state: &web::Data<AppState>, session: &Session, aidant_id: i64) -> Header {
    let st = state.clone();
    let found = web::block(move || {
        let a = st.db.read(|c| auth::find_active_by_id(c, aidant_id)).ok().flatten()?;
        let org = a
            .current_organisation_id
            .and_then(|o| st.db.read(|c| broker_store::admin::find_organisation(c, o)).ok())
            .map(|o| o.name);
        Some((format!("{} {}", a.first_name, a.last_name), org))
    })
    .await
    .ok()
    .flatten();
    Header {
        aidant_name: found.as_ref().map(|f| f.0.clone()),
        organisation: found.and_then(|f| f.1),
        csrf: csrf_token(session),
    }
}

pub struct DemarcheView {
    pub key: &'static str,
    pub title: &'static str,
    pub description: &'static str,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    header: Header,
    title: &'a str,
    message: &'a str,
}

pub fn render<T: Template>(t: &T) -> HttpResponse {
    render_with(StatusCode::OK, t)
}

pub fn render_with<T: Template>(status: StatusCode, t: &T) -> HttpResponse {
    match t.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header(("Cache-Control", "no-store"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("Une erreur interne est survenue. Réessayez dans quelques instants.")
        }
    }
}

pub fn error_page(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    render_with(status, &ErrorPage { header: Header::anonymous(), title, message })
}

/// `s` with its first letter in upper case (store messages start in lower case).
pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

pub fn server_error() -> HttpResponse {
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Le service rencontre un problème",
        "Votre demande n'a pas pu aboutir. Réessayez dans quelques instants ; si le problème continue, prévenez votre référent.",
    )
}

/// The message of the generic "page introuvable" page.
pub const NOT_FOUND_MESSAGE: &str = "L'adresse demandée n'existe pas. Vérifiez-la, ou revenez à l'accueil.";

pub async fn not_found() -> HttpResponse {
    error_page(StatusCode::NOT_FOUND, "Page introuvable", NOT_FOUND_MESSAGE)
}

#[derive(Template)]
#[template(path = "outbox.html")]
struct OutboxPage {
    header: Header,
    messages: Vec<crate::mail::OutboxEntry>,
}

/// Development only: the messages the broker would have sent.
pub async fn outbox(state: web::Data<AppState>) -> HttpResponse {
    let st = state.clone();
    let messages = web::block(move || st.mailer.outbox_messages()).await.unwrap_or_default();
    render(&OutboxPage { header: Header::anonymous(), messages })
}
