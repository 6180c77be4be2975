//! The IdP's short-lived grants, against both caches: the in-process one and a real Redis
//! (each test with its own key prefix).

use broker_core::capability::{ActingFor, AidantFacts, AidantId, InOrganisation, OrganisationFacts, OrganisationId};
use broker_core::mandat::{AutorisationFacts, MandatFacts};
use broker_core::oidc::claims::Scope;
use broker_core::oidc::error::{ErrorCode, OAuthError};
use broker_core::oidc::grant::{Grant, Issued, RedemptionRefusal, TokenRequest};
use broker_core::{Demarche, Timestamp};
use broker_store::cache::{Cache, CacheError, InProcess, Redis};
use broker_store::oidc_state::{code_hash, token_hash, Exchanged, GrantError, GrantStore, MAX_CODE_TTL_SECONDS};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLIENT: &str = "franceconnect-core";
const REDIRECT: &str = "https://core.fc.test/api/v2/oidc-callback";

/// Wraps a cache and records every key and value it is handed, to check that no secret
/// reaches it (works for the in-process cache too, whose map is private).
struct Spy {
    inner: Arc<dyn Cache>,
    seen: Mutex<Vec<Vec<u8>>>,
}

impl Spy {
    fn saw(&self, needle: &str) -> bool {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .any(|b| contains(b, needle.as_bytes()))
    }

    fn note(&self, bytes: &[u8]) {
        self.seen.lock().unwrap().push(bytes.to_vec());
    }
}

impl Cache for Spy {
    fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        self.note(key.as_bytes());
        self.note(value);
        self.inner.put(key, value, ttl)
    }
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.note(key.as_bytes());
        self.inner.get(key)
    }
    fn take(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.note(key.as_bytes());
        self.inner.take(key)
    }
    fn incr(&self, key: &str, ttl: Duration) -> Result<i64, CacheError> {
        self.note(key.as_bytes());
        self.inner.incr(key, ttl)
    }
    fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.note(key.as_bytes());
        self.inner.delete(key)
    }
    fn ping(&self) -> Result<(), CacheError> {
        self.inner.ping()
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// One cache of each kind; for Redis, also its key prefix (unique to the call).
fn caches() -> Vec<(Arc<dyn Cache>, Option<String>)> {
    let prefix = format!("ac-test-{}:", hex::encode(rand::random::<[u8; 6]>()));
    let redis = Redis::new(&broker_testkit::redis_url(), &prefix).unwrap();
    redis.ping().expect("Redis is required for the tests");
    vec![
        (Arc::new(InProcess::new()), None),
        (Arc::new(redis), Some(prefix)),
    ]
}

fn raw_redis() -> redis::Connection {
    redis::Client::open(broker_testkit::redis_url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Every key under `prefix` with its value (strings only) and remaining TTL in ms.
fn redis_dump(prefix: &str) -> Vec<(String, Vec<u8>, i64)> {
    let mut c = raw_redis();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut c)
        .unwrap();
    keys.into_iter()
        .map(|k| {
            let ty: String = redis::cmd("TYPE").arg(&k).query(&mut c).unwrap();
            let v: Vec<u8> = if ty == "string" {
                redis::cmd("GET").arg(&k).query(&mut c).unwrap()
            } else {
                Vec::new()
            };
            let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).unwrap();
            (k, v, ttl)
        })
        .collect()
}

fn now() -> Timestamp {
    Timestamp::from_micros(1_800_000_000_000_000)
}

fn grant() -> Grant {
    let by = InOrganisation::check(
        &AidantFacts { id: AidantId(7), active: true, current_organisation: Some(OrganisationId(3)) },
        &OrganisationFacts { id: OrganisationId(3), allowed_demarches: Demarche::ALL.to_vec() },
    )
    .unwrap();
    let mandat = MandatFacts {
        id: 12,
        organisation_id: 3,
        usager_id: 42,
        created_at: now().plus_seconds(-3600),
        expires_at: now().plus_days(31),
        autorisations: vec![AutorisationFacts { id: 99, demarche: Demarche::Argent, revoked_at: None }],
    };
    Grant {
        client_id: CLIENT.into(),
        redirect_uri: REDIRECT.into(),
        nonce: "n-0S6_WzA2Mj".into(),
        code_challenge: None,
        scopes: vec![Scope::OpenId, Scope::Profile],
        acting: ActingFor::check(&by, &mandat, Demarche::Argent, now()).unwrap(),
        usager_sub: "b5c8d1e0f2a3".into(),
        rep_scope: Some("argent".into()),
        auth_time: now().plus_seconds(-30),
        amr: vec!["otp".into(), "mfa".into()],
    }
}

fn code_for(c: &dyn Cache, lifetime: u64) -> String {
    GrantStore::new(c).issue_code(&Issued::new(grant(), now(), lifetime)).unwrap()
}

fn request<'a>(code: &'a str, redirect: &'a str, verifier: Option<&'a str>) -> TokenRequest<'a> {
    TokenRequest { code, redirect_uri: redirect, code_verifier: verifier }
}

/// The token endpoint's exchange (one cache step): the access token, or why not.
fn redeem(c: &dyn Cache, client: &str, code: &str, redirect: &str, at: Timestamp) -> Result<Exchanged, GrantError> {
    GrantStore::new(c).exchange_code(client, &request(code, redirect, None), at, 120)
}

fn exchange(c: &dyn Cache, client: &str, code: &str, redirect: &str, at: Timestamp) -> Result<String, String> {
    redeem(c, client, code, redirect, at).map(|e| e.access_token).map_err(|e| e.to_string())
}

/// The same exchange over the async path, on a runtime of its own.
fn redeem_async(c: &dyn Cache, client: &str, code: &str, redirect: &str, verifier: Option<&str>, at: Timestamp) -> Result<Exchanged, GrantError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(GrantStore::new(c).exchange_code_async(client, &request(code, redirect, verifier), at, 120))
}

#[test]
fn a_code_is_exchanged_once_for_a_stored_token() {
    for (c, _) in caches() {
        let k = c.kind();
        let grants = GrantStore::new(&*c);
        let code = code_for(&*c, 60);
        assert_eq!(code.len(), 43, "{k}");
        let got = redeem(&*c, CLIENT, &code, REDIRECT, now()).unwrap();
        assert_eq!(got.code.value, grant(), "{k}: the grant comes back whole");
        assert_eq!((got.code.issued_at, got.code.expires_at), (now(), now().plus_seconds(60)));
        assert_eq!(got.access_token.len(), 43);
        let stored = grants.token(&got.access_token, now()).unwrap().expect("stored with the exchange");
        assert_eq!(stored, Issued::new(grant(), now(), 120), "{k}: the token's grant, from now for 120 s");
        assert_eq!(redeem(&*c, CLIENT, &code, REDIRECT, now()), Err(GrantError::Replayed), "{k}");
        assert_eq!(redeem(&*c, CLIENT, "never-issued-code", REDIRECT, now()), Err(GrantError::Unknown), "{k}");
    }
}

#[test]
fn the_async_exchange_is_the_same_step() {
    for (c, _) in caches() {
        let k = c.kind();
        let grants = GrantStore::new(&*c);
        let code = code_for(&*c, 60);
        let got = redeem_async(&*c, CLIENT, &code, REDIRECT, None, now()).unwrap();
        assert_eq!(got.code.value, grant(), "{k}");
        assert!(grants.token(&got.access_token, now()).unwrap().is_some(), "{k}");
        assert_eq!(redeem_async(&*c, CLIENT, &code, REDIRECT, None, now()), Err(GrantError::Replayed), "{k}");
        assert_eq!(grants.token(&got.access_token, now()).unwrap(), None, "{k}: revoked by the replay");
        assert_eq!(redeem_async(&*c, "attacker", &code, REDIRECT, None, now()), Err(GrantError::Unknown), "{k}");
        let code = code_for(&*c, 30);
        assert_eq!(
            redeem_async(&*c, CLIENT, &code, REDIRECT, None, now().plus_seconds(30)),
            Err(GrantError::Refused(RedemptionRefusal::Expired)),
            "{k}"
        );
        assert_eq!(redeem_async(&*c, CLIENT, &code, REDIRECT, None, now()), Err(GrantError::Replayed), "{k}: spent");
        // A code from the sync path is redeemed by the async one, and the other way round.
        let code = code_for(&*c, 60);
        assert!(redeem_async(&*c, CLIENT, &code, REDIRECT, None, now()).is_ok(), "{k}");
        assert_eq!(redeem(&*c, CLIENT, &code, REDIRECT, now()), Err(GrantError::Replayed), "{k}");
    }
}

#[test]
fn of_eight_concurrent_exchanges_exactly_one_gets_a_token_and_the_others_revoke_it() {
    for (c, _) in caches() {
        let k = c.kind();
        for round in 0..5 {
            let code = code_for(&*c, 60);
            let asynchronous = round % 2 == 1;
            let results: Vec<Result<Exchanged, GrantError>> = if asynchronous {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
                rt.block_on(async {
                    let tasks: Vec<_> = (0..8)
                        .map(|_| {
                            let (c, code) = (c.clone(), code.clone());
                            tokio::spawn(async move { GrantStore::new(&*c).exchange_code_async(CLIENT, &request(&code, REDIRECT, None), now(), 120).await })
                        })
                        .collect();
                    let mut out = Vec::new();
                    for t in tasks {
                        out.push(t.await.unwrap());
                    }
                    out
                })
            } else {
                std::thread::scope(|s| {
                    let hs: Vec<_> = (0..8)
                        .map(|_| {
                            let (c, code) = (c.clone(), code.clone());
                            s.spawn(move || redeem(&*c, CLIENT, &code, REDIRECT, now()))
                        })
                        .collect();
                    hs.into_iter().map(|h| h.join().unwrap()).collect()
                })
            };
            let winners: Vec<&Exchanged> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(winners.len(), 1, "{k} (async: {asynchronous}): {results:?}");
            assert_eq!(results.iter().filter(|r| **r == Err(GrantError::Replayed)).count(), 7, "{k}: the others are replays");
            assert_eq!(GrantStore::new(&*c).token(&winners[0].access_token, now()).unwrap(), None, "{k}: and revoked the one token");
        }
    }
}

#[test]
fn a_replay_revokes_the_token_and_leaves_other_codes_tokens_alone() {
    for (c, _) in caches() {
        let k = c.kind();
        let grants = GrantStore::new(&*c);
        let t = now().plus_seconds(1);
        let code = code_for(&*c, 60);
        let at = exchange(&*c, CLIENT, &code, REDIRECT, t).unwrap();
        let other = code_for(&*c, 60);
        let other_at = exchange(&*c, CLIENT, &other, REDIRECT, t).unwrap();
        assert!(grants.token(&at, t).unwrap().is_some(), "{k}");
        assert_eq!(redeem(&*c, CLIENT, &code, REDIRECT, t), Err(GrantError::Replayed), "{k}");
        assert_eq!(grants.token(&at, t).unwrap(), None, "{k}: revoked by the replay");
        assert_eq!(redeem(&*c, CLIENT, &code, REDIRECT, t), Err(GrantError::Replayed), "{k}: and again");
        assert!(grants.token(&other_at, t).unwrap().is_some(), "{k}: another code's token is not touched");
        // A code spent by a refused exchange is a replay too (it gave no token).
        let code = code_for(&*c, 60);
        assert!(redeem(&*c, CLIENT, &code, "https://ailleurs.test/cb", t).is_err(), "{k}");
        assert_eq!(redeem(&*c, CLIENT, &code, REDIRECT, t), Err(GrantError::Replayed), "{k}");
    }
}

#[test]
fn an_expired_code_or_another_redirect_is_refused_by_the_checklist_and_the_code_is_spent() {
    for (c, _) in caches() {
        let k = c.kind();
        let code = code_for(&*c, 30);
        assert_eq!(redeem(&*c, CLIENT, &code, REDIRECT, now().plus_seconds(30)), Err(GrantError::Refused(RedemptionRefusal::Expired)), "{k}: refused by the clock");
        assert_eq!(redeem(&*c, CLIENT, &code, REDIRECT, now()), Err(GrantError::Replayed), "{k}: and consumed");
        for wrong in [
            "https://core.fc.test/api/v2/oidc-callback/",
            "https://core.fc.test/api/v2/oidc-callback?x=1",
            "https://CORE.fc.test/api/v2/oidc-callback",
            "http://core.fc.test/api/v2/oidc-callback",
            "",
        ] {
            let code = code_for(&*c, 60);
            assert_eq!(redeem(&*c, CLIENT, &code, wrong, now()), Err(GrantError::Refused(RedemptionRefusal::OtherRedirect)), "{k}: {wrong:?}");
            assert_eq!(redeem(&*c, CLIENT, &code, REDIRECT, now()), Err(GrantError::Replayed), "{k}: {wrong:?}");
        }
        let code = code_for(&*c, 60);
        assert!(exchange(&*c, CLIENT, &code, REDIRECT, now().plus_seconds(29)).is_ok(), "{k}");
    }
}

#[test]
fn pkce_binds_the_code_to_its_verifier() {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"; // RFC 7636 appendix B
    for (c, _) in caches() {
        let k = c.kind();
        let issue = || GrantStore::new(&*c).issue_code(&Issued::new(Grant { code_challenge: Some(challenge.into()), ..grant() }, now(), 60)).unwrap();
        let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK";
        let malformed = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjX!";
        for bad in [None, Some(wrong), Some(malformed)] {
            let code = issue();
            let got = GrantStore::new(&*c).exchange_code(CLIENT, &request(&code, REDIRECT, bad), now(), 120);
            assert_eq!(got, Err(GrantError::Refused(RedemptionRefusal::Pkce)), "{k}: {bad:?}");
        }
        let code = issue();
        assert!(GrantStore::new(&*c).exchange_code(CLIENT, &request(&code, REDIRECT, Some(verifier)), now(), 120).is_ok(), "{k}");
        let code = issue();
        assert!(redeem_async(&*c, CLIENT, &code, REDIRECT, Some(verifier), now()).is_ok(), "{k}: async");
        // A verifier for a code issued without a challenge is refused.
        let code = code_for(&*c, 60);
        assert_eq!(
            GrantStore::new(&*c).exchange_code(CLIENT, &request(&code, REDIRECT, Some(verifier)), now(), 120),
            Err(GrantError::Refused(RedemptionRefusal::Pkce)),
            "{k}"
        );
    }
}

#[test]
fn another_client_is_refused_without_spending_the_code() {
    for (c, _) in caches() {
        let k = c.kind();
        let code = code_for(&*c, 60);
        for other in ["attacker", "franceconnect-cor", &format!("{CLIENT}x")] {
            assert_eq!(redeem(&*c, other, &code, REDIRECT, now()).map(|_| ()), Err(GrantError::Unknown), "{k}: {other}");
        }
        assert!(exchange(&*c, CLIENT, &code, REDIRECT, now().plus_seconds(1)).is_ok(), "{k}: the rightful client still redeems it");
    }
}

#[test]
fn a_code_disappears_from_the_cache_after_its_ttl_capped_at_sixty_seconds() {
    for (c, prefix) in caches() {
        let k = c.kind();
        let code = GrantStore::new(&*c).issue_code(&Issued::new(grant(), Timestamp::now(), 1)).unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(redeem(&*c, CLIENT, &code, REDIRECT, Timestamp::now()).map(|_| ()), Err(GrantError::Unknown), "{k}");
        if let Some(prefix) = &prefix {
            code_for(&*c, 3600);
            let ttls: Vec<i64> = redis_dump(prefix).into_iter().filter(|(key, _, _)| key.contains("oidc:code:")).map(|(_, _, ttl)| ttl).collect();
            assert_eq!(ttls.len(), 1, "{k}");
            assert!(ttls[0] > 0 && ttls[0] <= (MAX_CODE_TTL_SECONDS * 1000) as i64, "{k}: {ttls:?}");
        }
    }
}

#[test]
fn codes_and_tokens_are_stored_only_hashed() {
    for (inner, prefix) in caches() {
        let k = inner.kind();
        let spy = Spy { inner: inner.clone(), seen: Mutex::new(Vec::new()) };
        let code = code_for(&spy, 60);
        let live_code = code_for(&spy, 60);
        let at = exchange(&spy, CLIENT, &code, REDIRECT, now()).unwrap();
        for secret in [&code, &live_code, &at] {
            assert!(!spy.saw(secret), "{k}: a raw secret reached the cache");
        }
        assert!(spy.saw(&token_hash(&at)), "{k}: an access token keyed by its SHA-256");
        for code in [&code, &live_code] {
            assert!(spy.saw(&code_hash(CLIENT, code)), "{k}: a code keyed by the SHA-256 of its client and itself");
            assert!(!spy.saw(&token_hash(code)), "{k}");
        }
        if let Some(prefix) = prefix {
            let dump = redis_dump(&prefix);
            let keys: Vec<&str> = dump.iter().map(|(key, _, _)| key.as_str()).collect();
            assert!(keys.contains(&format!("{prefix}oidc:code:{}", code_hash(CLIENT, &live_code)).as_str()), "{keys:?}");
            assert!(keys.contains(&format!("{prefix}oidc:at:{}", token_hash(&at)).as_str()), "{keys:?}");
            assert!(keys.contains(&format!("{prefix}oidc:code-used:{}", code_hash(CLIENT, &code)).as_str()), "{keys:?}");
            for (key, value, ttl) in &dump {
                assert!(*ttl > 0, "{key}: every entry has a TTL");
                for secret in [&code, &live_code, &at] {
                    assert!(!contains(value, secret.as_bytes()), "{key} holds a raw secret");
                }
            }
        }
    }
}

#[test]
fn access_tokens_expire_and_can_be_revoked() {
    for (c, _) in caches() {
        let k = c.kind();
        let grants = GrantStore::new(&*c);
        let code = code_for(&*c, 60);
        let at = exchange(&*c, CLIENT, &code, REDIRECT, now()).unwrap();
        let found = grants.token(&at, now().plus_seconds(119)).unwrap().expect("live");
        assert_eq!(found.value, grant(), "{k}: the token carries the grant unchanged");
        assert_eq!(grants.token(&at, now().plus_seconds(120)).unwrap(), None, "{k}: expired by the clock");
        grants.revoke_token(&at).unwrap();
        assert_eq!(grants.token(&at, now()).unwrap(), None, "{k}: revoked");
        assert_eq!(grants.token("unknown-token", now()).unwrap(), None, "{k}");
    }
}

#[test]
fn flows_are_kept_until_they_end_once() {
    for (c, _) in caches() {
        let k = c.kind();
        let grants = GrantStore::new(&*c);
        let flow = Issued::new(vec!["une".to_owned(), "démarche".to_owned()], now(), 300);
        grants.put_flow("f1", &flow, now()).unwrap();
        assert_eq!(grants.flow::<Vec<String>>("f1").unwrap(), Some(flow.clone()), "{k}");
        assert!(grants.take_flow("f1").unwrap(), "{k}");
        assert!(!grants.take_flow("f1").unwrap(), "{k}: ended once");
        assert_eq!(grants.flow::<Vec<String>>("f1").unwrap(), None, "{k}");
    }
}

#[test]
fn refusals_are_invalid_grant_and_do_not_tell_which_check_failed() {
    let mut descriptions: Vec<String> = Vec::new();
    for e in [GrantError::Unknown, GrantError::Replayed] {
        assert_eq!(e.code(), ErrorCode::InvalidGrant);
        let o = OAuthError::from(e.clone());
        assert_eq!((o.code, o.http_status()), (ErrorCode::InvalidGrant, 400));
        assert_eq!(o.detail.as_deref(), Some(e.to_string().as_str()), "the reason goes to the log");
        descriptions.push(o.description);
    }
    for r in [RedemptionRefusal::Expired, RedemptionRefusal::OtherClient, RedemptionRefusal::OtherRedirect, RedemptionRefusal::Pkce] {
        let o = OAuthError::from(r);
        assert_eq!((o.code, o.http_status()), (ErrorCode::InvalidGrant, 400));
        descriptions.push(o.description);
    }
    descriptions.dedup();
    assert_eq!(descriptions.len(), 1, "one description for every refusal: {descriptions:?}");
    let cache = OAuthError::from(GrantError::Cache("down".into()));
    assert_eq!((cache.code, cache.http_status()), (ErrorCode::ServerError, 500));
}

#[test]
fn an_unreachable_cache_is_an_error_not_an_unknown_code() {
    let r = Redis::new("redis://127.0.0.1:1", "x:").unwrap();
    let grants = GrantStore::new(&r);
    assert!(grants.issue_code(&Issued::new(grant(), now(), 60)).is_err());
    assert!(matches!(redeem(&r, CLIENT, "whatever", REDIRECT, now()), Err(GrantError::Cache(_))));
    assert!(grants.token("whatever", now()).is_err());
    let started = std::time::Instant::now();
    assert!(matches!(redeem_async(&r, CLIENT, "whatever", REDIRECT, None, now()), Err(GrantError::Cache(_))), "the async path fails fast while the breaker is open");
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
    let fresh = Redis::new("redis://127.0.0.1:1", "x:").unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(redeem_async(&fresh, CLIENT, "whatever", REDIRECT, None, now()), Err(GrantError::Cache(_))), "the async path reports a refused connection");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(fresh.unreachable(), "and opens the breaker");
}
