//! The organisation's aidants: the list, adding one (with the invitation e-mail), one
//! aidant's page, deactivating and reactivating.

use super::{notice_text, referent_and_member, referent_and_member_form, referent_form, require_referent, run_store, Freshness, MemberRow, Notice};
use crate::guard::{self, field, parse_form};
use crate::page_error::{blocking, PageError};
use crate::pages::{self, render, render_with, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_store::mail_queue;
use broker_store::referent::{self, Added, NewMember};

#[derive(Template)]
#[template(path = "referent.html")]
struct HomePage<'a> {
    header: Header,
    organisation: &'a str,
    members: Vec<MemberRow>,
    notice: Option<&'a str>,
    messages: Vec<MessageRow>,
}

/// A message the service sent about the structure (reminders, invitations, notices).
struct MessageRow {
    queued: String,
    what: &'static str,
    recipient: String,
    state: String,
}

impl From<mail_queue::Sent> for MessageRow {
    fn from(m: mail_queue::Sent) -> Self {
        MessageRow {
            queued: m.queued_at.paris_date_time(),
            what: broker_core::notice::Notice::kind_label(&m.kind),
            recipient: m.recipient,
            state: match m.status {
                mail_queue::Status::Waiting => "en attente d'envoi".to_owned(),
                mail_queue::Status::Delivered(at) => format!("envoyé le {}", at.paris_date_time()),
                mail_queue::Status::GivenUp => "non distribué".to_owned(),
            },
        }
    }
}

/// Messages shown in the référent space.
const MESSAGES_SHOWN: i64 = 20;


pub async fn home(state: web::Data<AppState>, session: Session, q: web::Query<Notice>) -> Result<HttpResponse, PageError> {
    let r = require_referent(&state, &session, "/referent", Freshness::Any).await?;
    let st = state.clone();
    let org = r.organisation_id();
    let (members, messages) =
        blocking(move || st.db.read(|c| Ok::<_, broker_store::StoreError>((referent::members(c, org)?, mail_queue::for_organisation(c, org, MESSAGES_SHOWN)?)))).await?;
    let header = pages::header_for(&state, &session, r.who.aidant_id).await;
    Ok(render(&HomePage {
        header,
        organisation: &r.organisation.name,
        members: members.iter().map(MemberRow::from).collect(),
        notice: notice_text(q.ok.as_deref()),
        messages: messages.into_iter().map(MessageRow::from).collect(),
    }))
}

#[derive(Template)]
#[template(path = "referent_nouvel_aidant.html")]
struct NewMemberPage<'a> {
    header: Header,
    organisation: &'a str,
    email: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    profession: &'a str,
    error: Option<String>,
}

pub async fn new_member_form(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, PageError> {
    let r = require_referent(&state, &session, "/referent/aidants/nouveau", Freshness::Fresh).await?;
    let header = pages::header_for(&state, &session, r.who.aidant_id).await;
    Ok(render(&NewMemberPage { header, organisation: &r.organisation.name, email: "", first_name: "", last_name: "", profession: "", error: None }))
}

pub async fn new_member_submit(state: web::Data<AppState>, session: Session, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let form = parse_form(&body);
    let r = referent_form(&state, &session, "/referent/aidants/nouveau", &form).await?;
    let get = |k: &str| field(&form, k).unwrap_or("").to_owned();
    let (email, first, last, profession) = (get("email"), get("prenom"), get("nom"), get("profession"));
    let st = state.clone();
    let org = r.organisation_id();
    let by = r.who.aidant_id;
    let now = state.clock.now();
    let (e2, f2, l2, p2) = (email.clone(), first.clone(), last.clone(), profession.clone());
    let added = run_store(move || {
        referent::add_member(&st.db, org, &NewMember { email: &e2, first_name: &f2, last_name: &l2, profession: &p2 }, by, now)
    })
    .await?;
    let error = match added {
        Ok(a) => {
            // The invitation was queued with the change.
            state.mail.wake();
            return Ok(guard::see_other(match a {
                Added::Created(_) => "/referent?ok=ajoute",
                Added::Joined(_) => "/referent?ok=rejoint",
            }));
        }
        Err(e) => e.to_string(),
    };
    let header = pages::header_for(&state, &session, r.who.aidant_id).await;
    Ok(render_with(
        StatusCode::UNPROCESSABLE_ENTITY,
        &NewMemberPage {
            header,
            organisation: &r.organisation.name,
            email: &email,
            first_name: &first,
            last_name: &last,
            profession: &profession,
            error: Some(pages::capitalise(&error)),
        },
    ))
}

#[derive(Template)]
#[template(path = "referent_aidant.html")]
struct MemberPage<'a> {
    header: Header,
    member: MemberRow,
    is_self: bool,
    error: Option<&'a str>,
}

pub async fn member_page(state: web::Data<AppState>, session: Session, path: web::Path<String>) -> Result<HttpResponse, PageError> {
    let here = format!("/referent/aidants/{}", path.as_str());
    let (r, m) = referent_and_member(&state, &session, &here, &path, Freshness::Any).await?;
    let header = pages::header_for(&state, &session, r.who.aidant_id).await;
    Ok(render(&MemberPage { header, is_self: m.id == r.who.aidant_id, member: MemberRow::from(&m), error: None }))
}

async fn set_active(state: web::Data<AppState>, session: Session, path: web::Path<String>, body: web::Bytes, active: bool) -> Result<HttpResponse, PageError> {
    let here = format!("/referent/aidants/{}", path.as_str());
    let form = parse_form(&body);
    let (r, m) = referent_and_member_form(&state, &session, &here, &path, &form).await?;
    let st = state.clone();
    let (org, by, now) = (r.organisation_id(), r.who.aidant_id, state.clock.now());
    match run_store(move || referent::set_active(&st.db, org, m.id, active, by, now)).await? {
        Ok(_) => Ok(guard::see_other(if active { "/referent?ok=reactive" } else { "/referent?ok=desactive" })),
        Err(e) => {
            let header = pages::header_for(&state, &session, r.who.aidant_id).await;
            let msg = e.to_string();
            Ok(render_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                &MemberPage { header, is_self: m.id == by, member: MemberRow::from(&m), error: Some(&msg) },
            ))
        }
    }
}

pub async fn deactivate(state: web::Data<AppState>, session: Session, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    set_active(state, session, path, body, false).await
}

pub async fn reactivate(state: web::Data<AppState>, session: Session, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    set_active(state, session, path, body, true).await
}
