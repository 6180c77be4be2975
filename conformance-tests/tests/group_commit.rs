//! Disclosures at `/userinfo` committed in groups, seen from outside: a real `broker`
//! process answers many concurrent requests and is killed (SIGKILL) while it commits
//! them. Whatever the instant, no identity was answered without its `autorisation_used`
//! entry and its token's single-use mark, the two are written together, and the journal
//! verifies. On the embedded default and on PostgreSQL with Redis.

use conformance_tests::fc::Core;
use conformance_tests::idp::{Backend, Idp};
use conformance_tests::on_both_backends;
use diesel::prelude::*;
use openidconnect::OAuth2TokenResponse;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Access tokens of `n` authorizations of one aidant for one usager. The requests leave
/// out `prompt=login`, so that one sign-in serves them all within the tokens' lifetime.
fn access_tokens(idp: &Idp, n: usize) -> Vec<String> {
    let org = idp.organisation("CCAS de Roubaix", None);
    let aidant = idp.aidant(org);
    let usager = idp.usager("Jeanne Marie", "Martin", "1952-03-14");
    idp.mandat(&aidant, &usager, "argent");
    let reg = idp.client("ES256", "json");
    let core = Core::discover(idp, &reg);
    let mut b = idp.browser();
    (0..n)
        .map(|_| {
            let mut req = core.auth_request(Some(&["argent"]));
            let kept: Vec<(String, String)> = req.url.query_pairs().filter(|(k, _)| k != "prompt").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            req.url.query_pairs_mut().clear().extend_pairs(kept);
            let cb = idp.run_flow(&mut b, &aidant, &req.url, &usager, None);
            let code = cb.get("code").unwrap_or_else(|| panic!("no code: {}", cb.url)).to_owned();
            let tokens = core.exchange(&code).unwrap_or_else(|e| panic!("{e:?}"));
            tokens.access_token().secret().clone()
        })
        .collect()
}

/// Hashes of the tokens marked used in the database.
fn used_token_hashes(idp: &Idp) -> Vec<String> {
    use broker_store::schema::oidc_token_uses;
    let db = broker_store::Db::open(&broker_store::DatabaseUrl::parse(idp.database_url()), 1).unwrap();
    db.read(|c| Ok(oidc_token_uses::table.select(oidc_token_uses::token_hash).load::<String>(c)?)).unwrap()
}

on_both_backends! {
    fn a_broker_killed_while_committing_leaves_no_identity_answered_without_its_entry(backend) {
        let mut idp = Idp::start(backend);
        let tokens = access_tokens(&idp, 60);
        let userinfo = format!("{}/userinfo", idp.brokers[0].base);
        let answered = Mutex::new(Vec::new());
        let sent = AtomicUsize::new(0);
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..12 {
                s.spawn(|| {
                    let agent = conformance_tests::agent();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(token) = tokens.get(i) else { return };
                        sent.fetch_add(1, Ordering::SeqCst);
                        let Ok(mut res) = agent.get(&userinfo).header("Authorization", &format!("Bearer {token}")).call() else { continue };
                        if res.status() == 200 {
                            let body: serde_json::Value = serde_json::from_str(&res.body_mut().read_to_string().unwrap()).unwrap();
                            assert_eq!(body["given_name"], "Jeanne Marie", "{body}");
                            answered.lock().unwrap().push(token.clone());
                        }
                    }
                });
            }
            // Killed once some identities are out and more requests are in flight.
            while answered.lock().unwrap().len() < 15 && sent.load(Ordering::SeqCst) < tokens.len() {
                std::thread::yield_now();
            }
            idp.brokers[0].stop();
        });
        let answered = answered.into_inner().unwrap();
        assert!(!answered.is_empty() && answered.len() < tokens.len(), "killed part-way: {} of {} answered", answered.len(), tokens.len());

        let used = used_token_hashes(&idp);
        for token in &answered {
            assert!(used.contains(&broker_store::oidc_state::token_hash(token)), "an identity answered without its token marked used");
        }
        // Every mark has its entry and every entry its mark: they are committed together.
        let entries = idp.journal_entries("autorisation_used");
        assert_eq!(entries.len(), used.len(), "{} entries for {} tokens marked used", entries.len(), used.len());
        assert!(entries.len() >= answered.len());
        let verified = idp.cli_ok(&["journal", "verify"]);
        assert_eq!(verified["ok"], true, "{verified}");
    }
}
