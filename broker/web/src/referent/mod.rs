//! The référent's space: the organisation's aidants (add, deactivate, reactivate, their
//! second factors), the organisation's allowed démarches, and the way in for the TOTP
//! pages ([`crate::referent_totp`]) and the statistics ([`crate::referent_stats`]).
//!
//! Only a référent of the aidant's current organisation gets in; an aidant of another
//! organisation is "page introuvable". Every change needs a fresh second factor.

mod keys;
mod members;
mod organisation;

pub use keys::{keys_finish, keys_options, keys_page, keys_remove, KeyRow};
pub use members::{deactivate, home, member_page, new_member_form, new_member_submit, reactivate};
pub use organisation::{demarches_form, demarches_submit, switch_organisation, DemarcheChoice};

use crate::guard::{self, SignedIn};
use crate::page_error::{blocking, blocking_keep, PageError};
use crate::AppState;
use actix_session::Session;
use actix_web::web;
use broker_core::Timestamp;
use broker_store::admin::{self, Organisation};
use broker_store::referent::{self, Member, Role};
use broker_store::StoreError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/referent", web::get().to(home))
        .route("/referent/aidants/nouveau", web::get().to(new_member_form))
        .route("/referent/aidants/nouveau", web::post().to(new_member_submit))
        .route("/referent/aidants/{id}", web::get().to(member_page))
        .route("/referent/aidants/{id}/desactiver", web::post().to(deactivate))
        .route("/referent/aidants/{id}/reactiver", web::post().to(reactivate))
        .route("/referent/aidants/{id}/cles", web::get().to(keys_page))
        .route("/referent/aidants/{id}/cles/options", web::post().to(keys_options))
        .route("/referent/aidants/{id}/cles/ajout", web::post().to(keys_finish))
        .route("/referent/aidants/{id}/cles/{key}/retirer", web::post().to(keys_remove))
        .route("/referent/demarches", web::get().to(demarches_form))
        .route("/referent/demarches", web::post().to(demarches_submit))
        .route("/espace/structure", web::post().to(switch_organisation));
}

/// A référent of their current organisation, as the session and the database tell.
#[derive(Debug, Clone)]
pub struct Referent {
    pub who: SignedIn,
    pub organisation: Organisation,
}

impl Referent {
    pub fn organisation_id(&self) -> i64 {
        self.organisation.id
    }
}

/// Whether a page needs a second factor proved in the last minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Reading pages.
    Any,
    /// Every change.
    Fresh,
}

/// "Page introuvable" for a page outside the référent's organisation.
pub const NOT_FOUND: PageError = PageError::NotFound("Cette page n'existe pas, ou ne dépend pas de votre structure.");

/// 403 for anyone who is not a référent of their current organisation.
pub const FORBIDDEN: PageError = PageError::Forbidden {
    title: "Espace réservé aux référents",
    message: "Cette page est réservée aux référents de la structure. Si vous devez gérer les aidants de votre structure, demandez à votre référent de vous donner ce rôle.",
};

/// The signed-in référent of the current organisation, or why not: sign-in,
/// re-authentication (for [`Freshness::Fresh`]), or 403.
pub async fn require_referent(state: &web::Data<AppState>, session: &Session, here: &str, freshness: Freshness) -> Result<Referent, PageError> {
    let who = match freshness {
        Freshness::Any => guard::signed_in(state, session, here)?,
        Freshness::Fresh => guard::fresh(state, session, here)?,
    };
    let st = state.clone();
    let found = blocking(move || {
        st.db.read(|c| {
            let Some(org) = referent::referent_of_current(c, who.aidant_id)? else { return Ok(None) };
            Ok::<_, StoreError>(Some(admin::find_organisation(c, org)?))
        })
    })
    .await?;
    found.map(|organisation| Referent { who, organisation }).ok_or(FORBIDDEN)
}

/// The member `raw` (an id from the path) of the référent's organisation, or 404.
pub async fn member_of(state: &web::Data<AppState>, r: &Referent, raw: &str) -> Result<Member, PageError> {
    let id = raw.parse::<i64>().ok().filter(|v| *v > 0).ok_or(NOT_FOUND)?;
    let st = state.clone();
    let org = r.organisation_id();
    blocking(move || st.db.read(|c| referent::member(c, org, id))).await?.ok_or(NOT_FOUND)
}

/// The référent at `here` and the member `raw` of their organisation, or the response to send.
pub(crate) async fn referent_and_member(state: &web::Data<AppState>, session: &Session, here: &str, raw: &str, freshness: Freshness) -> Result<(Referent, Member), PageError> {
    let r = require_referent(state, session, here, freshness).await?;
    let m = member_of(state, &r, raw).await?;
    Ok((r, m))
}

/// The référent at `here` with a fresh second factor, for a form whose CSRF token is valid.
async fn referent_form(state: &web::Data<AppState>, session: &Session, here: &str, form: &[(String, String)]) -> Result<Referent, PageError> {
    let r = require_referent(state, session, here, Freshness::Fresh).await?;
    guard::check_csrf(session, form)?;
    Ok(r)
}

/// Same as [`referent_and_member`] for a form, with a fresh second factor: the CSRF token
/// is checked before the member is read.
pub(crate) async fn referent_and_member_form(state: &web::Data<AppState>, session: &Session, here: &str, raw: &str, form: &[(String, String)]) -> Result<(Referent, Member), PageError> {
    let r = referent_form(state, session, here, form).await?;
    let m = member_of(state, &r, raw).await?;
    Ok((r, m))
}

/// Runs a store call on the blocking pool: a user error is left to the caller, anything
/// else is a server error.
pub(crate) async fn run_store<T: Send + 'static>(f: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<Result<T, StoreError>, PageError> {
    match blocking_keep(f).await? {
        Ok(v) => Ok(Ok(v)),
        Err(e) if e.is_user_error() => Ok(Err(e)),
        Err(e) => Err(PageError::store("referent", e)),
    }
}

fn date_time(t: Timestamp) -> String {
    t.datetime().format("%d/%m/%Y à %H:%M").to_string()
}

pub struct MemberRow {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub profession: String,
    pub active: bool,
    pub referent: bool,
    pub factors: String,
    pub missing_factor: bool,
    pub last_login: String,
}

impl MemberRow {
    pub fn from(m: &Member) -> Self {
        MemberRow {
            id: m.id,
            name: format!("{} {}", m.first_name, m.last_name),
            email: m.email.clone(),
            profession: m.profession.clone(),
            active: m.active,
            referent: m.role == Role::Referent,
            factors: factors_label(m),
            missing_factor: !m.has_second_factor(),
            last_login: m.last_login.map(date_time).unwrap_or_else(|| "jamais".to_owned()),
        }
    }
}

fn plural(n: i64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// "1 clé de sécurité, 1 carte à code" or "aucun".
pub fn factors_label(m: &Member) -> String {
    let mut parts = Vec::new();
    if m.keys > 0 {
        parts.push(plural(m.keys, "clé de sécurité", "clés de sécurité"));
    }
    if m.totp_cards > 0 {
        parts.push(plural(m.totp_cards, "carte à code", "cartes à code"));
    }
    if m.totp_apps > 0 {
        parts.push(plural(m.totp_apps, "application à code", "applications à code"));
    }
    if m.unconfirmed > 0 {
        parts.push(plural(m.unconfirmed, "code à valider", "codes à valider"));
    }
    if parts.is_empty() {
        "aucun".to_owned()
    } else {
        parts.join(", ")
    }
}

#[derive(serde::Deserialize)]
pub struct Notice {
    ok: Option<String>,
}

fn notice_text(key: Option<&str>) -> Option<&'static str> {
    match key? {
        "ajoute" => Some("L'aidant a été ajouté à la structure. Un e-mail l'invite à se connecter."),
        "rejoint" => Some("Cet aidant avait déjà un compte : il fait maintenant aussi partie de votre structure."),
        "desactive" => Some("L'aidant a été désactivé : il ne peut plus se connecter."),
        "reactive" => Some("L'aidant a été réactivé : il peut de nouveau se connecter."),
        "demarches" => Some("Les démarches autorisées de la structure ont été modifiées."),
        _ => None,
    }
}
