//! `/jwks` through the real actix application: public members only, caching headers,
//! revalidation, and a rotation seen from the JWKS as time passes.

mod common;

use actix_web::http::{header, StatusCode};
use actix_web::test::{self, TestRequest};
use actix_web::web;
use broker_core::signing::store::KeyStore;
use broker_core::signing::{Alg, KeySet, RETIRED_KEY_GRACE_SECONDS};
use broker_core::time::Clock;
use broker_testkit::TestDb;
use common::world;
use serde_json::Value;
use std::sync::Arc;

fn kids(body: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

#[actix_web::test]
async fn jwks_is_cacheable_revalidates_and_follows_a_rotation() {
    let w = world(TestDb::sqlite());
    let now = w.clock.now();
    let mut set = KeySet::first(Alg::Es256, now).unwrap();
    let old = set.keys()[0].kid().to_owned();
    let new = set.rotate(Alg::Es256, now, 600).unwrap().kid().to_owned();
    let mut state = broker_web::AppState::clone(&w.state);
    state.signing = Arc::new(KeyStore::fixed(set));
    let app = test::init_service(broker_web::app(web::Data::new(state), "/nonexistent".into(), &[7u8; 64])).await;

    let res = test::call_service(&app, TestRequest::get().uri("/jwks").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    assert_eq!(h.get(header::CONTENT_TYPE).unwrap(), "application/json");
    assert_eq!(h.get(header::CACHE_CONTROL).unwrap(), "public, max-age=300");
    let etag = h.get(header::ETAG).unwrap().to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "strong ETag: {etag}");
    let body = test::read_body(res).await;
    assert_eq!(kids(&body), vec![new.clone(), old.clone()], "the rotated key is published before it signs");
    let text = String::from_utf8(body.to_vec()).unwrap();
    for private in ["\"d\"", "\"p\"", "\"q\"", "\"dp\"", "\"dq\"", "\"qi\""] {
        assert!(!text.contains(private), "{private} in {text}");
    }

    for tag in [etag.clone(), format!("W/{etag}"), format!("\"autre\", {etag}"), "*".to_owned()] {
        let res = test::call_service(&app, TestRequest::get().uri("/jwks").insert_header((header::IF_NONE_MATCH, tag.clone())).to_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{tag}");
        assert_eq!(res.headers().get(header::ETAG).unwrap().to_str().unwrap(), etag);
        assert!(test::read_body(res).await.is_empty());
    }
    let res = test::call_service(&app, TestRequest::get().uri("/jwks").insert_header((header::IF_NONE_MATCH, "\"autre\"")).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = test::call_service(&app, TestRequest::default().method(actix_web::http::Method::HEAD).uri("/jwks").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().get(header::ETAG).unwrap().to_str().unwrap(), etag);

    // Once the new key has signed for the grace period, the old one leaves the JWKS.
    w.clock.advance_seconds(600 + RETIRED_KEY_GRACE_SECONDS - 1);
    let res = test::call_service(&app, TestRequest::get().uri("/jwks").insert_header((header::IF_NONE_MATCH, etag.clone())).to_request()).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "one second before the end of the grace period");
    w.clock.advance_seconds(1);
    let res = test::call_service(&app, TestRequest::get().uri("/jwks").insert_header((header::IF_NONE_MATCH, etag.clone())).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_ne!(res.headers().get(header::ETAG).unwrap().to_str().unwrap(), etag);
    assert_eq!(kids(&test::read_body(res).await), vec![new]);
}
