//! The summary, the aidant's attestation and second factor, and the mandat's creation.

use super::{load, organisation, Draft, Identified, ARGENT_WARNING, DRAFT_KEY, FORM, NO_ORGANISATION, RECAP};
use crate::guard;
use crate::page_error::{blocking, blocking_keep, PageError};
use crate::pages::{self, render_with, DemarcheView, Header};
use crate::signin::reauthenticate_totp;
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::mandat::Duree;
use broker_core::{Demarche, Timestamp};
use broker_store::mandats::{create_mandat_with_attestation, NewMandatForUsager};
use broker_store::StoreError;
use serde::Deserialize;

pub struct IdentityView {
    pub given_name: String,
    pub family_name: String,
    pub preferred_username: Option<String>,
    pub birthdate: String,
    pub birthplace: String,
    pub birthcountry: String,
    pub email: String,
}

#[derive(Template)]
#[template(path = "mandat_recap.html")]
struct RecapPage {
    header: Header,
    csrf: String,
    error: Option<String>,
    usager: IdentityView,
    demarches: Vec<DemarcheView>,
    argent: bool,
    argent_warning: &'static str,
    duree: &'static str,
    expires: String,
    reauth_url: String,
}

fn birthdate_fr(d: &str) -> String {
    let p: Vec<&str> = d.split('-').collect();
    match p.as_slice() {
        [y, "00", "00"] => format!("{y} (jour et mois inconnus)"),
        [y, m, "00"] => format!("{m}/{y} (jour inconnu)"),
        [y, m, day] => format!("{day}/{m}/{y}"),
        _ => d.to_owned(),
    }
}

async fn recap_page(state: &web::Data<AppState>, session: &Session, aidant_id: i64, d: &Draft, u: &Identified, error: Option<String>, status: StatusCode) -> HttpResponse {
    let header = pages::header_for(state, session, aidant_id).await;
    let chosen = d.demarches();
    let duree = Duree::from_days(d.duree_jours).unwrap_or(Duree::UnJour);
    let mut suite = url::form_urlencoded::Serializer::new(String::new());
    suite.append_pair("suite", RECAP);
    render_with(
        status,
        &RecapPage {
            header,
            csrf: guard::csrf_token(session),
            error,
            usager: IdentityView {
                given_name: u.given_name.clone(),
                family_name: u.family_name.clone(),
                preferred_username: u.preferred_username.clone(),
                birthdate: birthdate_fr(&u.birthdate),
                birthplace: u.birthplace.clone(),
                birthcountry: u.birthcountry.clone(),
                email: u.email.clone(),
            },
            demarches: chosen.iter().map(|x| DemarcheView { key: x.key(), title: x.title(), description: x.description() }).collect(),
            argent: chosen.contains(&Demarche::Argent),
            argent_warning: ARGENT_WARNING,
            duree: duree.short_label(),
            expires: duree.expiry(state.clock.now()).french_date(),
            reauth_url: format!("/reauthentification?{}", suite.finish()),
        },
    )
}

/// The draft with an identified usager, for the aidant's current organisation.
async fn identified_draft(state: &web::Data<AppState>, session: &Session, aidant_id: i64) -> Result<(Draft, Identified), PageError> {
    let Some((org, _)) = organisation(state, aidant_id).await? else { return Err(NO_ORGANISATION) };
    match load(session).filter(|d| d.organisation_id == org) {
        Some(d) => match d.usager.clone() {
            Some(u) if Duree::from_days(d.duree_jours).is_some() && !d.demarches.is_empty() => Ok((d, u)),
            _ => Err(PageError::Redirect(FORM.to_owned())),
        },
        None => Err(PageError::Redirect(FORM.to_owned())),
    }
}

pub async fn recap(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, PageError> {
    let who = guard::signed_in(&state, &session, RECAP)?;
    let (d, u) = identified_draft(&state, &session, who.aidant_id).await?;
    Ok(recap_page(&state, &session, who.aidant_id, &d, &u, None, StatusCode::OK).await)
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    csrf: String,
    consentement: Option<String>,
    code: Option<String>,
}

/// Checks the TOTP code typed on the summary; journaled like a re-authentication.
async fn verify_code(state: &web::Data<AppState>, aidant_id: i64, code: String) -> Result<bool, PageError> {
    let st = state.clone();
    Ok(blocking(move || reauthenticate_totp(&st, aidant_id, &code)).await? == Some(true))
}

/// The aidant confirms: consent, second factor, then everything in one transaction.
pub async fn confirm(state: web::Data<AppState>, session: Session, form: web::Form<ConfirmForm>) -> Result<HttpResponse, PageError> {
    if !guard::csrf_ok(&session, &form.csrf) {
        return Err(PageError::CsrfRefused);
    }
    let who = guard::signed_in(&state, &session, RECAP)?;
    let (d, u) = identified_draft(&state, &session, who.aidant_id).await?;
    if form.consentement.as_deref() != Some("oui") {
        let msg = "Cochez la case pour attester avoir informé la personne avant de créer le mandat.".to_owned();
        return Ok(recap_page(&state, &session, who.aidant_id, &d, &u, Some(msg), StatusCode::UNPROCESSABLE_ENTITY).await);
    }
    let now = state.clock.now();
    let code = form.code.as_deref().map(str::trim).unwrap_or("").to_owned();
    if !code.is_empty() {
        if verify_code(&state, who.aidant_id, code).await? {
            guard::mark_fresh(&session, state.clock.now(), guard::AMR_TOTP).map_err(PageError::server)?;
        } else {
            let msg = "Le code est incorrect ou a déjà servi. Attendez le code suivant et réessayez.".to_owned();
            return Ok(recap_page(&state, &session, who.aidant_id, &d, &u, Some(msg), StatusCode::UNPROCESSABLE_ENTITY).await);
        }
    } else if !(who.is_fresh(now) && who.fresh_at > Timestamp::from_micros(u.at)) {
        return Err(PageError::Reauthenticate { suite: RECAP.to_owned() });
    }
    let st = state.clone();
    let aidant_id = who.aidant_id;
    let (org, demarches, duree) = (d.organisation_id, d.demarches(), Duree::from_days(d.duree_jours).unwrap_or(Duree::UnJour));
    let pivot = u.pivot();
    let key = u.usager_key.clone();
    let result = blocking_keep(move || {
        let n = NewMandatForUsager { organisation_id: org, aidant_id, usager_key: &key, identity: &pivot, demarches, duree };
        create_mandat_with_attestation(&st.db, &n, st.clock.now())
    })
    .await?;
    match result {
        Ok(created) => {
            session.remove(DRAFT_KEY);
            Ok(guard::see_other(&format!("/mandats/{}/attestation", created.mandat.mandat_id)))
        }
        Err(StoreError::Invalid(msg)) => Ok(recap_page(&state, &session, who.aidant_id, &d, &u, Some(msg), StatusCode::UNPROCESSABLE_ENTITY).await),
        Err(e) => Err(PageError::store("mandat creation failed", e)),
    }
}
