//! The signed-in aidant acting in their current organisation, resolved once per request
//! ([`Acting::resolve`] keeps the answer in the request's extensions).
//!
//! Code past [`Acting::resolve`] runs only for a signed-in, active aidant with a current
//! organisation; it holds the [`InOrganisation`] capability the store's functions for
//! that organisation take. Nobody signed in: `303` to sign-in, coming back
//! to the page asked. An aidant deactivated or without an organisation since: the
//! session ends, and sign-in again.

use crate::guard::{self, SignedIn};
use crate::{pages, AppState};
use actix_session::SessionExt;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use broker_core::capability::{AidantId, InOrganisation};

#[derive(Debug, Clone)]
pub struct Acting {
    pub who: SignedIn,
    pub by: InOrganisation,
}

fn sign_in_again(here: &str) -> HttpResponse {
    let mut u = url::form_urlencoded::Serializer::new(String::new());
    u.append_pair("suite", here);
    guard::see_other(&format!("/connexion?{}", u.finish()))
}

impl Acting {
    /// Resolves the acting aidant of `req` (once: later calls reuse the first answer),
    /// or the answer to send instead.
    pub async fn resolve(req: &HttpRequest) -> Result<Acting, HttpResponse> {
        if let Some(found) = req.extensions().get::<Acting>() {
            return Ok(found.clone());
        }
        let state = req.app_data::<web::Data<AppState>>().cloned().ok_or_else(pages::server_error)?;
        let session = req.get_session();
        let here = req.path().to_owned();
        let who = guard::require_signed_in(&state, &session, &here)?;
        let st = state.clone();
        let aidant = AidantId(who.aidant_id);
        let by = match web::block(move || broker_store::idp::in_organisation(&st.db, aidant)).await {
            Ok(Ok(Some(by))) => by,
            Ok(Ok(None)) => {
                session.purge();
                return Err(sign_in_again(&here));
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "acting aidant not read");
                return Err(pages::server_error());
            }
            Err(_) => return Err(pages::server_error()),
        };
        let acting = Acting { who, by };
        req.extensions_mut().insert(acting.clone());
        Ok(acting)
    }
}
