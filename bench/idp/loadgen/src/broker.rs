//! The broker's side of the benchmark, through the store crate exactly as the broker
//! uses it: seeding a structure, an aidant, a usager, a mandat and a client; minting
//! single-use authorization codes and access tokens in the cache; and the rate of plain
//! single-row INSERT transactions on the same PostgreSQL database.

use crate::stats::Measure;
use anyhow::Context;
use broker_core::client::NewClient;
use broker_core::identite::{usager_key, IdentitePivot, FRANCE};
use broker_core::mandat::Duree;
use broker_core::secret::random_bytes;
use broker_core::{Demarche, Timestamp};
use broker_store::cache::Redis;
use broker_core::capability::{ActingFor, AidantId};
use broker_core::oidc::claims::Scope;
use broker_core::oidc::grant::{Grant, Issued, TokenRequest};
use broker_store::oidc_state::GrantStore;
use broker_store::seal::Sealer;
use broker_store::{admin, mandats, DatabaseUrl, Db};
use diesel::connection::SimpleConnection;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The lifetime the broker gives its codes (`/authorize`) and access tokens (`/token`).
pub const CODE_SECONDS: u64 = 60;
pub const ACCESS_TOKEN_SECONDS: u64 = 120;

/// The seeded usager's given name, which `/userinfo` must answer (its `sub` is the
/// client's pairwise subject, not the broker id).
pub const USAGER_GIVEN_NAME: &str = "Angela Claire Louise";

/// What the seeding created: everything a code or an access token is bound to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seeded {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub organisation_id: i64,
    pub aidant_id: i64,
    pub usager_id: i64,
    pub usager_sub: String,
    pub demarche: String,
    pub autorisation_id: i64,
    pub mandat_id: i64,
    /// The aidant's capability to act for the usager, as `/authorize` checks it.
    pub acting: ActingFor,
}

pub fn open_db(database_url: &str, pool: u32) -> anyhow::Result<Db> {
    let url = DatabaseUrl::parse(database_url);
    Ok(Db::open(&url, pool)?)
}

/// Seeds a migrated database with one structure, one aidant, one usager with a one-year
/// mandat for one démarche, and one client (ES256 id_token, JSON userinfo).
pub fn seed(db: &Db, redirect_uri: &str) -> anyhow::Result<Seeded> {
    let demarche = Demarche::Argent;
    let org = admin::create_organisation(db, "Structure du banc d'essai", "73282932000074", "1 rue de l'Essai, 75001 Paris", None)
        .context("structure")?;
    let aidant = admin::create_aidant(
        db,
        &admin::NewAidant {
            organisation_id: org.id,
            email: "aidant.banc@exemple.fr",
            first_name: "Camille",
            last_name: "Banc",
            profession: "Conseillère numérique",
            referent: false,
        },
    )
    .context("aidant")?;
    let now = Timestamp::now();
    let sub = usager_key(&random_bytes::<32>(), "banc-d-essai-usager");
    let pivot = IdentitePivot {
        given_name: USAGER_GIVEN_NAME.into(),
        family_name: "Dubois".into(),
        preferred_username: None,
        birthdate: "1962-08-24".into(),
        gender: "female".into(),
        birthplace: "75107".into(),
        birthcountry: FRANCE.into(),
        email: "angela.dubois@exemple.fr".into(),
    };
    let usager_id = db.write(|c| mandats::upsert_usager(c, &sub, &pivot, now)).context("usager")?;
    let mandat = mandats::create_mandat(
        db,
        &mandats::NewMandat { organisation_id: org.id, usager_id, aidant_id: aidant.id, demarches: vec![demarche], duree: Duree::UnAn },
        now,
    )
    .context("mandat")?;
    let (autorisation_id, _) = *mandat.autorisations.first().context("mandat sans autorisation")?;
    let registration = NewClient::validate("FranceConnect (banc d'essai)", &[redirect_uri.to_owned()], &[], "ES256", "json")
        .map_err(|e| anyhow::anyhow!("client : {}", e.0))?;
    // The sealing key only serves HS256 clients' secrets: this client is ES256.
    let client = admin::create_client(db, &Sealer::new(&random_bytes::<32>()), &registration).context("client")?;
    let by = broker_store::idp::in_organisation(db, AidantId(aidant.id))?.context("aidant sans structure")?;
    let chosen = broker_store::idp::usager_autorisations(db, &by, broker_core::capability::UsagerId(usager_id), now)?
        .into_iter()
        .next()
        .context("aucune autorisation active")?;
    let acting = broker_store::idp::acting_for(db, &by, &chosen, now)?.context("mandat non vérifié")?;
    Ok(Seeded {
        client_id: client.client_id,
        client_secret: registration.secret.expose().to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        organisation_id: org.id,
        aidant_id: aidant.id,
        usager_id,
        usager_sub: sub,
        demarche: demarche.key().to_owned(),
        autorisation_id,
        mandat_id: mandat.mandat_id,
        acting,
    })
}

fn grant(s: &Seeded) -> Grant {
    let now = Timestamp::now();
    Grant {
        client_id: s.client_id.clone(),
        redirect_uri: s.redirect_uri.clone(),
        nonce: hex_token(),
        code_challenge: None,
        scopes: Scope::ALL.to_vec(),
        acting: s.acting.clone(),
        usager_sub: s.usager_sub.clone(),
        rep_scope: Some(s.demarche.clone()),
        auth_time: now.plus_seconds(-30),
        amr: ["otp", "mfa"].map(String::from).to_vec(),
    }
}

/// An access token minted through the production path: a code issued, redeemed and
/// exchanged.
fn access_token(grants: GrantStore<'_>, s: &Seeded, now: Timestamp) -> anyhow::Result<String> {
    let code = grants.issue_code(&Issued::new(grant(s), now, CODE_SECONDS))?;
    let request = TokenRequest { code: &code, redirect_uri: &s.redirect_uri, code_verifier: None };
    let exchanged = grants.exchange_code(&s.client_id, &request, now, ACCESS_TOKEN_SECONDS).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(exchanged.access_token)
}

fn hex_token() -> String {
    random_bytes::<16>().iter().map(|b| format!("{b:02x}")).collect()
}

/// What to mint.
#[derive(Clone, Copy)]
pub enum Mint {
    Codes,
    AccessTokens,
}

/// Mints `n` single-use codes or access tokens in the broker's cache, from 8 threads.
pub fn mint(cache: &Redis, seeded: &Seeded, what: Mint, n: usize) -> anyhow::Result<Vec<String>> {
    const THREADS: usize = 8;
    let out = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let count = n / THREADS + usize::from(t < n % THREADS);
                scope.spawn(move || -> anyhow::Result<Vec<String>> {
                    let mut v = Vec::with_capacity(count);
                    for _ in 0..count {
                        let now = Timestamp::now();
                        let grants = GrantStore::new(cache);
                        v.push(match what {
                            Mint::Codes => grants.issue_code(&Issued::new(grant(seeded), now, CODE_SECONDS))?,
                            Mint::AccessTokens => access_token(grants, seeded, now)?,
                        });
                    }
                    Ok(v)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n);
        for h in handles {
            all.extend(h.join().map_err(|_| anyhow::anyhow!("minting thread panicked"))??);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    Ok(out)
}

/// Plain single-row INSERT transactions (autocommit) from `writers` connections for
/// `duration`, each latency recorded: the reference of `/userinfo`.
pub fn insert_rate(db: &Db, writers: usize, duration: Duration) -> anyhow::Result<Measure> {
    db.conn()?.batch_execute(
        "CREATE TABLE IF NOT EXISTS bench_insert (id BIGSERIAL PRIMARY KEY, n BIGINT NOT NULL, payload TEXT NOT NULL)",
    )?;
    let errors = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + duration;
    let latencies = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let errors = &errors;
                scope.spawn(move || -> anyhow::Result<Vec<u32>> {
                    let mut c = db.conn()?;
                    let mut lat = Vec::with_capacity(16 * 1024);
                    let mut i = (w as u64) << 40;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match c.batch_execute(&format!("INSERT INTO bench_insert (n, payload) VALUES ({i}, 'autorisation_used')")) {
                            Ok(()) => lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX)),
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        i += 1;
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut failure = None;
        for h in handles {
            match h.join() {
                Ok(Ok(v)) => all.extend(v),
                Ok(Err(e)) => failure = Some(e),
                Err(_) => failure = Some(anyhow::anyhow!("writer thread panicked")),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(all),
        }
    })?;
    Ok(Measure::new(latencies, errors.load(Ordering::Relaxed), started.elapsed(), false, None))
}
