//! `broker serve`: the HTTP service and its background tasks.

use super::*;
use std::time::Duration;

/// Where FranceConnect sends the usager back, and where its logout ends.
pub(super) fn fc_redirect_uri(s: &Settings) -> String {
    format!("{}/mandats/nouveau/franceconnect/retour", s.issuer)
}

pub(super) fn fc_post_logout_redirect_uri(s: &Settings) -> String {
    format!("{}/mandats/nouveau", s.issuer)
}

/// The broker's FranceConnect registration: `AC_FC_*`, or in development the built-in
/// simulator at `{AC_ISSUER}/simulateur-franceconnect/api/v2`.
pub(super) fn franceconnect(s: &Settings, keys: &Keys) -> Option<broker_web::franceconnect::FcSettings> {
    let (issuer, client_id, client_secret) = match (&s.franceconnect, s.env) {
        (Some(fc), _) => (fc.issuer.clone(), fc.client_id.clone(), fc.client_secret.clone()),
        (None, Env::Development) => (
            fcsim::provider::ProviderSettings::issuer_under(&s.issuer),
            crate::demo::FC_SIM_CLIENT_ID.to_owned(),
            crate::demo::fc_sim_client_secret(&keys.seal),
        ),
        (None, Env::Production) => return None,
    };
    Some(broker_web::franceconnect::FcSettings {
        issuer,
        client_id,
        client_secret,
        redirect_uri: fc_redirect_uri(s),
        post_logout_redirect_uri: fc_post_logout_redirect_uri(s),
    })
}

/// In development only: the demonstration e-service at `/demo` (FranceConnect's core
/// played against this broker with the demo client), and the FranceConnect provider
/// simulator at `/simulateur-franceconnect/api/v2`, where the broker is registered as
/// [`crate::demo::FC_SIM_CLIENT_ID`].
pub(super) fn demo_service(s: &Settings, keys: &Keys) -> Option<Arc<dyn Fn(&mut actix_web::web::ServiceConfig) + Send + Sync>> {
    if s.env != Env::Development {
        return None;
    }
    let demo = fcsim::demo::DemoSettings {
        issuer: s.issuer.clone(),
        client_id: crate::demo::DEMO_CLIENT_ID.to_owned(),
        client_secret: crate::demo::demo_client_secret(&keys.seal),
    };
    let simulator = fcsim::provider::ProviderSettings::new(
        fcsim::provider::ProviderSettings::issuer_under(&s.issuer),
        crate::demo::FC_SIM_CLIENT_ID,
        crate::demo::fc_sim_client_secret(&keys.seal),
        vec![fc_redirect_uri(s)],
        vec![fc_post_logout_redirect_uri(s)],
    )
    .with_key_seed(&crate::demo::fc_sim_key_seed(&keys.seal));
    Some(Arc::new(move |cfg: &mut actix_web::web::ServiceConfig| {
        fcsim::demo::configure(cfg, demo.clone());
        fcsim::provider::configure(cfg, simulator.clone());
    }))
}

pub(super) fn serve(s: &Settings) -> Result<(), Failure> {
    if s.env == Env::Production && s.smtp_url.is_none() {
        return Err(bad_input("AC_SMTP_URL est obligatoire en production (envoi des liens de connexion)"));
    }
    let keys = keys(s)?;
    let journal_key = Arc::new(journal_key(s)?);
    // Production checks the signing keys before touching the database.
    let checked = if s.env == Env::Production { Some(signing_keys(s, None)?) } else { None };
    let db = open_db(s)?;
    let signing = match checked {
        Some(store) => store,
        None => signing_keys(s, Some(&db))?,
    };
    warn_unsigned_clients(&db, &signing.keys());
    let cache: Arc<dyn Cache> = match &s.redis_url {
        Some(url) => Arc::new(Redis::new(url, &s.cache_prefix).map_err(|e| Failure { code: 2, message: e.to_string() })?),
        None => {
            if s.env == Env::Production {
                tracing::warn!("REDIS_URL unset: in-process cache, state is not shared between instances");
            }
            Arc::new(InProcess::new())
        }
    };
    if s.env == Env::Development {
        crate::demo::seed_and_print(&db, &keys, s).context("données de démonstration")?;
    }
    if !s.assets_dir.join("dsfr.min.css").exists() {
        tracing::warn!(dir = %s.assets_dir.display(), "DSFR assets not found: run `npm ci` (see README)");
    }
    if s.journal_checkpoint_seconds > 0 {
        start_checkpoints(db.clone(), journal_key.clone(), s.journal_checkpoint_seconds);
    }
    start_purges(db.clone());
    let mailer = broker_web::mail::Mailer::from_settings(s.smtp_url.as_deref(), &s.mail_from, &s.outbox_dir)
        .map_err(|e| Failure { code: 2, message: e.to_string() })?;
    let passkeys = broker_web::passkeys::Passkeys::new(&s.issuer).map_err(|e| Failure { code: 2, message: format!("AC_ISSUER : {}", e.detail()) })?;
    let fc_settings = franceconnect(s, &keys);
    let fc_client = match &fc_settings {
        Some(fc) => Some(Arc::new(
            broker_web::franceconnect::FcClient::new(fc.clone()).map_err(|e| bad_input(format!("AC_FC_ISSUER : {e}")))?,
        )),
        None => None,
    };
    let clock = clock(s)?;
    let mailer = Arc::new(mailer);
    let mail = broker_web::mail_sender::MailSender::start(db.clone(), mailer.clone(), s.issuer.clone(), clock.clone(), Duration::from_secs(1));
    if s.jobs_interval_seconds > 0 {
        start_jobs(db.clone(), clock.clone(), mail.clone(), s.jobs_interval_seconds);
    }
    let state = broker_web::AppState {
        db,
        cache,
        issuer: s.issuer.clone(),
        sealer: Sealer::new(&keys.seal),
        mailer,
        mail,
        passkeys: Arc::new(passkeys),
        clock,
        signing: Arc::new(signing),
        development: s.env == Env::Development,
        behind_proxy: s.behind_proxy,
        franceconnect: fc_client,
        usager_salt: keys.usager_salt,
        journal_key: Some(journal_key),
        clients: Arc::new(broker_store::idp::ClientCache::new(std::time::Duration::from_secs(s.client_cache_seconds))),
        token_clients: Arc::new(broker_web::oidc::token::TokenClients::new(std::time::Duration::from_secs(s.client_cache_seconds))),
    };
    let opts = broker_web::ServeOptions {
        listen: s.listen.clone(),
        assets_dir: s.assets_dir.clone(),
        workers: s.workers,
        session_key: keys.session,
        extra: demo_service(s, &keys),
    };
    let fc_issuer = match fc_settings {
        Some(fc) => fc.issuer,
        None => {
            tracing::warn!("AC_FC_ISSUER unset: usagers cannot be identified through FranceConnect");
            "(none)".to_owned()
        }
    };
    let signing_kids = state
        .signing
        .keys()
        .signing_keys(Timestamp::now())
        .iter()
        .map(|k| format!("{}={}", k.alg().key(), k.kid()))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(backend = state.db.backend().name(), cache = state.cache.kind(), issuer = %s.issuer, signing_kids = %signing_kids, franceconnect = %fc_issuer, "starting");
    let metrics = match &s.metrics_listen {
        Some(listen) => {
            let handle = broker_web::metrics::install().map_err(|e| Failure { code: 1, message: format!("métriques : {e}") })?;
            Some((listen.clone(), handle))
        }
        None => None,
    };
    actix_web::rt::System::new().block_on(async {
        if let Some((listen, handle)) = metrics {
            let server = broker_web::metrics::server(actix_web::web::Data::new(state.clone()), handle, &listen)
                .map_err(|e| Failure { code: 1, message: format!("métriques (AC_METRICS_LISTEN) : {e} ({listen})") })?;
            actix_web::rt::spawn(server);
        }
        broker_web::serve(state, opts).await.map_err(|e| Failure { code: 1, message: format!("serveur HTTP : {e} ({})", s.listen) })
    })
}

/// The clock of the service: the system's, or in development the one moved by
/// `AC_DEV_CLOCK_OFFSET_FILE`.
pub(super) fn clock(s: &Settings) -> Result<Arc<dyn broker_core::time::Clock>, Failure> {
    Ok(match std::env::var_os("AC_DEV_CLOCK_OFFSET_FILE") {
        Some(path) if s.env == Env::Development => Arc::new(crate::devclock::OffsetFileClock { path: path.into() }),
        Some(_) => return Err(bad_input("AC_DEV_CLOCK_OFFSET_FILE n'est accepté qu'en développement")),
        None => Arc::new(broker_core::time::SystemClock),
    })
}

/// Every `every` seconds, runs the scheduled jobs that are due and that no other instance
/// is running ([`broker_store::jobs::run_due`]), then wakes the mail sender.
fn start_jobs(db: Db, clock: Arc<dyn broker_core::time::Clock>, mail: broker_web::mail_sender::MailSender, every: u64) {
    let spawned = std::thread::Builder::new().name("scheduled-jobs".into()).spawn(move || loop {
        match broker_store::jobs::run_due(&db, clock.now()) {
            Ok(runs) => {
                for r in &runs {
                    if r.ok {
                        tracing::info!(job = r.job.name(), outcome = %r.outcome, micros = r.micros, "scheduled job run");
                    }
                }
                if !runs.is_empty() {
                    mail.wake();
                }
            }
            Err(e) => tracing::warn!(error = %e, "scheduled jobs not looked at"),
        }
        std::thread::sleep(Duration::from_secs(every));
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "scheduled jobs: task not started");
    }
}

// ---- the journal: key, checkpoints, proofs, export, stand-alone verifier ------------------

/// Every ten minutes, forgets the uses of access tokens that have expired
/// ([`broker_store::idp::purge_token_uses`]).
pub(super) fn start_purges(db: Db) {
    let keep = broker_store::oidc_state::MAX_ACCESS_TOKEN_TTL_SECONDS as i64 + 60;
    let spawned = std::thread::Builder::new().name("purges".into()).spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(600));
        match broker_store::idp::purge_token_uses(&db, Timestamp::now().plus_seconds(-keep)) {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "expired token uses purged"),
            Err(e) => tracing::error!(error = %e, "purge of token uses failed"),
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "purges: task not started");
    }
}

/// The server's periodic checkpoints: one at start, then every `every` seconds when
/// entries other than checkpoints were added.
pub(super) fn start_checkpoints(db: Db, key: Arc<JournalKey>, every: u64) {
    let spawned = std::thread::Builder::new().name("journal-checkpoints".into()).spawn(move || loop {
        match checkpoints::create(&db, &key, Timestamp::now(), true) {
            Ok(Some(m)) if m.created => tracing::info!(size = m.checkpoint.size, root = %m.checkpoint.root_hash, "journal checkpoint signed"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "journal checkpoint failed"),
        }
        std::thread::sleep(std::time::Duration::from_secs(every));
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "journal checkpoints: task not started");
    }
}
