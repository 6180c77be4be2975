use broker_store::cache::{Cache, InProcess, Redis};
use std::sync::Arc;
use std::time::Duration;

fn caches() -> Vec<Arc<dyn Cache>> {
    let prefix = format!("ac-test-{}:", hex::encode(rand::random::<[u8; 6]>()));
    let redis = Redis::new(&broker_testkit::redis_url(), &prefix).unwrap();
    redis.ping().expect("Redis is required for the tests");
    vec![Arc::new(InProcess::new()), Arc::new(redis)]
}

#[test]
fn take_is_single_use_even_under_concurrency() {
    for c in caches() {
        c.put("code", b"v", Duration::from_secs(30)).unwrap();
        assert_eq!(c.get("code").unwrap().as_deref(), Some(&b"v"[..]));
        let winners: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| { let c = c.clone(); s.spawn(move || c.take("code").unwrap().is_some() as usize) }).collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(winners, 1, "{}", c.kind());
        assert_eq!(c.take("code").unwrap(), None, "{}", c.kind());
    }
}

#[test]
fn values_expire_after_their_ttl() {
    for c in caches() {
        c.put("short", b"x", Duration::from_secs(1)).unwrap();
        assert!(c.get("short").unwrap().is_some());
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(c.get("short").unwrap(), None, "{}", c.kind());
        assert_eq!(c.take("short").unwrap(), None, "{}", c.kind());
    }
}

#[test]
fn counters_increment_and_reset_after_their_window() {
    for c in caches() {
        assert_eq!(c.incr("fails", Duration::from_secs(1)).unwrap(), 1);
        assert_eq!(c.incr("fails", Duration::from_secs(1)).unwrap(), 2);
        assert_eq!(c.incr("fails", Duration::from_secs(1)).unwrap(), 3, "{}", c.kind());
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(c.incr("fails", Duration::from_secs(1)).unwrap(), 1, "{}: window restarted", c.kind());
        c.delete("fails").unwrap();
    }
}

#[test]
fn an_unreachable_redis_is_reported_not_hidden() {
    let r = Redis::new("redis://127.0.0.1:1", "x:").unwrap();
    assert!(r.ping().is_err());
    assert!(r.put("k", b"v", Duration::from_secs(1)).is_err());
}

#[test]
fn replace_writes_over_a_live_value_only() {
    for c in caches() {
        assert!(!c.replace("session", b"state", Duration::from_secs(30)).unwrap(), "{}: nothing to replace", c.kind());
        assert_eq!(c.get("session").unwrap(), None, "{}: an absent key stays absent", c.kind());
        c.put("session", b"old", Duration::from_secs(30)).unwrap();
        assert!(c.replace("session", b"new", Duration::from_secs(30)).unwrap(), "{}", c.kind());
        assert_eq!(c.get("session").unwrap().as_deref(), Some(&b"new"[..]), "{}", c.kind());
        c.delete("session").unwrap();
        assert!(!c.replace("session", b"again", Duration::from_secs(30)).unwrap(), "{}: a deleted key is not revived", c.kind());
        assert_eq!(c.get("session").unwrap(), None, "{}", c.kind());
    }
}
