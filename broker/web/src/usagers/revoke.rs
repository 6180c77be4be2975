//! Revoking one autorisation (one démarche) or a whole mandat, after a confirmation page.

use broker_core::capability::{AidantId, AutorisationId, MandatId};
use broker_store::capabilities;
use super::{checked_form, id_or_404, status_for, usager_of, UsagerCtx, NOT_FOUND};
use crate::guard::{self, field, SignedIn};
use crate::page_error::{blocking_keep, PageError};
use crate::pages::{self, render_with, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::mandat::Status;
use broker_core::Timestamp;
use broker_store::mandat_changes;
use broker_store::StoreError;

/// What the aidant revokes: one démarche (an autorisation) or the whole mandat.
#[derive(Debug, Clone, Copy)]
enum RevocationTarget {
    Autorisation(i64),
    Mandat(i64),
}

impl RevocationTarget {
    fn whole(self) -> bool {
        matches!(self, RevocationTarget::Mandat(_))
    }

    /// Whether the target belongs to the usager in this organisation at all.
    fn belongs(self, ctx: &UsagerCtx) -> bool {
        match self {
            RevocationTarget::Mandat(mid) => ctx.mandats.iter().any(|m| m.id == mid),
            RevocationTarget::Autorisation(aid) => ctx.mandats.iter().any(|m| m.autorisations.iter().any(|a| a.id == aid)),
        }
    }

    /// What a revocation would revoke: the mandat and the démarches, or None when the
    /// target is not an active part of this usager's mandats.
    fn active_part(self, ctx: &UsagerCtx, now: Timestamp) -> Option<(i64, Vec<&'static str>)> {
        match self {
            RevocationTarget::Mandat(mid) => {
                let m = ctx.mandats.iter().find(|m| m.id == mid)?;
                let d: Vec<&'static str> = m.active_demarches(now).iter().map(|d| d.title()).collect();
                (!d.is_empty()).then_some((mid, d))
            }
            RevocationTarget::Autorisation(aid) => ctx.mandats.iter().find_map(|m| {
                let a = m.autorisations.iter().find(|a| a.id == aid)?;
                (a.status(m.expires_at, now) == Status::Active).then(|| (m.id, vec![a.demarche.title()]))
            }),
        }
    }
}

#[derive(Template)]
#[template(path = "usager_revoquer.html")]
struct ConfirmRevocation {
    header: Header,
    csrf: String,
    action: String,
    usager_id: i64,
    name: String,
    mandat_id: i64,
    whole: bool,
    demarches: Vec<&'static str>,
    error: Option<String>,
}

fn nothing_to_revoke() -> PageError {
    PageError::page(
        StatusCode::CONFLICT,
        "Rien à révoquer",
        "Ce mandat ou cette autorisation n'est plus actif : il a déjà été révoqué ou il a expiré.",
    )
}

/// The aidant, with a fresh second factor, and the usager, when the target is theirs in
/// the aidant's organisation.
async fn revocation_ctx(state: &web::Data<AppState>, session: &Session, raw_usager: &str, target: RevocationTarget, here: &str) -> Result<(SignedIn, UsagerCtx), PageError> {
    let who = guard::fresh(state, session, here)?;
    let ctx = usager_of(state, who, raw_usager).await?;
    if !target.belongs(&ctx) {
        return Err(NOT_FOUND);
    }
    Ok((who, ctx))
}

async fn confirm_page(state: &web::Data<AppState>, session: &Session, raw_usager: &str, target: RevocationTarget, here: String, error: Option<String>) -> Result<HttpResponse, PageError> {
    let (who, ctx) = revocation_ctx(state, session, raw_usager, target, &here).await?;
    let Some((mid, demarches)) = target.active_part(&ctx, state.clock.now()) else { return Err(nothing_to_revoke()) };
    let header = pages::header_for(state, session, who.aidant_id).await;
    Ok(render_with(
        status_for(&error),
        &ConfirmRevocation {
            header,
            csrf: guard::csrf_token(session),
            action: here,
            usager_id: ctx.usager.id,
            name: ctx.name(),
            mandat_id: mid,
            whole: target.whole(),
            demarches,
            error,
        },
    ))
}

async fn revoke_submit(state: web::Data<AppState>, session: Session, body: web::Bytes, raw_usager: String, target: RevocationTarget, here: String) -> Result<HttpResponse, PageError> {
    let form = checked_form(&session, &body)?;
    let (who, ctx) = revocation_ctx(&state, &session, &raw_usager, target, &here).await?;
    let usager_id = ctx.usager.id;
    if field(&form, "confirmation") != Some("oui") {
        let error = "Cochez la case pour confirmer que la personne demande cette révocation.";
        return confirm_page(&state, &session, &raw_usager, target, here, Some(error.into())).await;
    }
    let now = state.clock.now();
    let st = state.clone();
    let done = blocking_keep(move || match target {
        RevocationTarget::Mandat(mid) => capabilities::in_organisation(&st.db, AidantId(who.aidant_id))
            .and_then(|by| mandat_changes::revoke_mandat(&st.db, &by, MandatId(mid), now)),
        RevocationTarget::Autorisation(aid) => capabilities::in_organisation(&st.db, AidantId(who.aidant_id))
            .and_then(|by| mandat_changes::revoke_autorisation(&st.db, &by, AutorisationId(aid), now)),
    })
    .await?;
    match done {
        Ok(r) => Ok(guard::see_other(&format!("/usagers/{usager_id}/revocations/{}", r.fingerprint))),
        Err(StoreError::Conflict(_)) => Err(nothing_to_revoke()),
        Err(e) => Err(PageError::store("usagers", e)),
    }
}

pub async fn revoke_autorisation_confirm(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>) -> Result<HttpResponse, PageError> {
    let (u, a) = path.into_inner();
    let here = format!("/usagers/{u}/autorisations/{a}/revoquer");
    let target = RevocationTarget::Autorisation(id_or_404(&a)?);
    confirm_page(&state, &session, &u, target, here, None).await
}

pub async fn revoke_mandat_confirm(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>) -> Result<HttpResponse, PageError> {
    let (u, m) = path.into_inner();
    let here = format!("/usagers/{u}/mandats/{m}/revoquer");
    let target = RevocationTarget::Mandat(id_or_404(&m)?);
    confirm_page(&state, &session, &u, target, here, None).await
}

pub async fn revoke_autorisation_submit(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let (u, a) = path.into_inner();
    let here = format!("/usagers/{u}/autorisations/{a}/revoquer");
    let target = RevocationTarget::Autorisation(id_or_404(&a)?);
    revoke_submit(state, session, body, u, target, here).await
}

pub async fn revoke_mandat_submit(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let (u, m) = path.into_inner();
    let here = format!("/usagers/{u}/mandats/{m}/revoquer");
    let target = RevocationTarget::Mandat(id_or_404(&m)?);
    revoke_submit(state, session, body, u, target, here).await
}
