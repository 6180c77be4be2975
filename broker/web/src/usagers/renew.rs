//! Renewing a mandat without a new FranceConnect identification: a form (démarches and
//! duration), then a summary that needs a fresh second factor.

use broker_core::capability::{AidantId, MandatId};
use broker_store::capabilities;
use super::{checked_form, ids, status_for, usager_ctx, DemarcheLine, UsagerCtx, NOT_FOUND};
use crate::guard::{self, field, SignedIn};
use crate::page_error::{blocking, blocking_keep, PageError};
use crate::pages::{self, render_with, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::mandat::{Duree, MandatFacts};
use broker_core::Demarche;
use broker_store::mandat_changes;
use broker_store::mandats::NewMandat;
use broker_store::{admin, StoreError};
use serde::{Deserialize, Serialize};

/// Session key of the renewal being prepared.
pub const K_RENEWAL: &str = "usager.renouvellement";

const ARGENT_WARNING: &str = "Attention : la démarche « Argent » donne accès aux impôts, aux prestations et aux comptes \
de la personne. Ne la gardez que si la personne le demande clairement ; vous ne devez jamais payer à sa place.";

/// The renewal being prepared, kept in the session between the form and the summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Renewal {
    pub usager_id: i64,
    pub mandat_id: i64,
    pub demarches: Vec<String>,
    pub days: i64,
}

pub struct ChoiceView {
    pub key: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub checked: bool,
}

pub struct DureeView {
    pub days: i64,
    pub label: &'static str,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "usager_renouveler.html")]
struct RenewForm {
    header: Header,
    csrf: String,
    action: String,
    usager_id: i64,
    name: String,
    mandat_id: i64,
    demarches: Vec<ChoiceView>,
    durees: Vec<DureeView>,
    argent_warning: &'static str,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "usager_renouveler_recap.html")]
struct RenewRecap {
    header: Header,
    csrf: String,
    action: String,
    back: String,
    name: String,
    mandat_id: i64,
    demarches: Vec<DemarcheLine>,
    duration: &'static str,
    expires: String,
    argent: bool,
    argent_warning: &'static str,
    error: Option<String>,
}

fn duration_days(m: &MandatFacts) -> i64 {
    (m.expires_at.micros() - m.created_at.micros()) / 86_400_000_000
}


/// The usager, the mandat to renew and the démarches the organisation may choose.
async fn renew_ctx(state: &web::Data<AppState>, who: SignedIn, u: &str, m: &str) -> Result<(UsagerCtx, MandatFacts, Vec<Demarche>), PageError> {
    let (Some(usager_id), Some(mid)) = (ids(u), ids(m)) else { return Err(NOT_FOUND) };
    let ctx = usager_ctx(state, who, usager_id).await?;
    let mandat = ctx.mandats.iter().find(|x| x.id == mid).cloned().ok_or(NOT_FOUND)?;
    let st = state.clone();
    let org = ctx.organisation_id;
    let allowed = blocking(move || Ok::<_, StoreError>(st.db.read(|c| admin::find_organisation(c, org))?.allowed())).await?;
    Ok((ctx, mandat, allowed))
}

/// The renewal of this mandat kept in the session, if any.
fn kept_renewal(session: &Session, ctx: &UsagerCtx, mandat: &MandatFacts) -> Option<Renewal> {
    session.get::<Renewal>(K_RENEWAL).ok().flatten().filter(|r| r.mandat_id == mandat.id && r.usager_id == ctx.usager.id)
}

/// The two renewal pages: the form needs a signed-in aidant, the summary a fresh second factor.
#[derive(Clone, Copy)]
enum RenewStep {
    Form,
    Recap,
}

/// The aidant, the usager, the mandat to renew and the démarches the organisation may choose.
async fn renew_request(
    state: &web::Data<AppState>,
    session: &Session,
    step: RenewStep,
    u: &str,
    m: &str,
) -> Result<(SignedIn, UsagerCtx, MandatFacts, Vec<Demarche>), PageError> {
    let who = match step {
        RenewStep::Form => guard::signed_in(state, session, &format!("/usagers/{u}/mandats/{m}/renouveler"))?,
        RenewStep::Recap => guard::fresh(state, session, &format!("/usagers/{u}/mandats/{m}/renouveler/recapitulatif"))?,
    };
    let (ctx, mandat, allowed) = renew_ctx(state, who, u, m).await?;
    Ok((who, ctx, mandat, allowed))
}

/// What the renewal form shows: the démarches to offer and check, and the duration.
struct FormChoices<'a> {
    allowed: &'a [Demarche],
    chosen: &'a [Demarche],
    days: i64,
}

fn form_page(header: Header, session: &Session, ctx: &UsagerCtx, mandat: &MandatFacts, choices: FormChoices<'_>, error: Option<String>) -> HttpResponse {
    let FormChoices { allowed, chosen, days } = choices;
    render_with(
        status_for(&error),
        &RenewForm {
            header,
            csrf: guard::csrf_token(session),
            action: format!("/usagers/{}/mandats/{}/renouveler", ctx.usager.id, mandat.id),
            usager_id: ctx.usager.id,
            name: ctx.name(),
            mandat_id: mandat.id,
            demarches: allowed
                .iter()
                .map(|&d| ChoiceView { key: d.key(), title: d.title(), description: d.description(), checked: chosen.contains(&d) })
                .collect(),
            durees: Duree::ALL.iter().map(|&d| DureeView { days: d.days(), label: d.short_label(), checked: d.days() == days }).collect(),
            argent_warning: ARGENT_WARNING,
            error,
        },
    )
}

pub async fn renew_form(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>) -> Result<HttpResponse, PageError> {
    let (u, m) = path.into_inner();
    let (who, ctx, mandat, allowed) = renew_request(&state, &session, RenewStep::Form, &u, &m).await?;
    let now = state.clock.now();
    let (chosen, days) = match kept_renewal(&session, &ctx, &mandat) {
        Some(r) => (r.demarches.iter().filter_map(|k| Demarche::from_key(k)).collect::<Vec<_>>(), r.days),
        None => {
            let mut d = mandat.active_demarches(now);
            if d.is_empty() {
                d = mandat.autorisations.iter().map(|a| a.demarche).collect();
            }
            (d, duration_days(&mandat))
        }
    };
    let chosen: Vec<Demarche> = chosen.into_iter().filter(|d| allowed.contains(d)).collect();
    let header = pages::header_for(&state, &session, who.aidant_id).await;
    Ok(form_page(header, &session, &ctx, &mandat, FormChoices { allowed: &allowed, chosen: &chosen, days }, None))
}

/// Why the chosen démarches and duration cannot make a renewal, if they cannot.
fn choice_error(chosen: &[Demarche], allowed: &[Demarche], days: i64) -> Option<String> {
    if chosen.is_empty() {
        Some("Choisissez au moins une démarche.".to_owned())
    } else if chosen.iter().any(|d| !allowed.contains(d)) {
        Some("Votre structure n'est pas habilitée pour une des démarches choisies.".to_owned())
    } else if Duree::from_days(days).is_none() {
        Some("Choisissez la durée du mandat.".to_owned())
    } else {
        None
    }
}

pub async fn renew_choose(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let (u, m) = path.into_inner();
    let form = checked_form(&session, &body)?;
    let (who, ctx, mandat, allowed) = renew_request(&state, &session, RenewStep::Form, &u, &m).await?;
    let mut chosen: Vec<Demarche> = form.iter().filter(|(k, _)| k == "demarche").filter_map(|(_, v)| Demarche::from_key(v)).collect();
    chosen.sort();
    chosen.dedup();
    let days = field(&form, "duree").and_then(|d| d.parse::<i64>().ok()).unwrap_or(0);
    let error = choice_error(&chosen, &allowed, days);
    if error.is_some() {
        let header = pages::header_for(&state, &session, who.aidant_id).await;
        let chosen: Vec<Demarche> = chosen.into_iter().filter(|d| allowed.contains(d)).collect();
        return Ok(form_page(header, &session, &ctx, &mandat, FormChoices { allowed: &allowed, chosen: &chosen, days }, error));
    }
    let r = Renewal { usager_id: ctx.usager.id, mandat_id: mandat.id, demarches: chosen.iter().map(|d| d.key().to_owned()).collect(), days };
    session.insert(K_RENEWAL, &r).map_err(PageError::server)?;
    Ok(guard::see_other(&format!("/usagers/{}/mandats/{}/renouveler/recapitulatif", ctx.usager.id, mandat.id)))
}

async fn recap_page(state: &web::Data<AppState>, session: &Session, who: SignedIn, u: &str, m: &str, error: Option<String>) -> Result<HttpResponse, PageError> {
    let (ctx, mandat, _) = renew_ctx(state, who, u, m).await?;
    let back = format!("/usagers/{}/mandats/{}/renouveler", ctx.usager.id, mandat.id);
    let Some(r) = kept_renewal(session, &ctx, &mandat) else { return Err(PageError::Redirect(back)) };
    let Some(duree) = Duree::from_days(r.days) else { return Err(PageError::Redirect(back)) };
    let demarches: Vec<Demarche> = r.demarches.iter().filter_map(|k| Demarche::from_key(k)).collect();
    let header = pages::header_for(state, session, who.aidant_id).await;
    Ok(render_with(
        status_for(&error),
        &RenewRecap {
            header,
            csrf: guard::csrf_token(session),
            action: format!("{back}/recapitulatif"),
            back,
            name: ctx.name(),
            mandat_id: mandat.id,
            argent: demarches.contains(&Demarche::Argent),
            demarches: demarches.iter().map(|d| DemarcheLine { title: d.title(), description: d.description() }).collect(),
            duration: duree.short_label(),
            expires: duree.expiry(state.clock.now()).french_date(),
            argent_warning: ARGENT_WARNING,
            error,
        },
    ))
}

pub async fn renew_recap(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>) -> Result<HttpResponse, PageError> {
    let (u, m) = path.into_inner();
    let who = guard::fresh(&state, &session, &format!("/usagers/{u}/mandats/{m}/renouveler/recapitulatif"))?;
    recap_page(&state, &session, who, &u, &m, None).await
}

pub async fn renew_confirm(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>, body: web::Bytes) -> Result<HttpResponse, PageError> {
    let (u, m) = path.into_inner();
    let form = checked_form(&session, &body)?;
    let (who, ctx, mandat, _) = renew_request(&state, &session, RenewStep::Recap, &u, &m).await?;
    let back = format!("/usagers/{}/mandats/{}/renouveler", ctx.usager.id, mandat.id);
    let Some(r) = kept_renewal(&session, &ctx, &mandat) else { return Err(PageError::Redirect(back)) };
    if field(&form, "consentement") != Some("oui") {
        return recap_page(&state, &session, who, &u, &m, Some("Cochez la case pour attester avoir informé la personne.".into())).await;
    }
    let Some(duree) = Duree::from_days(r.days) else { return Err(PageError::Redirect(back)) };
    let n = NewMandat {
        organisation_id: ctx.organisation_id,
        usager_id: ctx.usager.id,
        aidant_id: who.aidant_id,
        demarches: r.demarches.iter().filter_map(|k| Demarche::from_key(k)).collect(),
        duree,
    };
    let now = state.clock.now();
    let st = state.clone();
    let old = mandat.id;
    let aidant = AidantId(who.aidant_id);
    match blocking_keep(move || capabilities::in_organisation(&st.db, aidant).and_then(|by| mandat_changes::renew_mandat(&st.db, &by, MandatId(old), &n, now))).await? {
        Ok(created) => {
            session.remove(K_RENEWAL);
            Ok(guard::see_other(&format!("/mandats/{}/attestation", created.mandat_id)))
        }
        Err(StoreError::Invalid(msg)) => recap_page(&state, &session, who, &u, &m, Some(msg)).await,
        Err(e) => Err(PageError::store("usagers", e)),
    }
}
