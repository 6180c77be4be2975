//! Reading the journal: a search page, a JSON API with keyset pagination on the sequence
//! number, and exports in CSV and JSON Lines, streamed page by page (constant memory),
//! each ending with the signed checkpoint that covers it.
//!
//! Auditors read the whole journal; a référent reads the entries of their current
//! organisation only (the organisation filter is forced); anyone else gets a 403.

use crate::guard::{self, SignedIn};
use crate::page_error::{blocking, PageError};
use crate::pages::{self, render, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use askama::Template;
use broker_core::journal::{Action, Record};
use broker_core::{Demarche, Timestamp};
use broker_store::journal::{self, Filter};
use broker_store::referent;
use broker_store::{audit, StoreError};
use serde::Deserialize;
use serde_json::json;

mod export;

pub use export::{export_csv, export_jsonl};

/// Entries per page of the search page and the API.
const PAGE: i64 = 50;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit", web::get().to(search_page))
        .route("/audit/api", web::get().to(search_api))
        .route("/audit/export.csv", web::get().to(export_csv))
        .route("/audit/export.jsonl", web::get().to(export_jsonl));
}

/// Whose entries a reader may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Everything,
    Organisation(i64),
}

#[derive(Debug, Clone, Copy)]
pub struct Reader {
    pub who: SignedIn,
    pub scope: Scope,
}

const FORBIDDEN: PageError = PageError::Forbidden {
    title: "Journal réservé",
    message: "Le journal est consultable par les auditeurs, et par les référents pour leur structure. Si vous en avez besoin, demandez à votre référent.",
};

/// The signed-in auditor or référent, or why not.
pub async fn reader(state: &web::Data<AppState>, session: &Session, here: &str) -> Result<Reader, PageError> {
    let who = guard::signed_in(state, session, here)?;
    let st = state.clone();
    let scope = blocking(move || {
        st.db.read(|c| {
            if audit::is_auditor(c, who.aidant_id)? {
                return Ok(Some(Scope::Everything));
            }
            Ok::<_, StoreError>(referent::referent_of_current(c, who.aidant_id)?.map(Scope::Organisation))
        })
    })
    .await?;
    scope.map(|scope| Reader { who, scope }).ok_or(FORBIDDEN)
}

/// The search criteria as typed (query string).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Criteria {
    pub aidant: Option<String>,
    pub usager: Option<String>,
    pub structure: Option<String>,
    pub demarche: Option<String>,
    pub action: Option<String>,
    pub client: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC), inclusive.
    pub du: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC), inclusive.
    pub au: Option<String>,
    /// Keyset: entries after this sequence number.
    pub apres: Option<String>,
}

fn blank(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn day_start(raw: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

impl Criteria {
    /// The store filter, or the message that says which field is wrong. The reader's
    /// scope is applied here: a référent's organisation replaces any other.
    pub fn filter(&self, scope: Scope) -> Result<Filter, String> {
        let id = |v: &Option<String>, name: &str| -> Result<Option<i64>, String> {
            match blank(v) {
                None => Ok(None),
                Some(s) => s.parse::<i64>().map(Some).map_err(|_| format!("{name} : un numéro est attendu")),
            }
        };
        let mut f = Filter {
            aidant: id(&self.aidant, "aidant")?,
            usager: id(&self.usager, "usager")?,
            organisation: id(&self.structure, "structure")?,
            ..Filter::default()
        };
        if let Some(d) = blank(&self.demarche) {
            Demarche::from_key(d).ok_or_else(|| format!("démarche inconnue : {d}"))?;
            f.demarche = Some(d.to_owned());
        }
        if let Some(a) = blank(&self.action) {
            Action::from_key(a).ok_or_else(|| format!("action inconnue : {a}"))?;
            f.action = Some(a.to_owned());
        }
        if let Some(client) = blank(&self.client) {
            if !broker_core::validate::is_identifier(client) {
                return Err("client : identifiant de client invalide (caractères visibles, 128 au plus)".into());
            }
            f.client = Some(client.to_owned());
        }
        if let Some(d) = blank(&self.du) {
            f.from = Some(day_start(d).ok_or("du : une date AAAA-MM-JJ est attendue")?);
        }
        if let Some(d) = blank(&self.au) {
            f.until = Some(day_start(d).ok_or("au : une date AAAA-MM-JJ est attendue")? + 86_400_000_000);
        }
        if let Scope::Organisation(org) = scope {
            f.organisation = Some(org);
        }
        Ok(f)
    }

    fn after(&self) -> i64 {
        blank(&self.apres).and_then(|s| s.parse::<i64>().ok()).unwrap_or(0).max(0)
    }

    /// The criteria as a query string, `apres` left out.
    fn query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("aidant", &self.aidant),
            ("usager", &self.usager),
            ("structure", &self.structure),
            ("demarche", &self.demarche),
            ("action", &self.action),
            ("client", &self.client),
            ("du", &self.du),
            ("au", &self.au),
        ] {
            if let Some(v) = blank(v) {
                q.append_pair(k, v);
            }
        }
        q.finish()
    }
}

fn record_json(r: &Record) -> serde_json::Value {
    json!({
        "seq": r.seq,
        "at": Timestamp::from_micros(r.at).datetime().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "action": r.action,
        "aidant": r.aidant,
        "organisation": r.organisation,
        "usager": r.usager,
        "mandat": r.mandat,
        "autorisation": r.autorisation,
        "demarche": r.demarche,
        "client": r.client,
        "attestation_hash": r.attestation_hash,
        "details": serde_json::from_str::<serde_json::Value>(&r.details).unwrap_or(serde_json::Value::Null),
        "leaf_hash": r.leaf_hash,
    })
}

async fn find(state: &web::Data<AppState>, f: Filter, after: i64, limit: i64) -> Result<Vec<Record>, StoreError> {
    let st = state.clone();
    web::block(move || st.db.read(|c| journal::search(c, &f, after, limit))).await.map_err(|e| StoreError::Unavailable(e.to_string()))?
}

pub struct Row {
    pub seq: i64,
    pub when: String,
    pub action: String,
    pub aidant: String,
    pub organisation: String,
    pub usager: String,
    pub demarche: String,
    pub client: String,
    pub details: String,
}

pub struct Choice {
    pub key: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct SearchPage {
    header: Header,
    scoped: bool,
    c: Criteria,
    actions: Vec<Choice>,
    demarches: Vec<Choice>,
    rows: Vec<Row>,
    error: Option<String>,
    next: Option<String>,
    exports: String,
}

fn opt(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

pub async fn search_page(state: web::Data<AppState>, session: Session, q: web::Query<Criteria>) -> Result<HttpResponse, PageError> {
    let r = reader(&state, &session, "/audit").await?;
    let c = q.into_inner();
    let header = pages::header_for(&state, &session, r.who.aidant_id).await;
    let actions = Action::ALL.iter().map(|a| Choice { key: a.key(), label: a.label(), selected: blank(&c.action) == Some(a.key()) }).collect();
    let demarches = Demarche::ALL.iter().map(|d| Choice { key: d.key(), label: d.title(), selected: blank(&c.demarche) == Some(d.key()) }).collect();
    let scoped = matches!(r.scope, Scope::Organisation(_));
    let (rows, error, next) = match c.filter(r.scope) {
        Err(e) => (Vec::new(), Some(e), None),
        Ok(f) => match find(&state, f, c.after(), PAGE + 1).await {
            Ok(mut found) => {
                let more = found.len() as i64 > PAGE;
                found.truncate(PAGE as usize);
                let next = (more && !found.is_empty()).then(|| {
                    let q = c.query();
                    let last = found.last().map(|r| r.seq).unwrap_or(0);
                    if q.is_empty() {
                        format!("/audit?apres={last}")
                    } else {
                        format!("/audit?{q}&apres={last}")
                    }
                });
                let rows = found
                    .iter()
                    .map(|e| Row {
                        seq: e.seq,
                        when: Timestamp::from_micros(e.at).datetime().format("%d/%m/%Y %H:%M:%S").to_string(),
                        action: Action::from_key(&e.action).map(|a| a.label().to_owned()).unwrap_or_else(|| e.action.clone()),
                        aidant: opt(e.aidant),
                        organisation: opt(e.organisation),
                        usager: opt(e.usager),
                        demarche: e.demarche.as_deref().and_then(Demarche::from_key).map(|d| d.title().to_owned()).unwrap_or_default(),
                        client: e.client.clone().unwrap_or_default(),
                        details: e.details.clone(),
                    })
                    .collect();
                (rows, None, next)
            }
            Err(e) => return Err(PageError::store("journal search", e)),
        },
    };
    let exports = c.query();
    Ok(render(&SearchPage { header, scoped, c, actions, demarches, rows, error, next, exports }))
}

fn api_error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).insert_header(("Cache-Control", "no-store")).json(json!({ "error": message }))
}

pub async fn search_api(state: web::Data<AppState>, session: Session, q: web::Query<Criteria>) -> HttpResponse {
    let r = match reader(&state, &session, "/audit").await {
        Ok(r) => r,
        Err(PageError::SignIn { .. }) => return api_error(StatusCode::UNAUTHORIZED, "Connectez-vous pour lire le journal."),
        Err(e) => return api_error(e.status_code(), "Le journal est réservé aux auditeurs, et aux référents pour leur structure."),
    };
    let f = match q.filter(r.scope) {
        Ok(f) => f,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &e),
    };
    match find(&state, f, q.after(), PAGE + 1).await {
        Ok(mut found) => {
            let more = found.len() as i64 > PAGE;
            found.truncate(PAGE as usize);
            let next = if more { found.last().map(|r| r.seq) } else { None };
            HttpResponse::Ok()
                .insert_header(("Cache-Control", "no-store"))
                .json(json!({ "entries": found.iter().map(record_json).collect::<Vec<_>>(), "next_after": next }))
        }
        Err(e) => {
            tracing::error!(error = %e, "journal API");
            api_error(StatusCode::SERVICE_UNAVAILABLE, "Le journal est momentanément indisponible. Réessayez.")
        }
    }
}
