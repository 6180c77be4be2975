//! The printable revocation attestation.

use super::{french_birthdate, usager_of, NOT_FOUND};
use crate::attestation::{qr_svg, verification_url};
use crate::guard;
use crate::page_error::{blocking, PageError};
use crate::pages::{self, render, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_core::attestation::is_fingerprint;
use broker_core::mandat::MandatFacts;
use broker_store::{attestations, mandat_changes, StoreError};

pub struct DemarcheLine {
    pub title: &'static str,
    pub description: &'static str,
}

#[derive(Template)]
#[template(path = "usager_revocation.html")]
struct RevocationPage {
    header: Header,
    back_href: String,
    back_label: String,
    mandat_id: i64,
    usager_name: String,
    usager_birthdate: String,
    organisation_name: String,
    organisation_siret: String,
    organisation_address: String,
    aidant_name: String,
    demarches: Vec<DemarcheLine>,
    created_date: String,
    revoked_date: String,
    whole: bool,
    legal_text_version: String,
    fingerprint: String,
    verification_url: String,
    qr: String,
}

pub async fn revocation_page(state: web::Data<AppState>, session: Session, path: web::Path<(String, String)>) -> Result<HttpResponse, PageError> {
    let (u, fp) = path.into_inner();
    let who = guard::signed_in(&state, &session, &format!("/usagers/{u}/revocations/{fp}"))?;
    if !is_fingerprint(&fp) {
        return Err(NOT_FOUND);
    }
    let ctx = usager_of(&state, who, &u).await?;
    let header = pages::header_for(&state, &session, who.aidant_id).await;
    let back = (format!("/usagers/{}", ctx.usager.id), format!("Revenir à la fiche de {}", ctx.name()));
    revocation_view(&state, header, back, fp, &ctx.mandats).await
}

/// The printable revocation attestation `fp`, if it is one of `mandats`' (404 otherwise).
pub(crate) async fn revocation_view(state: &web::Data<AppState>, header: Header, back: (String, String), fp: String, mandats: &[MandatFacts]) -> Result<HttpResponse, PageError> {
    let st = state.clone();
    let fp2 = fp.clone();
    let loaded = blocking(move || {
        st.db.read_snapshot(|c| {
            let Some(content) = mandat_changes::revocation_content(c, &fp2)? else { return Ok(None) };
            let by = match attestations::recorded_by(c, &fp2)? {
                Some(a) => attestations::aidant_name(c, a)?,
                None => None,
            };
            Ok::<_, StoreError>(Some((content, by)))
        })
    })
    .await?;
    let (content, by) = loaded.ok_or(NOT_FOUND)?;
    let m = mandats.iter().find(|m| m.id == content.mandat_id).ok_or(NOT_FOUND)?;
    let revoked_at = content.revoked_at.unwrap_or(content.created_at);
    let whole = m.autorisations.iter().all(|a| a.revoked_at.is_some_and(|r| r <= revoked_at));
    let url = verification_url(&state.issuer, &fp);
    let qr = qr_svg(&url, "QR code de vérification de l'attestation de révocation").ok_or_else(|| PageError::server("revocation QR code"))?;
    Ok(render(&RevocationPage {
        header,
        back_href: back.0,
        back_label: back.1,
        mandat_id: content.mandat_id,
        usager_name: format!("{} {}", content.usager_given_name, content.usager_family_name),
        usager_birthdate: french_birthdate(&content.usager_birthdate),
        organisation_name: content.organisation_name.clone(),
        organisation_siret: content.organisation_siret.clone(),
        organisation_address: content.organisation_address.clone(),
        aidant_name: by.map(|(f, l)| format!("{f} {l}")).unwrap_or_default(),
        demarches: content.demarches.iter().map(|d| DemarcheLine { title: d.title(), description: d.description() }).collect(),
        created_date: content.created_at.french_date(),
        revoked_date: revoked_at.french_date(),
        whole,
        legal_text_version: content.legal_text_version.clone(),
        fingerprint: fp,
        verification_url: url,
        qr,
    }))
}
