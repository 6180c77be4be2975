use super::*;
use crate::mandat_facts::AutorisationFacts;

fn t(s: i64) -> Timestamp {
    Timestamp::from_micros(1_800_000_000_000_000 + s * 1_000_000)
}

fn org(id: i64, allowed: &[Demarche]) -> OrganisationFacts {
    OrganisationFacts { id: OrganisationId(id), allowed_demarches: allowed.to_vec() }
}

fn aidant(current: Option<i64>) -> AidantFacts {
    AidantFacts { id: AidantId(7), active: true, current_organisation: current.map(OrganisationId) }
}

fn mandat(org: i64) -> MandatFacts {
    MandatFacts {
        id: 40,
        organisation_id: org,
        usager_id: 9,
        created_at: t(0),
        expires_at: t(86_400),
        autorisations: vec![
            AutorisationFacts { id: 41, demarche: Demarche::Argent, revoked_at: None },
            AutorisationFacts { id: 42, demarche: Demarche::Social, revoked_at: Some(t(100)) },
        ],
    }
}

#[test]
fn in_organisation_needs_an_active_aidant_of_that_organisation() {
    let o = org(1, &Demarche::ALL);
    let ok = InOrganisation::check(&aidant(Some(1)), &o).unwrap();
    assert_eq!((ok.aidant(), ok.organisation()), (AidantId(7), OrganisationId(1)));
    assert_eq!(InOrganisation::check(&aidant(None), &o), Err(Refusal::NoOrganisation));
    assert_eq!(InOrganisation::check(&aidant(Some(2)), &o), Err(Refusal::OtherOrganisation));
    let inactive = AidantFacts { active: false, ..aidant(Some(1)) };
    assert_eq!(InOrganisation::check(&inactive, &o), Err(Refusal::AidantInactive));
}

#[test]
fn acting_for_checks_each_boundary() {
    let by = InOrganisation::check(&aidant(Some(1)), &org(1, &Demarche::ALL)).unwrap();
    let a = ActingFor::check(&by, &mandat(1), Demarche::Argent, t(10)).unwrap();
    assert_eq!(
        (a.aidant(), a.organisation(), a.usager(), a.mandat(), a.autorisation(), a.demarche(), a.checked_at()),
        (AidantId(7), OrganisationId(1), UsagerId(9), MandatId(40), AutorisationId(41), Demarche::Argent, t(10))
    );
    // The last instant before expiry, and the instant of expiry itself.
    assert!(ActingFor::check(&by, &mandat(1), Demarche::Argent, t(86_399)).is_ok());
    assert_eq!(ActingFor::check(&by, &mandat(1), Demarche::Argent, t(86_400)), Err(Refusal::Expired));
    // Another organisation's mandat.
    assert_eq!(ActingFor::check(&by, &mandat(2), Demarche::Argent, t(10)), Err(Refusal::OtherOrganisation));
    // A démarche revoked: active before its revocation instant, refused from it on.
    assert!(ActingFor::check(&by, &mandat(1), Demarche::Social, t(99)).is_ok());
    assert_eq!(ActingFor::check(&by, &mandat(1), Demarche::Social, t(100)), Err(Refusal::Revoked));
    // A démarche the mandat does not cover, or the organisation may not do.
    assert_eq!(ActingFor::check(&by, &mandat(1), Demarche::Justice, t(10)), Err(Refusal::NoAutorisation(Demarche::Justice)));
    let narrow = InOrganisation::check(&aidant(Some(1)), &org(1, &Demarche::ALL)).unwrap().narrowed(&[Demarche::Social, Demarche::Justice]);
    assert_eq!(narrow.allowed(), [Demarche::Social, Demarche::Justice]);
    assert_eq!(narrow.narrowed(&[Demarche::Social]).narrowed(&Demarche::ALL).allowed(), [Demarche::Social], "never widened");
    assert_eq!(ActingFor::check(&narrow, &mandat(1), Demarche::Argent, t(10)), Err(Refusal::DemarcheNotAllowed(Demarche::Argent)));
    // Checked again later against fresh facts.
    assert!(a.recheck(&by, &mandat(1), t(20)).is_ok());
    let mut revoked = mandat(1);
    revoked.autorisations[0].revoked_at = Some(t(15));
    assert_eq!(a.recheck(&by, &revoked, t(20)), Err(Refusal::Revoked));
}

#[test]
fn ids_serialise_as_numbers_and_the_capability_round_trips() {
    assert_eq!(serde_json::to_string(&UsagerId(9)).unwrap(), "9");
    let by = InOrganisation::check(&aidant(Some(1)), &org(1, &Demarche::ALL)).unwrap();
    let a = ActingFor::check(&by, &mandat(1), Demarche::Argent, t(10)).unwrap();
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["demarche"], "argent");
    assert_eq!(serde_json::from_value::<ActingFor>(json).unwrap(), a);
}
