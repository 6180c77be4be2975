//! The home page: the démarches a mandat can cover.

use crate::guard;
use crate::pages::{header_for, render, DemarcheView, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::Demarche;

#[derive(Template)]
#[template(path = "home.html")]
struct Home {
    header: Header,
    demarches: Vec<DemarcheView>,
}

pub async fn home(state: web::Data<AppState>, session: Session) -> HttpResponse {
    let header = match guard::SignedIn::from_session(&session, state.clock.now()) {
        Some(who) => header_for(&state, &session, who.aidant_id).await,
        None => Header::anonymous(),
    };
    let demarches = Demarche::ALL
        .iter()
        .map(|d| DemarcheView { key: d.key(), title: d.title(), description: d.description() })
        .collect();
    render(&Home { header, demarches })
}
