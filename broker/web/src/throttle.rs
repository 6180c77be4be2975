//! Bounds on guessing second-factor codes, that a stranger cannot turn against the aidant.
//!
//! Failures are counted in the cache over a 15-minute window ([`WINDOW_MINUTES`]):
//!
//! | counter | bound | what it stops |
//! |---|---|---|
//! | per address | [`PER_ADDRESS`] | one machine trying many e-mails |
//! | per e-mail and address | [`PER_EMAIL_AND_ADDRESS`] | one machine guessing one aidant's code |
//! | per e-mail, from browsers it never signed in with | [`PER_EMAIL`] | many machines guessing one aidant's code |
//! | per recognised browser | [`PER_RECOGNISED_BROWSER`] | guessing from a browser the aidant signed in with |
//! | per aidant re-authenticating | [`PER_REAUTHENTICATION`] | a signed-in session guessing codes |
//!
//! A browser where the aidant signed in successfully carries a *recognised-browser*
//! cookie (`ac_appareil_<aidant id>`, a random value and its HMAC under a key derived
//! from the key directory, 180 days). From such a browser only its own counter applies:
//! failures sent from elsewhere (other addresses, other browsers) never lock the aidant
//! out at their own computer. Re-authentication of a signed-in aidant (FranceConnect
//! sends `prompt=login` every time) has its own counter, which nobody without the
//! session can raise. Each bound reached is journaled (`signin_locked`, with its scope),
//! and the aidant is told by e-mail (once per window) when their e-mail is being tried
//! from elsewhere. The arithmetic: docs/authentication.md.

use broker_core::notice::Notice;
use broker_store::mail_queue::{self, NewMail};
use crate::AppState;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::HttpRequest;
use broker_core::journal::{Action, Entry};
use broker_core::secret::{constant_time_eq, hmac_sha256, random_bytes, sha256_hex};
use broker_store::{auth, journal, StoreError};
use std::time::Duration;

pub const WINDOW_MINUTES: u64 = 15;
pub const PER_ADDRESS: i64 = 30;
pub const PER_EMAIL_AND_ADDRESS: i64 = 5;
pub const PER_EMAIL: i64 = 20;
pub const PER_RECOGNISED_BROWSER: i64 = 5;
pub const PER_REAUTHENTICATION: i64 = 5;
/// How long a browser stays recognised after a successful sign-in.
pub const RECOGNISED_DAYS: i64 = 180;

const COOKIE_PREFIX: &str = "ac_appareil_";

fn window() -> Duration {
    Duration::from_secs(WINDOW_MINUTES * 60)
}

fn key_of(kind: &str, parts: &[&str]) -> String {
    format!("signin-fail:{kind}:{}", sha256_hex(parts.join("\0").as_bytes()))
}

fn normalised(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Who is trying a second factor, as the limits see them.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// Sign-in with an e-mail and a code. `browser`: the recognised-browser value, when
    /// this browser signed in before as the aidant who owns `email`.
    Code { email: String, ip: String, browser: Option<String> },
    /// A signed-in aidant proving a second factor again.
    Reauthentication { aidant_id: i64 },
    /// A security key (no e-mail typed): per address only.
    Key { ip: String },
}

impl Attempt {
    /// The counters this attempt raises, each with its bound and scope name.
    fn counters(&self) -> Vec<(String, i64, &'static str)> {
        match self {
            Attempt::Code { email, browser: Some(b), .. } => {
                vec![(key_of("browser", &[&normalised(email), b]), PER_RECOGNISED_BROWSER, "navigateur_reconnu")]
            }
            Attempt::Code { email, ip, browser: None } => {
                let e = normalised(email);
                vec![
                    (key_of("ip", &[ip]), PER_ADDRESS, "adresse"),
                    (key_of("email-ip", &[&e, ip]), PER_EMAIL_AND_ADDRESS, "email_et_adresse"),
                    (key_of("email", &[&e]), PER_EMAIL, "email"),
                ]
            }
            Attempt::Reauthentication { aidant_id } => {
                vec![(format!("reauth-fail:aidant:{aidant_id}"), PER_REAUTHENTICATION, "reauthentification")]
            }
            Attempt::Key { ip } => vec![(key_of("ip", &[ip]), PER_ADDRESS, "adresse")],
        }
    }
}

fn count(state: &AppState, key: &str) -> Result<i64, StoreError> {
    Ok(state.cache.get(key)?.and_then(|v| String::from_utf8(v).ok()).and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// True when one of the attempt's counters has reached its bound.
pub fn is_locked(state: &AppState, attempt: &Attempt) -> Result<bool, StoreError> {
    for (key, bound, _) in attempt.counters() {
        if count(state, &key)? >= bound {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Counts a failure. A counter reaching its bound is journaled (`signin_locked`, with the
/// aidant when the e-mail is theirs); when it is the e-mail's own bound, or the bound of
/// the e-mail from one address, the aidant is told by e-mail (once per window). Nothing of
/// this reaches the person trying.
pub fn record_failure(state: &AppState, attempt: &Attempt) -> Result<(), StoreError> {
    for (key, bound, scope) in attempt.counters() {
        let n = state.cache.incr(&key, window())?;
        if n != bound {
            continue;
        }
        let aidant = match attempt {
            Attempt::Code { email, .. } => state.db.read(|c| auth::find_active_aidant(c, email))?,
            Attempt::Reauthentication { aidant_id } => state.db.read(|c| auth::find_active_by_id(c, *aidant_id))?,
            Attempt::Key { .. } => None,
        };
        state.db.write(|c| {
            let mut e = Entry::new(Action::SigninLocked).detail("failures", n).detail("minutes", WINDOW_MINUTES).detail("scope", scope);
            if let Some(a) = &aidant {
                e = e.aidant(a.id).in_organisation(a.current_organisation_id);
            }
            journal::append(c, &[e])
        })?;
        if let (Some(a), "email" | "email_et_adresse") = (&aidant, scope) {
            tell_the_aidant(state, a)?;
        }
    }
    Ok(())
}

/// E-mails the aidant, at most once per window, that codes were tried with their e-mail
/// from elsewhere.
fn tell_the_aidant(state: &AppState, aidant: &broker_store::admin::Aidant) -> Result<(), StoreError> {
    let flag = format!("signin-notice:{}", sha256_hex(normalised(&aidant.email).as_bytes()));
    if state.cache.incr(&flag, window())? != 1 {
        return Ok(());
    }
    let text = format!(
        "Bonjour {},\n\nPlusieurs tentatives de connexion à Aidants Connect avec votre adresse e-mail viennent d'échouer, depuis un ordinateur ou un navigateur où vous ne vous êtes jamais connecté(e).\n\nSi c'était vous, rien à faire : attendez {} minutes, ou connectez-vous depuis votre poste habituel ou avec votre clé de sécurité.\n\nSi ce n'était pas vous, votre compte reste protégé : sans votre code et sans le lien envoyé à cette adresse, personne ne peut se connecter. Depuis le navigateur où vous vous connectez d'habitude, vous pouvez continuer à travailler normalement. Prévenez votre référent si ces messages se répètent.\n\nAidants Connect\n",
        aidant.first_name, WINDOW_MINUTES
    );
    let notice = Notice::Message { subject: "Tentatives de connexion à votre compte Aidants Connect".into(), text };
    let key = format!("tentatives:{}:{}", aidant.id, hex::encode(random_bytes::<16>()));
    let mail = NewMail { key, recipient: &aidant.email, notice: &notice, organisation: None, aidant: Some(aidant.id), usager: None };
    let now = state.clock.now();
    state.db.write(|c| mail_queue::enqueue(c, &mail, now))?;
    state.mail.wake();
    Ok(())
}

fn mac(state: &AppState, aidant_id: i64, nonce: &str) -> String {
    let key = hmac_sha256(&state.usager_salt, &[b"aidants-connect/recognised-browser/v1"]);
    hex::encode(hmac_sha256(&key, &[aidant_id.to_string().as_bytes(), b"\0", nonce.as_bytes()]))
}

/// The cookie that makes this browser recognised for `aidant_id`, set at a successful
/// sign-in.
pub fn recognised_browser_cookie(state: &AppState, aidant_id: i64) -> Cookie<'static> {
    let nonce = hex::encode(random_bytes::<16>());
    let value = format!("{nonce}.{}", mac(state, aidant_id, &nonce));
    Cookie::build(format!("{COOKIE_PREFIX}{aidant_id}"), value)
        .path("/")
        .http_only(true)
        .secure(!state.development)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::days(RECOGNISED_DAYS))
        .finish()
}

/// The recognised-browser cookies this browser carries: (aidant id, value).
pub fn browser_cookies(req: &HttpRequest) -> Vec<(i64, String)> {
    let Ok(cookies) = req.cookies() else { return Vec::new() };
    cookies
        .iter()
        .filter_map(|c| Some((c.name().strip_prefix(COOKIE_PREFIX)?.parse::<i64>().ok()?, c.value().to_owned())))
        .take(16)
        .collect()
}

/// The recognised-browser value for `aidant_id` among `cookies`, if its cookie is genuine.
pub fn recognised_browser(state: &AppState, cookies: &[(i64, String)], aidant_id: i64) -> Option<String> {
    let (_, value) = cookies.iter().find(|(id, _)| *id == aidant_id)?;
    let (nonce, tag) = value.split_once('.')?;
    if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    constant_time_eq(mac(state, aidant_id, nonce).as_bytes(), tag.as_bytes()).then(|| nonce.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recognised_browser_has_a_counter_of_its_own_and_strangers_three() {
        let own = Attempt::Code { email: "A@exemple.fr".into(), ip: "192.0.2.1".into(), browser: Some("n1".into()) };
        assert_eq!(own.counters().len(), 1);
        let stranger = Attempt::Code { email: " a@exemple.fr".into(), ip: "198.51.100.7".into(), browser: None };
        let keys: Vec<_> = stranger.counters().into_iter().map(|(k, b, s)| (k, b, s)).collect();
        assert_eq!(keys.iter().map(|(_, b, _)| *b).collect::<Vec<_>>(), [PER_ADDRESS, PER_EMAIL_AND_ADDRESS, PER_EMAIL]);
        assert!(!keys.iter().any(|(k, _, _)| *k == own.counters()[0].0), "no counter shared with the aidant's browser");
        let other_address = Attempt::Code { email: "a@exemple.fr".into(), ip: "203.0.113.9".into(), browser: None };
        let shared: Vec<_> = other_address.counters().into_iter().filter(|c| keys.contains(c)).map(|(_, _, s)| s).collect();
        assert_eq!(shared, ["email"], "two addresses share the e-mail's counter only (case and blanks ignored)");
        let reauth = Attempt::Reauthentication { aidant_id: 7 };
        assert_eq!(reauth.counters()[0].1, PER_REAUTHENTICATION);
    }
}
