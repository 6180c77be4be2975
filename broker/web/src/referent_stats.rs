//! The référent's statistics panel: the démarches covered by the mandats the current
//! organisation created, and the démarches its aidants did, over the last twelve months
//! (Paris time). Each figure is drawn as an SVG bar chart, described for screen readers,
//! and given again as a table.

use crate::pages::{self, render, Header};
use crate::page_error::{blocking, PageError};
use crate::referent::{require_referent, Freshness};
use crate::AppState;
use actix_session::Session;
use actix_web::{web, HttpResponse};
use askama::Template;
use broker_store::stats::{self, Stats};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/referent/statistiques", web::get().to(page));
}

/// The period shown, in months, the current one included.
const MONTHS: u32 = 12;

/// Chart geometry, in SVG units: each bar has its label above it and its value after it.
const CHART_WIDTH: u32 = 400;
const BAR_MAX: u32 = 340;
const ROW_HEIGHT: u32 = 46;

pub struct Bar {
    pub label: String,
    pub value: i64,
    pub label_y: u32,
    pub bar_y: u32,
    pub value_y: u32,
    pub width: u32,
    pub value_x: u32,
}

/// A horizontal bar chart; `title` and `desc` are its accessible name and description.
pub struct Chart {
    pub id: &'static str,
    pub title: String,
    pub desc: String,
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
}

impl Chart {
    fn new(id: &'static str, title: String, desc: String, values: Vec<(String, i64)>) -> Chart {
        let max = values.iter().map(|v| v.1).max().unwrap_or(0).max(1);
        let bars = values
            .into_iter()
            .enumerate()
            .map(|(i, (label, value))| {
                let top = i as u32 * ROW_HEIGHT;
                let width = if value > 0 { ((value * i64::from(BAR_MAX)) / max).max(2) as u32 } else { 0 };
                Bar { label, value, label_y: top + 16, bar_y: top + 22, value_y: top + 35, width, value_x: width + 6 }
            })
            .collect::<Vec<_>>();
        Chart { id, title, desc, width: CHART_WIDTH, height: bars.len() as u32 * ROW_HEIGHT + 4, bars }
    }
}

pub struct MonthRow {
    pub label: String,
    pub counts: Vec<i64>,
    pub total: i64,
}

#[derive(Template)]
#[template(path = "referent_statistiques.html")]
struct StatsPage<'a> {
    header: Header,
    organisation: &'a str,
    period: String,
    /// Titles of the démarches with at least one autorisation created.
    demarches: Vec<&'static str>,
    created_rows: Vec<MonthRow>,
    created_per_demarche: Vec<i64>,
    created_total: i64,
    created_chart: Chart,
    used_rows: Vec<(String, i64)>,
    used_total: i64,
    used_chart: Chart,
}

fn plural(n: i64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn listing(values: &[(String, i64)]) -> String {
    values.iter().map(|(l, n)| format!("{l} : {n}")).collect::<Vec<_>>().join(", ")
}

fn build<'a>(header: Header, organisation: &'a str, s: &Stats) -> StatsPage<'a> {
    let labels: Vec<String> = s.months.iter().map(|m| m.label()).collect();
    let period = match (labels.first(), labels.last()) {
        (Some(first), Some(last)) => format!("de {first} à {last}"),
        _ => String::new(),
    };
    let created_per_demarche: Vec<i64> = s.created.iter().map(|(_, n)| n.iter().sum()).collect();
    let created_rows = labels
        .iter()
        .enumerate()
        .map(|(i, label)| MonthRow { label: label.clone(), counts: s.created.iter().map(|(_, n)| n[i]).collect(), total: s.created_in(i) })
        .collect();
    let per_demarche: Vec<(String, i64)> =
        s.created.iter().zip(&created_per_demarche).map(|((d, _), n)| (d.title().to_owned(), *n)).collect();
    let created_total = s.created_total();
    let created_chart = Chart::new(
        "graphique-mandats",
        format!("Démarches des mandats créés, {period}"),
        format!("{} au total. {}.", plural(created_total, "démarche couverte", "démarches couvertes"), listing(&per_demarche)),
        per_demarche,
    );
    let used_rows: Vec<(String, i64)> = labels.iter().cloned().zip(s.used.iter().copied()).collect();
    let used_total = s.used_total();
    let used_chart = Chart::new(
        "graphique-utilisations",
        format!("Démarches réalisées par mois, {period}"),
        format!("{} au total. {}.", plural(used_total, "démarche réalisée", "démarches réalisées"), listing(&used_rows)),
        used_rows.clone(),
    );
    StatsPage {
        header,
        organisation,
        period,
        demarches: s.created.iter().map(|(d, _)| d.title()).collect(),
        created_rows,
        created_per_demarche,
        created_total,
        created_chart,
        used_rows,
        used_total,
        used_chart,
    }
}

pub async fn page(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, PageError> {
    let r = require_referent(&state, &session, "/referent/statistiques", Freshness::Any).await?;
    let st = state.clone();
    let (org, now) = (r.organisation_id(), state.clock.now());
    let s = blocking(move || st.db.read_snapshot(|c| stats::organisation_stats(c, org, now, MONTHS))).await?;
    let header = pages::header_for(&state, &session, r.who.aidant_id).await;
    Ok(render(&build(header, &r.organisation.name, &s)))
}
