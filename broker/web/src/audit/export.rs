//! Exports of the journal in CSV and JSON Lines, streamed page by page (constant
//! memory), each ending with the signed checkpoint that covers it.

use super::{opt, reader, Criteria};
use crate::page_error::{blocking, PageError};
use crate::AppState;
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use broker_core::journal::{Action, Entry, Record};
use broker_core::Timestamp;
use broker_store::journal;
use broker_store::StoreError;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Entries read per database round trip while exporting.
const EXPORT_BATCH: i64 = 2_000;

/// The body of a streamed export: the chunks a blocking thread sends, in order.
struct Chunks(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
}

const CSV_HEADER: &str = "seq,at,action,aidant,organisation,usager,mandat,autorisation,demarche,client,attestation_hash,details,leaf_hash\n";

fn csv_field(out: &mut String, v: &str) {
    if v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

fn csv_line(r: &Record) -> String {
    let mut s = String::with_capacity(256);
    let at = Timestamp::from_micros(r.at).datetime().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let fields = [
        r.seq.to_string(),
        at,
        r.action.clone(),
        opt(r.aidant),
        opt(r.organisation),
        opt(r.usager),
        opt(r.mandat),
        opt(r.autorisation),
        r.demarche.clone().unwrap_or_default(),
        r.client.clone().unwrap_or_default(),
        r.attestation_hash.clone().unwrap_or_default(),
        r.details.clone(),
        r.leaf_hash.clone(),
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        csv_field(&mut s, f);
    }
    s.push('\n');
    s
}

/// The checkpoint an export ends with: a fresh one when entries were added since the
/// latest, so that it covers every entry exported. Returns (tree size, signed note).
fn covering_checkpoint(st: &AppState) -> Result<Option<(i64, String)>, StoreError> {
    if let Some(key) = &st.journal_key {
        broker_store::checkpoints::create(&st.db, key, st.clock.now(), true)?;
    }
    Ok(st.db.read(broker_store::checkpoints::latest)?.map(|c| (c.size, c.note)))
}

async fn export(state: web::Data<AppState>, session: Session, q: web::Query<Criteria>, format: Format) -> Result<HttpResponse, PageError> {
    let r = reader(&state, &session, "/audit").await?;
    let mut f = q.filter(r.scope).map_err(|e| PageError::page(StatusCode::BAD_REQUEST, "Critères incorrects", e))?;
    let st = state.clone();
    let checkpoint = blocking(move || covering_checkpoint(&st)).await?.ok_or_else(|| {
        PageError::page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Export impossible pour le moment",
            "Le journal n'a pas encore de point de contrôle signé. Réessayez dans quelques minutes.",
        )
    })?;
    f.up_to_seq = Some(checkpoint.0);
    let st = state.clone();
    let journaled = f.clone();
    let by = r.who.aidant_id;
    let fmt = format;
    blocking(move || {
        st.db.write(|c| {
            let mut e = Entry::new(Action::JournalExported)
                .aidant(by)
                .detail("format", if fmt == Format::Csv { "csv" } else { "jsonl" })
                .detail("checkpoint_size", checkpoint.0)
                .detail("via", "web");
            if let Some(o) = journaled.organisation {
                e = e.detail("structure", o);
            }
            journal::append(c, &[e])
        })
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let st = state.clone();
    let note = checkpoint.1;
    std::thread::spawn(move || {
        if format == Format::Csv && tx.blocking_send(Ok(Bytes::from_static(CSV_HEADER.as_bytes()))).is_err() {
            return;
        }
        let mut after = 0;
        loop {
            let page = match st.db.read(|c| journal::search(c, &f, after, EXPORT_BATCH)) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "journal export interrupted");
                    let _ = tx.blocking_send(Err(std::io::Error::other("export interrompu")));
                    return;
                }
            };
            let Some(last) = page.last().map(|r| r.seq) else { break };
            let mut chunk = String::with_capacity(page.len() * 400);
            for r in &page {
                match format {
                    Format::Csv => chunk.push_str(&csv_line(r)),
                    Format::JsonLines => {
                        chunk.push_str(&broker_core::checkpoint::export_line(r));
                        chunk.push('\n');
                    }
                }
            }
            if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                return;
            }
            after = last;
        }
        let tail = match format {
            Format::Csv => {
                let mut s = String::from("checkpoint,");
                csv_field(&mut s, &note);
                s.push('\n');
                s
            }
            Format::JsonLines => broker_core::checkpoint::export_checkpoint_line(&note) + "\n",
        };
        let _ = tx.blocking_send(Ok(Bytes::from(tail)));
    });
    let (ctype, name) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "journal.csv"),
        Format::JsonLines => ("application/jsonl; charset=utf-8", "journal.jsonl"),
    };
    Ok(HttpResponse::Ok()
        .content_type(ctype)
        .insert_header(("Content-Disposition", format!("attachment; filename=\"{name}\"")))
        .insert_header(("Cache-Control", "no-store"))
        .streaming(Chunks(rx)))
}

pub async fn export_csv(state: web::Data<AppState>, session: Session, q: web::Query<Criteria>) -> Result<HttpResponse, PageError> {
    export(state, session, q, Format::Csv).await
}

pub async fn export_jsonl(state: web::Data<AppState>, session: Session, q: web::Query<Criteria>) -> Result<HttpResponse, PageError> {
    export(state, session, q, Format::JsonLines).await
}
