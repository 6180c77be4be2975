//! Making a mandat: the aidant chooses the démarches and the duration with the usager,
//! the usager identifies through FranceConnect, the aidant checks the summary, attests
//! having informed the usager and proves a second factor; then the usager, the mandat,
//! its autorisations and its attestation are written in one transaction.
//!
//! Until then everything lives in the aidant's session under [`DRAFT_KEY`]: the choices,
//! then the identity received (with the usager key, never FranceConnect's `sub`). A
//! failed identification leaves the choices in place and writes nothing.

use crate::guard::{self, SignedIn};
use crate::page_error::{blocking, PageError};
use crate::AppState;
use actix_session::Session;
use actix_web::{web, HttpResponse};
use broker_core::identite::IdentitePivot;
use broker_core::Demarche;
use broker_store::{auth, StoreError};
use serde::{Deserialize, Serialize};

mod callback;
mod choices;
mod recap;

pub use callback::{callback, CallbackQuery};
pub use choices::{form, submit, ChoiceView, DureeView, FormQuery};
pub use recap::{confirm, recap, ConfirmForm, IdentityView};

/// Session key of the mandat being made.
pub const DRAFT_KEY: &str = "mandat.brouillon";

const FORM: &str = "/mandats/nouveau";
const CALLBACK: &str = "/mandats/nouveau/franceconnect/retour";
const RECAP: &str = "/mandats/nouveau/recapitulatif";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(FORM).get(form).post(submit))
        .route(CALLBACK, web::get().to(callback))
        .service(web::resource(RECAP).get(recap).post(confirm));
}

/// The usager as FranceConnect identified them, kept until the mandat is made.
#[derive(Clone, Serialize, Deserialize)]
struct Identified {
    usager_key: String,
    given_name: String,
    family_name: String,
    preferred_username: Option<String>,
    birthdate: String,
    gender: String,
    birthplace: String,
    birthcountry: String,
    email: String,
    /// When the identity came back (microseconds): the second factor must be proved after.
    at: i64,
}

impl Identified {
    fn pivot(&self) -> IdentitePivot {
        IdentitePivot {
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            preferred_username: self.preferred_username.clone(),
            birthdate: self.birthdate.clone(),
            gender: self.gender.clone(),
            birthplace: self.birthplace.clone(),
            birthcountry: self.birthcountry.clone(),
            email: self.email.clone(),
        }
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct Draft {
    organisation_id: i64,
    demarches: Vec<String>,
    duree_jours: i64,
    usager: Option<Identified>,
    /// Why the last identification failed: title and message, shown once on the form.
    erreur: Option<(String, String)>,
}

impl Draft {
    fn demarches(&self) -> Vec<Demarche> {
        self.demarches.iter().filter_map(|k| Demarche::from_key(k)).collect()
    }
}

fn load(session: &Session) -> Option<Draft> {
    session.get::<Draft>(DRAFT_KEY).ok().flatten()
}

fn keep(session: &Session, d: &Draft) -> Result<(), actix_session::SessionInsertError> {
    session.insert(DRAFT_KEY, d)
}

/// The aidant's current organisation and the démarches it allows.
async fn organisation(state: &web::Data<AppState>, aidant_id: i64) -> Result<Option<(i64, Vec<Demarche>)>, PageError> {
    let st = state.clone();
    blocking(move || -> Result<Option<(i64, Vec<Demarche>)>, StoreError> {
        let Some(a) = st.db.read(|c| auth::find_active_by_id(c, aidant_id))? else { return Ok(None) };
        let Some(org_id) = a.current_organisation_id else { return Ok(None) };
        let org = st.db.read(|c| broker_store::admin::find_organisation(c, org_id))?;
        Ok(Some((org_id, org.allowed())))
    })
    .await
}

/// The signed-in aidant, their current organisation and the démarches it allows, or the
/// response to send (sign-in, or no organisation).
async fn aidant_organisation(state: &web::Data<AppState>, session: &Session) -> Result<(SignedIn, i64, Vec<Demarche>), PageError> {
    let who = guard::signed_in(state, session, FORM)?;
    match organisation(state, who.aidant_id).await? {
        Some((org_id, allowed)) => Ok((who, org_id, allowed)),
        None => Err(NO_ORGANISATION),
    }
}

const NO_ORGANISATION: PageError = PageError::Forbidden {
    title: "Aucune structure",
    message: "Vous n'êtes rattaché à aucune structure : vous ne pouvez pas établir de mandat. Contactez le référent de votre structure.",
};


const ARGENT_WARNING: &str = "La démarche « Argent » permet d'agir sur les impôts, les prestations et les comptes de la \
personne : ne la cochez que si la personne vous le demande expressément, et ne réalisez jamais de paiement à sa place.";

/// Keeps the choices with a message for the form, and goes back to it.
fn back_to_form(session: &Session, mut d: Draft, detail: &str, title: &str, message: &str) -> Result<HttpResponse, PageError> {
    tracing::warn!(detail = %broker_core::validate::log_value(detail), "FranceConnect identification failed");
    d.usager = None;
    d.erreur = Some((title.to_owned(), message.to_owned()));
    keep(session, &d).map_err(PageError::server)?;
    Ok(guard::see_other(FORM))
}

