//! Settings: defaults, then the environment (`AC_*`, `DATABASE_URL`, `REDIS_URL`).
//! Every setting is listed in [`KNOWN`] and documented in docs/configuration.md.

use anyhow::{bail, Result};
use broker_core::signing::{DEFAULT_PUBLISH_DELAY_SECONDS, JWKS_MAX_AGE_SECONDS};
use std::path::PathBuf;

/// (name, default, description). docs/configuration.md is checked against this list.
pub const KNOWN: &[(&str, &str, &str)] = &[
    ("DATABASE_URL", "sqlite://data/broker.sqlite3", "postgres://… for PostgreSQL; otherwise a SQLite file path"),
    ("REDIS_URL", "(unset: in-process cache)", "redis://… for the short-lived state shared by instances"),
    ("AC_ENV", "development", "development or production"),
    ("AC_ISSUER", "http://localhost:8000 (development only)", "public base URL of the broker"),
    ("AC_LISTEN", "127.0.0.1:8000", "address and port the HTTP server binds"),
    ("AC_METRICS_LISTEN", "(unset: no metrics)", "address and port of a private listener serving /metrics in the Prometheus text format; never AC_LISTEN"),
    ("AC_KEYS_DIR", "keys", "directory of the key files"),
    ("AC_ASSETS_DIR", "node_modules/@gouvfr/dsfr/dist", "directory of the DSFR assets"),
    ("AC_LOG", "info,actix_http::h1::dispatcher=off", "log filter (tracing EnvFilter syntax); the HTTP layer's own lines about malformed requests, already answered 400 or 431, are off by default"),
    ("AC_LOG_FORMAT", "text in development, json in production", "text or json"),
    ("AC_WORKERS", "2", "HTTP worker threads"),
    ("AC_DB_POOL_SIZE", "10", "database connections per process"),
    ("AC_CACHE_PREFIX", "ac:", "prefix of every Redis key"),
    ("AC_CLIENT_CACHE_SECONDS", "10", "seconds an instance keeps its copy of a registered client (a client made inactive stops being served within this delay; 0: read every time)"),
    ("AC_SMTP_URL", "(unset: messages written to the outbox)", "smtp://host:port or smtps://user:password@host for outgoing e-mail"),
    ("AC_MAIL_FROM", "Aidants Connect <ne-pas-repondre@aidantsconnect.beta.gouv.fr>", "sender of outgoing e-mail"),
    ("AC_DEV_CLOCK_OFFSET_FILE", "", "development only: a file holding seconds added to the clock (tests of time limits)"),
    ("AC_OUTBOX_DIR", "data/outbox", "where messages are written when AC_SMTP_URL is unset"),
    ("AC_BEHIND_PROXY", "false", "true when a reverse proxy sets Forwarded / X-Forwarded-For"),
    ("AC_KEY_PUBLISH_DELAY_SECONDS", "3600", "delay between `broker keys rotate` and the moment the new key signs"),
    ("AC_FC_ISSUER", "{AC_ISSUER}/simulateur-franceconnect/api/v2 (development only)", "FranceConnect v2 issuer the broker identifies usagers with"),
    ("AC_FC_CLIENT_ID", "aidants-connect-dev (development only)", "the broker's client id at FranceConnect"),
    ("AC_FC_CLIENT_SECRET", "derived from the seal key (development only)", "the broker's client secret at FranceConnect"),
    ("AC_JOURNAL_CHECKPOINT_SECONDS", "300", "seconds between two signed checkpoints of the journal, made only when entries were added (0: none in the background)"),
    ("AC_JOBS_INTERVAL_SECONDS", "60", "seconds between two looks of the server at its scheduled jobs (0: the server runs none; run `broker jobs run-due` from cron instead)"),
    ("AC_JOURNAL_ORIGIN", "{host of AC_ISSUER}/journal", "origin of the journal's checkpoints, which is also the name of the journal key"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    Development,
    Production,
}

/// The default log filter: INFO, without the HTTP layer's lines about malformed requests
/// (a caller's bytes, already answered 400 or 431, are not the service's errors).
pub const DEFAULT_LOG: &str = "info,actix_http::h1::dispatcher=off";

#[derive(Debug, Clone)]
pub struct Settings {
    pub env: Env,
    pub database_url: String,
    pub redis_url: Option<String>,
    pub issuer: String,
    pub listen: String,
    /// Where `/metrics` is served, apart from the public listener; `None`: no metrics.
    pub metrics_listen: Option<String>,
    pub keys_dir: PathBuf,
    pub assets_dir: PathBuf,
    pub log: String,
    pub log_json: bool,
    pub workers: usize,
    pub db_pool_size: u32,
    pub client_cache_seconds: u64,
    pub cache_prefix: String,
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub outbox_dir: PathBuf,
    pub behind_proxy: bool,
    /// Seconds between a rotation and the moment the new signing key signs.
    pub key_publish_delay_seconds: i64,
    /// FranceConnect registration; `None` when unset (development then uses the simulator).
    pub franceconnect: Option<FranceConnect>,
    /// Seconds between two checkpoints of the journal by the server (0: none).
    pub journal_checkpoint_seconds: u64,
    /// Seconds between two looks at the scheduled jobs by the server (0: never).
    pub jobs_interval_seconds: u64,
    /// Origin of the journal's checkpoints and name of the journal key.
    pub journal_origin: String,
}

/// `host[:port]/journal` from the issuer URL.
fn default_journal_origin(issuer: &str) -> String {
    let rest = issuer.split_once("://").map_or(issuer, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    format!("{host}/journal")
}

/// `AC_FC_ISSUER`, `AC_FC_CLIENT_ID`, `AC_FC_CLIENT_SECRET`: all three or none.
#[derive(Clone)]
pub struct FranceConnect {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for FranceConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FranceConnect").field("issuer", &self.issuer).field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

fn franceconnect(env: Env) -> Result<Option<FranceConnect>> {
    let fc = match (var("AC_FC_ISSUER"), var("AC_FC_CLIENT_ID"), var("AC_FC_CLIENT_SECRET")) {
        (None, None, None) => return Ok(None),
        (Some(issuer), Some(client_id), Some(client_secret)) => {
            FranceConnect { issuer: issuer.trim().trim_end_matches('/').to_owned(), client_id: client_id.trim().to_owned(), client_secret }
        }
        _ => bail!("AC_FC_ISSUER, AC_FC_CLIENT_ID et AC_FC_CLIENT_SECRET vont ensemble : renseignez les trois ou aucun"),
    };
    let https = fc.issuer.starts_with("https://");
    if !(https || (env == Env::Development && fc.issuer.starts_with("http://"))) {
        bail!("AC_FC_ISSUER doit être une URL https:// (http:// accepté en développement seulement)");
    }
    Ok(Some(fc))
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match var(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse() {
            Ok(n) => Ok(n),
            Err(_) => bail!("{name} : nombre attendu, reçu « {v} »"),
        },
    }
}

/// Whether two listen addresses would take the same socket: the same port on the same
/// address, or on every address (`0.0.0.0`, `[::]`) for either. Names that are not IP
/// addresses (`localhost:9464`) are compared as written.
fn same_listener(a: &str, b: &str) -> bool {
    use std::net::SocketAddr;
    match (a.parse::<SocketAddr>(), b.parse::<SocketAddr>()) {
        (Ok(a), Ok(b)) => a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()),
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// `AC_*` variables that no setting reads: most likely a typo.
pub fn unknown_variables() -> Vec<String> {
    let mut out: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("AC_") && !KNOWN.iter().any(|(n, _, _)| n == k))
        .collect();
    out.sort();
    out
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        let env = match var("AC_ENV").as_deref() {
            None | Some("development") => Env::Development,
            Some("production") => Env::Production,
            Some(other) => bail!("AC_ENV : « {other} » inconnu (development ou production)"),
        };
        let issuer = match (var("AC_ISSUER"), env) {
            (Some(i), _) => i.trim_end_matches('/').to_owned(),
            (None, Env::Development) => "http://localhost:8000".to_owned(),
            (None, Env::Production) => bail!("AC_ISSUER est obligatoire en production (URL publique https du broker)"),
        };
        if env == Env::Production && !issuer.starts_with("https://") {
            bail!("AC_ISSUER doit commencer par https:// en production");
        }
        let log_json = match var("AC_LOG_FORMAT").as_deref() {
            None => env == Env::Production,
            Some("json") => true,
            Some("text") => false,
            Some(other) => bail!("AC_LOG_FORMAT : « {other} » inconnu (text ou json)"),
        };
        let key_publish_delay_seconds = parse_num("AC_KEY_PUBLISH_DELAY_SECONDS", DEFAULT_PUBLISH_DELAY_SECONDS)?;
        if key_publish_delay_seconds < 0 {
            bail!("AC_KEY_PUBLISH_DELAY_SECONDS : nombre de secondes positif ou nul attendu");
        }
        if env == Env::Production && key_publish_delay_seconds < JWKS_MAX_AGE_SECONDS {
            bail!(
                "AC_KEY_PUBLISH_DELAY_SECONDS doit valoir au moins {JWKS_MAX_AGE_SECONDS} en production \
                 (les clients gardent le JWKS jusqu'à {JWKS_MAX_AGE_SECONDS} s)"
            );
        }
        let journal_origin = match var("AC_JOURNAL_ORIGIN") {
            Some(o) if o.contains('+') || o.trim().chars().any(char::is_whitespace) => {
                bail!("AC_JOURNAL_ORIGIN : nom sans espace ni « + » attendu")
            }
            Some(o) => o.trim().to_owned(),
            None => default_journal_origin(&issuer),
        };
        let listen = var("AC_LISTEN").map_or_else(|| "127.0.0.1:8000".to_owned(), |l| l.trim().to_owned());
        let metrics_listen = var("AC_METRICS_LISTEN").map(|l| l.trim().to_owned());
        if let Some(m) = &metrics_listen {
            if same_listener(m, &listen) {
                bail!(
                    "AC_METRICS_LISTEN ({m}) ne doit pas être l'adresse publique AC_LISTEN ({listen}) : \
                     les métriques se servent sur une adresse privée, sur un autre port"
                );
            }
        }
        Ok(Self {
            env,
            database_url: var("DATABASE_URL").unwrap_or_else(|| "sqlite://data/broker.sqlite3".into()),
            redis_url: var("REDIS_URL"),
            issuer,
            listen,
            metrics_listen,
            keys_dir: var("AC_KEYS_DIR").unwrap_or_else(|| "keys".into()).into(),
            assets_dir: var("AC_ASSETS_DIR").unwrap_or_else(|| "node_modules/@gouvfr/dsfr/dist".into()).into(),
            log: var("AC_LOG").unwrap_or_else(|| DEFAULT_LOG.into()),
            log_json,
            workers: parse_num("AC_WORKERS", 2)?,
            db_pool_size: parse_num("AC_DB_POOL_SIZE", 10)?,
            client_cache_seconds: parse_num("AC_CLIENT_CACHE_SECONDS", 10)?,
            cache_prefix: var("AC_CACHE_PREFIX").unwrap_or_else(|| "ac:".into()),
            smtp_url: var("AC_SMTP_URL"),
            mail_from: var("AC_MAIL_FROM").unwrap_or_else(|| "Aidants Connect <ne-pas-repondre@aidantsconnect.beta.gouv.fr>".into()),
            outbox_dir: var("AC_OUTBOX_DIR").unwrap_or_else(|| "data/outbox".into()).into(),
            behind_proxy: match var("AC_BEHIND_PROXY").as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => bail!("AC_BEHIND_PROXY : « {other} » inconnu (true ou false)"),
            },
            key_publish_delay_seconds,
            franceconnect: franceconnect(env)?,
            journal_checkpoint_seconds: parse_num("AC_JOURNAL_CHECKPOINT_SECONDS", 300)?,
            jobs_interval_seconds: parse_num("AC_JOBS_INTERVAL_SECONDS", 60)?,
            journal_origin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::KNOWN;

    #[test]
    fn journal_origin_defaults_to_the_issuer_host() {
        assert_eq!(super::default_journal_origin("http://localhost:8000"), "localhost:8000/journal");
        assert_eq!(super::default_journal_origin("https://aidantsconnect.beta.gouv.fr/base"), "aidantsconnect.beta.gouv.fr/journal");
    }

    #[test]
    fn the_metrics_listener_is_never_the_public_one() {
        use super::same_listener;
        assert!(same_listener("127.0.0.1:8000", "127.0.0.1:8000"));
        assert!(same_listener("0.0.0.0:8000", "127.0.0.1:8000"));
        assert!(same_listener("127.0.0.1:8000", "[::]:8000"));
        assert!(same_listener("LOCALHOST:8000", "localhost:8000"));
        assert!(!same_listener("127.0.0.1:9464", "127.0.0.1:8000"));
        assert!(!same_listener("10.0.0.5:8000", "127.0.0.1:8000"));
        assert!(!same_listener("localhost:9464", "localhost:8000"));
    }

    #[test]
    fn every_setting_is_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md")).unwrap();
        for (name, _, _) in KNOWN {
            assert!(doc.contains(&format!("`{name}`")), "docs/configuration.md does not document {name}");
        }
    }
}
