//! Metrics for the operator, in the Prometheus text format, served at `/metrics` on a
//! listener of their own (`AC_METRICS_LISTEN`), never on the public address.
//!
//! Two kinds of figures:
//! - counted as things happen: requests ([`record_request`]), waits for a database
//!   connection and cache errors ([`broker_store::metrics`]);
//! - read at each scrape by [`refresh`]: the pool, the group-commit queue, the age of the
//!   latest journal checkpoint, the mail queue and the scheduled jobs.
//!
//! Labels hold fixed words only: a route template, never a path, an id or anything a
//! person typed.

use crate::AppState;
use actix_web::dev::{Server, ServiceResponse};
use actix_web::http::Method;
use actix_web::{web, App, HttpResponse, HttpServer};
use broker_core::Timestamp;
use broker_store::{checkpoints, AnyConnection, Db, StoreError};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use std::time::Duration;

pub const HTTP_REQUESTS: &str = "broker_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "broker_http_request_duration_seconds";
pub const DB_POOL_IN_USE: &str = "broker_db_pool_connections_in_use";
pub const DB_POOL_IDLE: &str = "broker_db_pool_connections_idle";
pub const DB_POOL_MAX: &str = "broker_db_pool_connections_max";
pub const JOURNAL_WRITES_WAITING: &str = "broker_journal_writes_waiting";
pub const JOURNAL_CHECKPOINT_AGE: &str = "broker_journal_checkpoint_age_seconds";
pub const MAIL_WAITING: &str = "broker_mail_queue_waiting";
pub const MAIL_RETRYING: &str = "broker_mail_queue_retrying";
pub const MAIL_GIVEN_UP: &str = "broker_mail_queue_given_up";
pub const MAIL_OLDEST_AGE: &str = "broker_mail_queue_oldest_age_seconds";
pub const MAIL_DELIVERED: &str = "broker_mail_delivered_total";
pub const MAIL_FAILURES: &str = "broker_mail_delivery_failures_total";
pub const JOB_LAST_RUN: &str = "broker_job_last_run_timestamp_seconds";
pub const JOB_LAST_SUCCESS: &str = "broker_job_last_run_success";
pub const JOB_LAST_DURATION: &str = "broker_job_last_run_duration_seconds";
pub const JOB_NEXT_DUE: &str = "broker_job_next_due_timestamp_seconds";

/// The `route` label of a request that matched no route (a 404 page, a static file
/// that does not exist).
pub const UNMATCHED: &str = "unmatched";

/// Histogram buckets, in seconds: from half a millisecond to five seconds.
pub const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// How often recorded durations are folded into their histograms between scrapes, so
/// that memory stays bounded when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the process's recorder and describes every family. Without it, nothing is
/// kept: the `metrics` calls do nothing.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_REQUEST_DURATION.into()), BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(broker_store::metrics::DB_POOL_WAIT_SECONDS.into()), BUCKETS)?
        .install_recorder()?;
    describe();
    let kept = handle.clone();
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
        std::thread::sleep(UPKEEP);
        kept.run_upkeep();
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "metrics upkeep not started");
    }
    Ok(handle)
}

fn describe() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route template, method and status");
    describe_histogram!(HTTP_REQUEST_DURATION, Unit::Seconds, "Time to answer an HTTP request, by route template");
    describe_gauge!(DB_POOL_IN_USE, "Database connections held by a call");
    describe_gauge!(DB_POOL_IDLE, "Open database connections held by no call");
    describe_gauge!(DB_POOL_MAX, "Most database connections the pool opens");
    describe_gauge!(JOURNAL_WRITES_WAITING, "Writes queued for the group-commit writer, whose journal entries are not numbered yet");
    describe_gauge!(JOURNAL_CHECKPOINT_AGE, Unit::Seconds, "Seconds since the latest signed checkpoint of the journal");
    describe_gauge!(MAIL_WAITING, "E-mails in the queue, not delivered yet");
    describe_gauge!(MAIL_RETRYING, "E-mails in the queue that failed at least once and wait for another attempt");
    describe_gauge!(MAIL_GIVEN_UP, "E-mails given up (refused for good, or too many attempts)");
    describe_gauge!(MAIL_OLDEST_AGE, Unit::Seconds, "Age of the oldest e-mail waiting in the queue (0 when none)");
    describe_counter!(MAIL_DELIVERED, "E-mails delivered by this process");
    describe_counter!(MAIL_FAILURES, "Failed delivery attempts by this process, by kind (retry or given_up)");
    describe_gauge!(JOB_LAST_RUN, Unit::Seconds, "Unix time of each scheduled job's last run");
    describe_gauge!(JOB_LAST_SUCCESS, "1 when the job's last run succeeded, 0 when it failed");
    describe_gauge!(JOB_LAST_DURATION, Unit::Seconds, "Duration of each scheduled job's last run");
    describe_gauge!(JOB_NEXT_DUE, Unit::Seconds, "Unix time each scheduled job is due next");
    counter!(MAIL_DELIVERED).absolute(0);
    for kind in ["retry", "given_up"] {
        counter!(MAIL_FAILURES, "kind" => kind).absolute(0);
    }
    broker_store::metrics::describe();
}

/// Counts what a pass of the mail sender did.
pub fn record_mail(pass: &crate::mail_sender::Pass) {
    counter!(MAIL_DELIVERED).increment(pass.sent as u64);
    counter!(MAIL_FAILURES, "kind" => "retry").increment(pass.retry as u64);
    counter!(MAIL_FAILURES, "kind" => "given_up").increment(pass.given_up as u64);
}

/// Counts an answered request under its route template (`/autorisation/{flow}`), or
/// [`UNMATCHED`].
pub(crate) fn record_request<B>(res: &ServiceResponse<B>, elapsed: Duration) {
    let route = res.request().match_pattern().unwrap_or_else(|| UNMATCHED.to_owned());
    let status = res.status().as_u16().to_string();
    counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method(res.request().method()), "status" => status).increment(1);
    histogram!(HTTP_REQUEST_DURATION, "route" => route).record(elapsed.as_secs_f64());
}

/// The method as a label: a known method, or `other` (a client may send any token).
fn method(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Sets the gauges read at scrape time. Blocking: reads the database. A gauge read from
/// the database is left as it was when the database does not answer.
pub fn refresh(state: &AppState) {
    pool(&state.db);
    group_commit(&state.db);
    if let Err(e) = state.db.read(from_database) {
        tracing::warn!(error = %e, "metrics: gauges not read from the database");
    }
}

/// The gauges read from the database, on one connection.
fn from_database(c: &mut AnyConnection) -> Result<(), StoreError> {
    journal_checkpoint(c)?;
    mail_queue(c)?;
    scheduled_jobs(c)?;
    Ok(())
}

fn mail_queue(c: &mut AnyConnection) -> Result<(), StoreError> {
    let q = broker_store::mail_queue::stats(c)?;
    gauge!(MAIL_WAITING).set(q.waiting as f64);
    gauge!(MAIL_RETRYING).set(q.retrying as f64);
    gauge!(MAIL_GIVEN_UP).set(q.given_up as f64);
    let age = q.oldest_waiting_since.map_or(0.0, |t| (Timestamp::now().micros() - t.micros()).max(0) as f64 / 1e6);
    gauge!(MAIL_OLDEST_AGE).set(age);
    Ok(())
}

/// Per job, labelled by its name; absent for a job that has never been looked at.
fn scheduled_jobs(c: &mut AnyConnection) -> Result<(), StoreError> {
    for j in broker_store::jobs::states(c)? {
        let name = j.job.name();
        gauge!(JOB_NEXT_DUE, "job" => name).set(j.next_due_at.micros() as f64 / 1e6);
        if let (Some(at), Some(ok)) = (j.last_run_at, j.last_ok()) {
            gauge!(JOB_LAST_RUN, "job" => name).set(at.micros() as f64 / 1e6);
            gauge!(JOB_LAST_SUCCESS, "job" => name).set(if ok { 1.0 } else { 0.0 });
            gauge!(JOB_LAST_DURATION, "job" => name).set(j.last_duration_micros.unwrap_or(0) as f64 / 1e6);
        }
    }
    Ok(())
}

/// Read before any connection is taken for the scrape itself.
fn pool(db: &Db) {
    let p = db.pool_state();
    gauge!(DB_POOL_IN_USE).set(p.in_use());
    gauge!(DB_POOL_IDLE).set(p.idle);
    gauge!(DB_POOL_MAX).set(p.max);
}

fn group_commit(db: &Db) {
    gauge!(JOURNAL_WRITES_WAITING).set(db.group_stats().waiting as f64);
}

/// Absent until the first checkpoint.
fn journal_checkpoint(c: &mut AnyConnection) -> Result<(), StoreError> {
    if let Some(at) = checkpoints::latest_created_at(c)? {
        let age = (Timestamp::now().micros() - at).max(0) as f64 / 1e6;
        gauge!(JOURNAL_CHECKPOINT_AGE).set(age);
    }
    Ok(())
}

async fn scrape(state: web::Data<AppState>, handle: web::Data<PrometheusHandle>) -> HttpResponse {
    let st = state.clone();
    if web::block(move || refresh(&st)).await.is_err() {
        tracing::warn!("metrics: scrape-time gauges not refreshed");
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(handle.render())
}

/// The metrics listener: `GET /metrics` and nothing else, one worker. It leaves the
/// signals to the main server: it stops with the process.
pub fn server(state: web::Data<AppState>, handle: PrometheusHandle, listen: &str) -> std::io::Result<Server> {
    let handle = web::Data::new(handle);
    let server = HttpServer::new(move || {
        App::new().app_data(state.clone()).app_data(handle.clone()).route("/metrics", web::get().to(scrape))
    })
    .workers(1)
    .disable_signals()
    .bind(listen)?;
    for addr in server.addrs() {
        tracing::info!(%addr, "metrics listening");
    }
    Ok(server.run())
}
