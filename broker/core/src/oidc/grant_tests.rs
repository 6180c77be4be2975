use super::*;
use crate::capability::{AidantFacts, AidantId, InOrganisation, OrganisationFacts, OrganisationId};
use crate::mandat_facts::{AutorisationFacts, MandatFacts};
use crate::Demarche;

const CB: &str = "https://fc.exemple/api/v2/oidc-callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn t(s: i64) -> Timestamp {
    Timestamp::from_micros(1_800_000_000_000_000 + s * 1_000_000)
}

fn grant(challenge: Option<&str>) -> Grant {
    let by = InOrganisation::check(
        &AidantFacts { id: AidantId(1), active: true, current_organisation: Some(OrganisationId(2)) },
        &OrganisationFacts { id: OrganisationId(2), allowed_demarches: Demarche::ALL.to_vec() },
    )
    .unwrap();
    let mandat = MandatFacts {
        id: 3,
        organisation_id: 2,
        usager_id: 4,
        created_at: t(0),
        expires_at: t(86_400),
        autorisations: vec![AutorisationFacts { id: 5, demarche: Demarche::Argent, revoked_at: None }],
    };
    Grant {
        client_id: "fc".into(),
        redirect_uri: CB.into(),
        nonce: "n".into(),
        code_challenge: challenge.map(str::to_owned),
        scopes: vec![Scope::OpenId, Scope::Profile],
        acting: ActingFor::check(&by, &mandat, Demarche::Argent, t(1)).unwrap(),
        usager_sub: "u".into(),
        rep_scope: Some("Argent-Impots-Consommation".into()),
        auth_time: t(0),
        amr: vec!["otp".into(), "mfa".into()],
    }
}

fn request<'a>(redirect_uri: &'a str, code_verifier: Option<&'a str>) -> TokenRequest<'a> {
    TokenRequest { code: "c", redirect_uri, code_verifier }
}

#[test]
fn the_token_checklist_refuses_each_fault() {
    let code = Issued::new(grant(None), t(10), 60);
    assert_eq!(check_redemption(&code, "fc", &request(CB, None), t(69)), Ok(()));
    assert_eq!(check_redemption(&code, "fc", &request(CB, None), t(70)), Err(RedemptionRefusal::Expired), "expired at the instant");
    assert_eq!(check_redemption(&code, "autre", &request(CB, None), t(11)), Err(RedemptionRefusal::OtherClient));
    assert_eq!(check_redemption(&code, "fc", &request("https://fc.exemple/api/v2/oidc-callback/", None), t(11)), Err(RedemptionRefusal::OtherRedirect));
    assert_eq!(check_redemption(&code, "fc", &request(CB, Some(VERIFIER)), t(11)), Err(RedemptionRefusal::Pkce), "a verifier without a challenge");
    let pkce = Issued::new(grant(Some(CHALLENGE)), t(10), 60);
    assert_eq!(check_redemption(&pkce, "fc", &request(CB, Some(VERIFIER)), t(11)), Ok(()));
    assert_eq!(check_redemption(&pkce, "fc", &request(CB, None), t(11)), Err(RedemptionRefusal::Pkce));
    let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj";
    assert_eq!(check_redemption(&pkce, "fc", &request(CB, Some(wrong)), t(11)), Err(RedemptionRefusal::Pkce));
    let e = OAuthError::from(RedemptionRefusal::Pkce);
    assert_eq!((e.code, e.http_status()), (ErrorCode::InvalidGrant, 400));
}

#[test]
fn token_requests_need_the_grant_type_the_code_and_the_redirect_uri_once() {
    let p = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>();
    let ok = p(&[("grant_type", "authorization_code"), ("code", "c"), ("redirect_uri", CB)]);
    assert_eq!(TokenRequest::parse(&ok).unwrap(), request(CB, None).clone_with_code("c"));
    for (bad, code) in [
        (p(&[("grant_type", "client_credentials"), ("code", "c"), ("redirect_uri", CB)]), ErrorCode::UnsupportedGrantType),
        (p(&[("code", "c"), ("redirect_uri", CB)]), ErrorCode::InvalidRequest),
        (p(&[("grant_type", "authorization_code"), ("redirect_uri", CB)]), ErrorCode::InvalidRequest),
        (p(&[("grant_type", "authorization_code"), ("code", "c")]), ErrorCode::InvalidRequest),
        (p(&[("grant_type", "authorization_code"), ("code", "c"), ("code", "d"), ("redirect_uri", CB)]), ErrorCode::InvalidRequest),
    ] {
        assert_eq!(TokenRequest::parse(&bad).unwrap_err().code, code, "{bad:?}");
    }
}

#[test]
fn a_grant_serialises_with_keys_and_issued_values_know_their_lifetime() {
    let g = grant(None);
    let json = serde_json::to_value(&g).unwrap();
    assert_eq!(json["scopes"], serde_json::json!(["openid", "profile"]));
    assert_eq!(json["acting"]["demarche"], "argent");
    assert_eq!(serde_json::from_value::<Grant>(json).unwrap(), g);
    let i = Issued::new(1, t(0), 60);
    assert!(i.live_at(t(59)) && !i.live_at(t(60)));
    assert_eq!(i.seconds_left(t(30)), 30);
    assert_eq!(i.seconds_left(t(90)), 1);
}

impl<'a> TokenRequest<'a> {
    fn clone_with_code(&self, code: &'a str) -> Self {
        TokenRequest { code, ..self.clone() }
    }
}
