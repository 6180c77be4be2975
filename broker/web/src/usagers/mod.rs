//! The organisation's usagers: the list, one usager's mandats and history, revoking an
//! autorisation or a whole mandat (with its printable revocation attestation), and
//! renewing a mandat without a new FranceConnect identification.
//!
//! Every page is for signed-in aidants of the organisation that holds the mandats;
//! anyone else gets "page introuvable". Revocation and renewal need a fresh second factor.

mod detail;
mod list;
mod renew;
mod revocation;
mod revoke;

pub use detail::{detail, AutorisationView, HistoryView, MandatView};
pub use list::{list, ListQuery, UsagerRow};
pub use renew::{renew_choose, renew_confirm, renew_form, renew_recap, ChoiceView, DureeView, Renewal, K_RENEWAL};
pub(crate) use revocation::revocation_view;
pub use revocation::{revocation_page, DemarcheLine};
pub use revoke::{revoke_autorisation_confirm, revoke_autorisation_submit, revoke_mandat_confirm, revoke_mandat_submit};

use crate::guard::{csrf_ok, field, parse_form, SignedIn};
use crate::page_error::{blocking, PageError};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::web;
use broker_core::mandat::MandatFacts;
use broker_core::Timestamp;
use broker_store::mandat_changes::{self, UsagerName};
use broker_store::{auth, mandats, StoreError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/usagers", web::get().to(list))
        .route("/usagers/{id}", web::get().to(detail))
        .route("/usagers/{id}/autorisations/{aid}/revoquer", web::get().to(revoke_autorisation_confirm))
        .route("/usagers/{id}/autorisations/{aid}/revoquer", web::post().to(revoke_autorisation_submit))
        .route("/usagers/{id}/mandats/{mid}/revoquer", web::get().to(revoke_mandat_confirm))
        .route("/usagers/{id}/mandats/{mid}/revoquer", web::post().to(revoke_mandat_submit))
        .route("/usagers/{id}/revocations/{fp}", web::get().to(revocation_page))
        .route("/usagers/{id}/mandats/{mid}/renouveler", web::get().to(renew_form))
        .route("/usagers/{id}/mandats/{mid}/renouveler", web::post().to(renew_choose))
        .route("/usagers/{id}/mandats/{mid}/renouveler/recapitulatif", web::get().to(renew_recap))
        .route("/usagers/{id}/mandats/{mid}/renouveler/recapitulatif", web::post().to(renew_confirm));
}

/// "Page introuvable" for a usager or mandat this organisation does not hold.
const NOT_FOUND: PageError = PageError::NotFound("Cette personne ou ce mandat n'existe pas, ou ne dépend pas de votre structure.");

/// The organisation the aidant currently works for.
fn organisation_of(st: &AppState, aidant_id: i64) -> Result<Option<i64>, StoreError> {
    Ok(st.db.read(|c| auth::find_active_by_id(c, aidant_id))?.and_then(|a| a.current_organisation_id))
}

/// A usager seen from an organisation: their name and every mandat they gave it.
struct UsagerCtx {
    organisation_id: i64,
    usager: UsagerName,
    mandats: Vec<MandatFacts>,
}

impl UsagerCtx {
    fn name(&self) -> String {
        format!("{} {}", self.usager.given_name, self.usager.family_name)
    }
}

/// The usager `usager_id` as the aidant's organisation sees them; None when the
/// organisation holds no mandat of theirs.
fn load_usager(st: &AppState, aidant_id: i64, usager_id: i64) -> Result<Option<UsagerCtx>, StoreError> {
    let Some(org) = organisation_of(st, aidant_id)? else { return Ok(None) };
    st.db.read(|c| {
        let ms = mandats::facts(c, org, usager_id)?;
        if ms.is_empty() {
            return Ok(None);
        }
        let Some(usager) = mandat_changes::usager_names(c, &[usager_id])?.pop() else { return Ok(None) };
        Ok(Some(UsagerCtx { organisation_id: org, usager, mandats: ms }))
    })
}

async fn usager_ctx(state: &web::Data<AppState>, who: SignedIn, usager_id: i64) -> Result<UsagerCtx, PageError> {
    let st = state.clone();
    blocking(move || load_usager(&st, who.aidant_id, usager_id)).await?.ok_or(NOT_FOUND)
}

/// A positive id from the path.
fn ids(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|v| *v > 0)
}

/// [`ids`], or "page introuvable".
fn id_or_404(raw: &str) -> Result<i64, PageError> {
    ids(raw).ok_or(NOT_FOUND)
}

/// The usager whose id is `raw` in the path, as the aidant's organisation sees them.
async fn usager_of(state: &web::Data<AppState>, who: SignedIn, raw: &str) -> Result<UsagerCtx, PageError> {
    usager_ctx(state, who, id_or_404(raw)?).await
}

/// The posted form, when its CSRF token is the session's.
fn checked_form(session: &Session, body: &[u8]) -> Result<Vec<(String, String)>, PageError> {
    let form = parse_form(body);
    if csrf_ok(session, field(&form, "csrf").unwrap_or("")) {
        Ok(form)
    } else {
        Err(PageError::CsrfRefused)
    }
}

/// 400 for a page shown again with an error, 200 otherwise.
fn status_for(error: &Option<String>) -> StatusCode {
    if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    }
}

fn date_time(t: Timestamp) -> String {
    t.datetime().format("%d/%m/%Y à %H:%M").to_string()
}

fn french_birthdate(d: &str) -> String {
    let parts: Vec<&str> = d.split('-').collect();
    match parts.as_slice() {
        [y, m, j] if y.len() == 4 && m.len() == 2 && j.len() == 2 => format!("{j}/{m}/{y}"),
        _ => d.to_owned(),
    }
}
