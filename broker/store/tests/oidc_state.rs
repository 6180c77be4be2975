//! The IdP's short-lived grants, against both caches: the in-process one and a real Redis
//! (each test with its own key prefix).

use broker_core::oidc::error::{ErrorCode, OAuthError};
use broker_core::Timestamp;
use broker_store::cache::{Cache, CacheError, InProcess, Redis};
use broker_store::oidc_state::{
    confirm_not_replayed, redeem_code_for_token, store_access_token,
    find_access_token, issue_access_token, issue_code, record_issued, redeem_code,
    revoke_access_token, revoke_tokens_of_code, token_hash, code_hash, AccessGrant, CodeGrant, GrantError,
    MAX_ACCESS_TOKEN_TTL_SECONDS, MAX_CODE_TTL_SECONDS,
};
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

fn grant() -> CodeGrant {
    CodeGrant {
        client_id: CLIENT.into(),
        redirect_uri: REDIRECT.into(),
        nonce: "n-0S6_WzA2Mj".into(),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        scopes: vec!["openid".into(), "profile".into()],
        aidant_id: 7,
        organisation_id: 3,
        usager_id: 42,
        usager_sub: "b5c8d1e0f2a3".into(),
        demarche: "argent".into(),
        autorisation_id: 99,
        mandat_id: 12,
        rep_scope: Some("argent".into()),
        auth_time: now().plus_seconds(-30).micros(),
        amr: vec!["pwd".into(), "otp".into()],
        issued_at: 0,
        expires_at: 0,
    }
}

fn access_grant(g: &CodeGrant) -> AccessGrant {
    AccessGrant {
        client_id: g.client_id.clone(),
        usager_id: g.usager_id,
        usager_sub: g.usager_sub.clone(),
        aidant_id: g.aidant_id,
        organisation_id: g.organisation_id,
        demarche: g.demarche.clone(),
        autorisation_id: g.autorisation_id,
        mandat_id: g.mandat_id,
        scopes: g.scopes.clone(),
        expires_at: 0,
    }
}

#[test]
fn a_code_is_redeemed_once_with_its_grant() {
    for (c, _) in caches() {
        let k = c.kind();
        let code = issue_code(&*c, grant(), now(), 30).unwrap();
        assert_eq!(code.len(), 43, "{k}: 32 bytes, base64url without padding");
        assert!(
            code.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{k}"
        );
        assert_ne!(
            code,
            issue_code(&*c, grant(), now(), 30).unwrap(),
            "{k}: random"
        );

        let got = redeem_code(&*c, &code, CLIENT, REDIRECT, now().plus_seconds(5)).unwrap();
        let want = CodeGrant {
            issued_at: now().micros(),
            expires_at: now().plus_seconds(30).micros(),
            ..grant()
        };
        assert_eq!(got, want, "{k}");

        let again = redeem_code(&*c, &code, CLIENT, REDIRECT, now().plus_seconds(6));
        assert_eq!(again, Err(GrantError::Replayed), "{k}");
        assert_eq!(
            redeem_code(&*c, &code, CLIENT, REDIRECT, now()),
            Err(GrantError::Replayed),
            "{k}"
        );
        assert_eq!(
            redeem_code(&*c, "never-issued-code", CLIENT, REDIRECT, now()),
            Err(GrantError::Unknown),
            "{k}"
        );
    }
}

#[test]
fn of_eight_concurrent_redemptions_exactly_one_wins() {
    for (c, _) in caches() {
        let k = c.kind();
        for _round in 0..5 {
            let code = issue_code(&*c, grant(), now(), 60).unwrap();
            let results: Vec<Result<CodeGrant, GrantError>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|_| {
                        let (c, code) = (c.clone(), code.clone());
                        s.spawn(move || {
                            redeem_code(&*c, &code, CLIENT, REDIRECT, now().plus_seconds(1))
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(
                results.iter().filter(|r| r.is_ok()).count(),
                1,
                "{k}: {results:?}"
            );
            for r in results.iter().filter(|r| r.is_err()) {
                assert!(
                    matches!(r, Err(GrantError::Replayed | GrantError::Unknown)),
                    "{k}: losers are refused as replays (or unknown while the winner writes the tombstone): {r:?}"
                );
            }
        }
    }
}

#[test]
fn a_replay_revokes_the_access_tokens_issued_from_the_code() {
    for (c, _) in caches() {
        let k = c.kind();
        let code = issue_code(&*c, grant(), now(), 60).unwrap();
        let g = redeem_code(&*c, &code, CLIENT, REDIRECT, now().plus_seconds(2)).unwrap();
        let at = issue_access_token(&*c, access_grant(&g), now().plus_seconds(2), 60).unwrap();
        record_issued(&*c, CLIENT, &code, &token_hash(&at)).unwrap();
        assert!(
            find_access_token(&*c, &at, now().plus_seconds(3))
                .unwrap()
                .is_some(),
            "{k}"
        );

        // A token issued from another code is not touched.
        let other_code = issue_code(&*c, grant(), now(), 60).unwrap();
        let og = redeem_code(&*c, &other_code, CLIENT, REDIRECT, now().plus_seconds(2)).unwrap();
        let other_at =
            issue_access_token(&*c, access_grant(&og), now().plus_seconds(2), 60).unwrap();
        record_issued(&*c, CLIENT, &other_code, &token_hash(&other_at)).unwrap();

        assert_eq!(
            redeem_code(&*c, &code, CLIENT, REDIRECT, now().plus_seconds(4)),
            Err(GrantError::Replayed),
            "{k}"
        );
        assert_eq!(
            find_access_token(&*c, &at, now().plus_seconds(5)).unwrap(),
            None,
            "{k}: revoked by the replay"
        );
        assert!(
            find_access_token(&*c, &other_at, now().plus_seconds(5))
                .unwrap()
                .is_some(),
            "{k}"
        );

        // Explicit revocation is idempotent.
        assert_eq!(revoke_tokens_of_code(&*c, CLIENT, &other_code).unwrap(), 1, "{k}");
        assert_eq!(
            find_access_token(&*c, &other_at, now().plus_seconds(5)).unwrap(),
            None,
            "{k}"
        );
        assert_eq!(
            revoke_tokens_of_code(&*c, CLIENT, "never-issued").unwrap(),
            0,
            "{k}"
        );
    }
}

#[test]
fn a_replay_seen_before_the_token_is_recorded_still_revokes_it() {
    for (c, _) in caches() {
        let k = c.kind();
        let code = issue_code(&*c, grant(), now(), 60).unwrap();
        let g = redeem_code(&*c, &code, CLIENT, REDIRECT, now().plus_seconds(1)).unwrap();
        // The attacker's replay lands while the legitimate request is still minting.
        assert_eq!(
            redeem_code(&*c, &code, CLIENT, REDIRECT, now().plus_seconds(1)),
            Err(GrantError::Replayed),
            "{k}"
        );
        let at = issue_access_token(&*c, access_grant(&g), now().plus_seconds(1), 60).unwrap();
        assert_eq!(
            record_issued(&*c, CLIENT, &code, &token_hash(&at)),
            Err(GrantError::Replayed),
            "{k}"
        );
        assert_eq!(
            find_access_token(&*c, &at, now().plus_seconds(2)).unwrap(),
            None,
            "{k}"
        );
    }
}

#[test]
fn an_expired_code_is_refused_by_the_clock_and_consumed() {
    for (c, _) in caches() {
        let k = c.kind();
        let code = issue_code(&*c, grant(), now(), 30).unwrap();
        assert_eq!(
            redeem_code(&*c, &code, CLIENT, REDIRECT, now().plus_seconds(31)),
            Err(GrantError::Expired),
            "{k}: the cache entry still lives, the clock says no"
        );
        assert_eq!(
            redeem_code(&*c, &code, CLIENT, REDIRECT, now()),
            Err(GrantError::Replayed),
            "{k}"
        );

        let at_limit = issue_code(&*c, grant(), now(), 30).unwrap();
        assert_eq!(
            redeem_code(&*c, &at_limit, CLIENT, REDIRECT, now().plus_seconds(30)),
            Err(GrantError::Expired),
            "{k}: valid strictly before expires_at"
        );
        let in_time = issue_code(&*c, grant(), now(), 30).unwrap();
        let ok = redeem_code(
            &*c,
            &in_time,
            CLIENT,
            REDIRECT,
            Timestamp::from_micros(now().plus_seconds(30).micros() - 1),
        );
        assert!(ok.is_ok(), "{k}");
    }
}

#[test]
fn a_code_disappears_from_the_cache_after_its_ttl() {
    for (c, _) in caches() {
        let code = issue_code(&*c, grant(), Timestamp::now(), 1).unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(
            redeem_code(&*c, &code, CLIENT, REDIRECT, Timestamp::now()),
            Err(GrantError::Unknown),
            "{}",
            c.kind()
        );
    }
}

#[test]
fn another_client_is_refused_without_spending_the_code_and_a_redirect_mismatch_burns_it() {
    for (c, _) in caches() {
        let k = c.kind();
        let code = issue_code(&*c, grant(), now(), 60).unwrap();
        for other in ["attacker", "franceconnect-cor", &format!("{CLIENT}x")] {
            assert_eq!(
                redeem_code(&*c, &code, other, REDIRECT, now()),
                Err(GrantError::Unknown),
                "{k}: another registered client presenting the code gets invalid_grant"
            );
        }
        let got = redeem_code(&*c, &code, CLIENT, REDIRECT, now().plus_seconds(1));
        assert_eq!(got.map(|g| g.client_id), Ok(CLIENT.to_owned()), "{k}: the rightful client still redeems it");
        assert_eq!(redeem_code(&*c, &code, CLIENT, REDIRECT, now().plus_seconds(2)), Err(GrantError::Replayed), "{k}");

        for wrong in [
            "https://core.fc.test/api/v2/oidc-callback/",
            "https://core.fc.test/api/v2/oidc-callback?x=1",
            "https://CORE.fc.test/api/v2/oidc-callback",
            "http://core.fc.test/api/v2/oidc-callback",
            "https://core.fc.test/api/v2/oidc-callbac",
            "",
        ] {
            let code = issue_code(&*c, grant(), now(), 60).unwrap();
            assert_eq!(
                redeem_code(&*c, &code, CLIENT, wrong, now()),
                Err(GrantError::RedirectMismatch),
                "{k}: {wrong:?}"
            );
            assert_eq!(
                redeem_code(&*c, &code, CLIENT, REDIRECT, now()),
                Err(GrantError::Replayed),
                "{k}: {wrong:?}"
            );
        }
    }
}

#[test]
fn the_code_lifetime_is_capped_at_sixty_seconds() {
    for (c, prefix) in caches() {
        let k = c.kind();
        let code = issue_code(&*c, grant(), now(), 3600).unwrap();
        if let Some(prefix) = &prefix {
            let ttls: Vec<i64> = redis_dump(prefix)
                .into_iter()
                .filter(|(key, _, _)| key.contains("oidc:code:"))
                .map(|(_, _, ttl)| ttl)
                .collect();
            assert_eq!(ttls.len(), 1, "{k}");
            assert!(
                ttls[0] > 0 && ttls[0] <= 60_000,
                "{k}: cache TTL {} ms",
                ttls[0]
            );
        }
        assert_eq!(
            redeem_code(
                &*c,
                &code,
                CLIENT,
                REDIRECT,
                now().plus_seconds(MAX_CODE_TTL_SECONDS as i64)
            ),
            Err(GrantError::Expired),
            "{k}: clamped to 60 s"
        );
        let code = issue_code(&*c, grant(), now(), 3600).unwrap();
        let g = redeem_code(&*c, &code, CLIENT, REDIRECT, now().plus_seconds(59)).unwrap();
        assert_eq!(g.expires_at - g.issued_at, 60_000_000, "{k}");

        let zero = issue_code(&*c, grant(), now(), 0).unwrap();
        let g = redeem_code(&*c, &zero, CLIENT, REDIRECT, now()).unwrap();
        assert_eq!(
            g.expires_at - g.issued_at,
            1_000_000,
            "{k}: at least one second"
        );
    }
}

#[test]
fn codes_and_tokens_are_stored_only_hashed() {
    for (inner, prefix) in caches() {
        let spy = Spy {
            inner,
            seen: Mutex::new(Vec::new()),
        };
        let k = spy.kind();
        let code = issue_code(&spy, grant(), now(), 60).unwrap();
        let live_code = issue_code(&spy, grant(), now(), 60).unwrap();
        let g = redeem_code(&spy, &code, CLIENT, REDIRECT, now()).unwrap();
        let at = issue_access_token(&spy, access_grant(&g), now(), 60).unwrap();
        record_issued(&spy, CLIENT, &code, &token_hash(&at)).unwrap();
        assert!(find_access_token(&spy, &at, now()).unwrap().is_some());

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
            assert!(
                keys.contains(&format!("{prefix}oidc:code:{}", code_hash(CLIENT, &live_code)).as_str()),
                "{keys:?}"
            );
            assert!(
                keys.contains(&format!("{prefix}oidc:at:{}", token_hash(&at)).as_str()),
                "{keys:?}"
            );
            assert!(
                keys.contains(&format!("{prefix}oidc:code-used:{}", code_hash(CLIENT, &code)).as_str()),
                "{keys:?}"
            );
            for (key, value, ttl) in &dump {
                assert!(*ttl > 0, "{key}: every entry has a TTL");
                for secret in [&code, &live_code, &at] {
                    assert!(!key.contains(secret.as_str()), "{key}");
                    assert!(
                        !contains(value, secret.as_bytes()),
                        "{key}: value holds a raw secret"
                    );
                }
            }
        }
    }
}

#[test]
fn access_tokens_expire_and_can_be_revoked() {
    for (c, _) in caches() {
        let k = c.kind();
        let ag = access_grant(&grant());
        let at = issue_access_token(&*c, ag.clone(), now(), 60).unwrap();
        assert_eq!(at.len(), 43, "{k}");
        let found = find_access_token(&*c, &at, now().plus_seconds(59)).unwrap();
        assert_eq!(
            found,
            Some(AccessGrant {
                expires_at: now().plus_seconds(60).micros(),
                ..ag.clone()
            }),
            "{k}"
        );
        assert_eq!(
            find_access_token(&*c, &at, now().plus_seconds(60)).unwrap(),
            None,
            "{k}: expired by the clock"
        );
        assert_eq!(
            find_access_token(&*c, &at, now().plus_seconds(3600)).unwrap(),
            None,
            "{k}"
        );
        assert_eq!(
            find_access_token(&*c, "not-a-token", now()).unwrap(),
            None,
            "{k}"
        );

        let long = issue_access_token(&*c, ag.clone(), now(), 86_400).unwrap();
        let g = find_access_token(&*c, &long, now()).unwrap().unwrap();
        assert_eq!(
            g.expires_at,
            now()
                .plus_seconds(MAX_ACCESS_TOKEN_TTL_SECONDS as i64)
                .micros(),
            "{k}: clamped"
        );

        revoke_access_token(&*c, &at).unwrap();
        assert_eq!(
            find_access_token(&*c, &at, now()).unwrap(),
            None,
            "{k}: revoked"
        );

        let short = issue_access_token(&*c, ag.clone(), Timestamp::now(), 1).unwrap();
        assert!(
            find_access_token(&*c, &short, Timestamp::now())
                .unwrap()
                .is_some(),
            "{k}"
        );
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(
            find_access_token(&*c, &short, now()).unwrap(),
            None,
            "{k}: gone from the cache after its TTL"
        );
    }
}

#[test]
fn grant_errors_are_invalid_grant_and_do_not_tell_which_check_failed() {
    let refusals = [
        GrantError::Unknown,
        GrantError::Expired,
        GrantError::Replayed,
        GrantError::ClientMismatch,
        GrantError::RedirectMismatch,
    ];
    let descriptions: Vec<String> = refusals
        .iter()
        .map(|e| {
            assert_eq!(e.code(), ErrorCode::InvalidGrant);
            let o = OAuthError::from(e.clone());
            assert_eq!(o.code, ErrorCode::InvalidGrant);
            assert_eq!(o.http_status(), 400);
            assert_eq!(
                o.detail.as_deref(),
                Some(e.to_string().as_str()),
                "the reason goes to the log"
            );
            o.description
        })
        .collect();
    assert!(descriptions.windows(2).all(|w| w[0] == w[1]));
    let o = OAuthError::from(GrantError::Cache("connexion refusée".into()));
    assert_eq!(o.code, ErrorCode::ServerError);
    assert!(!o.description.contains("connexion"));
}

#[test]
fn an_unreachable_cache_is_an_error_not_an_unknown_code() {
    let r = Redis::new("redis://127.0.0.1:1", "x:").unwrap();
    assert!(issue_code(&r, grant(), now(), 60).is_err());
    assert!(matches!(
        redeem_code(&r, "whatever", CLIENT, REDIRECT, now()),
        Err(GrantError::Cache(_))
    ));
    assert!(find_access_token(&r, "whatever", now()).is_err());
}

#[test]
fn the_token_endpoint_path_revokes_its_token_on_a_replay_before_or_after_storing_it() {
    for (c, _) in caches() {
        let k = c.kind();
        let t = now().plus_seconds(1);
        // Replay after the token is stored: the replay revokes it.
        let code = issue_code(&*c, grant(), now(), 60).unwrap();
        let (g, at) = redeem_code_for_token(&*c, &code, CLIENT, REDIRECT, t).unwrap();
        store_access_token(&*c, &at, access_grant(&g), t, 60).unwrap();
        assert_eq!(confirm_not_replayed(&*c, CLIENT, &code), Ok(()), "{k}");
        assert!(find_access_token(&*c, &at, t).unwrap().is_some(), "{k}");
        assert_eq!(redeem_code(&*c, &code, CLIENT, REDIRECT, t), Err(GrantError::Replayed), "{k}");
        assert_eq!(find_access_token(&*c, &at, t).unwrap(), None, "{k}: revoked by the replay");

        // Replay between the redemption and the storing: the redeemer sees it and revokes.
        let code = issue_code(&*c, grant(), now(), 60).unwrap();
        let (g, at) = redeem_code_for_token(&*c, &code, CLIENT, REDIRECT, t).unwrap();
        assert_eq!(redeem_code(&*c, &code, CLIENT, REDIRECT, t), Err(GrantError::Replayed), "{k}");
        store_access_token(&*c, &at, access_grant(&g), t, 60).unwrap();
        assert_eq!(confirm_not_replayed(&*c, CLIENT, &code), Err(GrantError::Replayed), "{k}");
        assert_eq!(find_access_token(&*c, &at, t).unwrap(), None, "{k}");
    }
}
