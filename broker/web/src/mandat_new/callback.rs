//! FranceConnect's answer to the mandat journey.

use super::{back_to_form, keep, load, Draft, Identified, FORM, RECAP};
use crate::franceconnect::{callback_error, take_pending, FcError, SESSION_KEY as FC_PENDING_KEY};
use crate::guard;
use crate::page_error::PageError;
use crate::AppState;
use actix_session::Session;
use actix_web::{web, HttpResponse};
use broker_core::identite::usager_key;
use broker_core::secret::random_bytes;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// FranceConnect's answer: the identity is verified and kept in the draft, then the
/// usager's FranceConnect session is ended.
pub async fn callback(state: web::Data<AppState>, session: Session, q: web::Query<CallbackQuery>) -> Result<HttpResponse, PageError> {
    if crate::usager_space::owns_callback(&session, q.state.as_deref()) {
        let error = q.error.as_deref().map(|e| (e, q.error_description.as_deref()));
        return crate::usager_space::callback(state, session, q.code.as_deref(), q.state.as_deref().unwrap_or(""), error).await;
    }
    let who = guard::signed_in(&state, &session, FORM)?;
    let Some(d) = load(&session) else {
        session.remove(FC_PENDING_KEY);
        return Ok(guard::see_other(FORM));
    };
    let Some(fc) = state.franceconnect.clone() else { return Ok(guard::see_other(FORM)) };
    let pending = take_pending(&session, q.state.as_deref().unwrap_or(""));
    if let Some(error) = q.error.as_deref() {
        let e = callback_error(error, q.error_description.as_deref());
        if pending.is_none() {
            return foreign_answer(&session, d);
        }
        return back_to_form(&session, d, &e.to_string(), e.title(), &e.message());
    }
    let Some(pending) = pending else { return foreign_answer(&session, d) };
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        let e = FcError::Token("no code on the callback".into());
        return back_to_form(&session, d, &e.to_string(), e.title(), &e.message());
    };
    let got = match fc.finish(code, &pending.nonce).await {
        Ok(g) => g,
        Err(e) => return back_to_form(&session, d, &e.to_string(), e.title(), &e.message()),
    };
    let i = &got.identity;
    let mut d = d;
    d.erreur = None;
    d.usager = Some(Identified {
        usager_key: usager_key(&state.usager_salt, &got.fc_sub),
        given_name: i.given_name.clone(),
        family_name: i.family_name.clone(),
        preferred_username: i.preferred_username.clone(),
        birthdate: i.birthdate.clone(),
        gender: i.gender.clone(),
        birthplace: i.birthplace.clone(),
        birthcountry: i.birthcountry.clone(),
        email: i.email.clone(),
        at: state.clock.now().micros(),
    });
    keep(&session, &d).map_err(PageError::server)?;
    tracing::info!(aidant = who.aidant_id, "usager identified through FranceConnect");
    let logout_state = data_encoding::BASE64URL_NOPAD.encode(&random_bytes::<32>());
    match fc.logout_url(&got.id_token, &logout_state).await {
        Ok(url) => Ok(guard::see_other(url.as_str())),
        Err(e) => {
            tracing::warn!(error = %e, "FranceConnect logout URL unavailable");
            Ok(guard::see_other(RECAP))
        }
    }
}

/// An answer that does not belong to a request made from this session.
fn foreign_answer(session: &Session, d: Draft) -> Result<HttpResponse, PageError> {
    back_to_form(
        session,
        d,
        "callback: state unknown to this session",
        "L'identification a échoué",
        "La réponse de FranceConnect ne correspond à aucune demande faite depuis ce navigateur : par sécurité, elle n'a pas \
         été utilisée. Relancez l'identification depuis ce navigateur, dans un seul onglet.",
    )
}

