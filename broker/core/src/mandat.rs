//! Mandat changes, decided before anything is written: a new mandat and the
//! autorisations it supersedes (`plan_new_mandat`), a revocation (`plan_revocation`).
//! The durations and the facts they are decided from live in `duree` and
//! `mandat_facts`, re-exported here.

use crate::capability::{AutorisationId, InOrganisation, MandatId, OrganisationId, UsagerId};
use crate::journal::{Actor, Event, Parties};
use crate::{Demarche, Timestamp};

pub use crate::duree::Duree;
pub use crate::mandat_facts::{AutorisationFacts, MandatFacts, Status, LIST_RETENTION_DAYS};


#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MandatError {
    #[error("choisissez au moins une démarche")]
    NoDemarche,
    #[error("la structure n'est pas autorisée à faire ces démarches : {}", Demarche::join(.0))]
    DemarchesNotAllowed(Vec<Demarche>),
    #[error("le mandat ne concerne pas cet usager et cette structure")]
    OtherParty,
}

/// What creating a mandat changes: the new mandat and the autorisations it revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MandatPlan {
    pub organisation_id: i64,
    pub usager_id: i64,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub duree: Duree,
    pub demarches: Vec<Demarche>,
    /// Autorisation ids superseded by the new mandat (same usager, organisation and démarche).
    pub superseded: Vec<i64>,
}

/// Decides a new mandat: the démarches must be allowed for the organisation, and the
/// active autorisations of the same démarches held by the same usager and organisation
/// are superseded; the others stay untouched.
pub fn plan_new_mandat(
    organisation_id: i64,
    allowed: &[Demarche],
    usager_id: i64,
    demarches: &[Demarche],
    duree: Duree,
    existing: &[MandatFacts],
    now: Timestamp,
) -> Result<MandatPlan, MandatError> {
    let mut demarches = demarches.to_vec();
    demarches.sort();
    demarches.dedup();
    if demarches.is_empty() {
        return Err(MandatError::NoDemarche);
    }
    let refused: Vec<Demarche> = demarches
        .iter()
        .copied()
        .filter(|d| !allowed.contains(d))
        .collect();
    if !refused.is_empty() {
        return Err(MandatError::DemarchesNotAllowed(refused));
    }
    let mut superseded = Vec::new();
    for m in existing {
        if m.organisation_id != organisation_id || m.usager_id != usager_id {
            return Err(MandatError::OtherParty);
        }
        for a in &m.autorisations {
            if demarches.contains(&a.demarche) && a.status(m.expires_at, now) == Status::Active {
                superseded.push(a.id);
            }
        }
    }
    Ok(MandatPlan {
        organisation_id,
        usager_id,
        created_at: now,
        expires_at: duree.expiry(now),
        duree,
        demarches,
        superseded,
    })
}

/// What a revocation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationTarget {
    /// One autorisation of the mandat.
    Autorisation(AutorisationId),
    /// Every autorisation of the mandat still active.
    Mandat,
}

/// Who revokes.
#[derive(Debug, Clone, Copy)]
pub enum Revoker<'a> {
    /// An aidant acting in the mandat's organisation.
    Aidant(&'a InOrganisation),
    /// The usager of the mandat, from their own space.
    Usager(UsagerId),
}

/// Why a revocation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("ce mandat a expiré : il n'y a plus rien à révoquer")]
    Expired,
    #[error("cette autorisation est déjà révoquée")]
    AutorisationAlreadyRevoked,
    #[error("ce mandat est déjà révoqué")]
    MandatAlreadyRevoked,
    #[error("autorisation inconnue : {0}")]
    UnknownAutorisation(AutorisationId),
    /// The mandat is another organisation's, or another usager's.
    #[error("mandat introuvable")]
    NotTheirs,
}

/// What revoking changes: the autorisations revoked at `at`, whether the mandat ends with
/// them, and the journal events to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationPlan {
    pub mandat: MandatId,
    pub parties: Parties,
    pub by: Actor,
    pub at: Timestamp,
    /// In autorisation order.
    pub revoked: Vec<(AutorisationId, Demarche)>,
    /// True when no autorisation of the mandat stays active.
    pub mandat_revoked: bool,
    pub events: Vec<Event>,
}

impl RevocationPlan {
    /// The démarches revoked, in canonical order.
    pub fn demarches(&self) -> Vec<Demarche> {
        let mut d: Vec<Demarche> = self.revoked.iter().map(|r| r.1).collect();
        d.sort();
        d
    }
}

/// Decides a revocation at `now`. An autorisation counts as already revoked once it has a
/// revocation instant; nothing is revoked in a mandat that has expired. The aidant must
/// act in the mandat's organisation, the usager must be the mandat's.
pub fn plan_revocation(mandat: &MandatFacts, target: RevocationTarget, who: Revoker<'_>, now: Timestamp) -> Result<RevocationPlan, RevocationError> {
    let by = match who {
        Revoker::Aidant(a) if a.organisation().get() == mandat.organisation_id => Actor::Aidant(a.aidant()),
        Revoker::Usager(u) if u.get() == mandat.usager_id => Actor::Usager,
        _ => return Err(RevocationError::NotTheirs),
    };
    if let RevocationTarget::Autorisation(id) = target {
        if !mandat.autorisations.iter().any(|a| a.id == id.get()) {
            return Err(RevocationError::UnknownAutorisation(id));
        }
    }
    if now >= mandat.expires_at {
        return Err(RevocationError::Expired);
    }
    let active: Vec<&AutorisationFacts> = mandat.autorisations.iter().filter(|a| a.revoked_at.is_none()).collect();
    let targets: Vec<&AutorisationFacts> = match target {
        RevocationTarget::Autorisation(id) => {
            let t: Vec<_> = active.iter().copied().filter(|a| a.id == id.get()).collect();
            if t.is_empty() {
                return Err(RevocationError::AutorisationAlreadyRevoked);
            }
            t
        }
        RevocationTarget::Mandat => active.clone(),
    };
    if targets.is_empty() {
        return Err(RevocationError::MandatAlreadyRevoked);
    }
    let parties = Parties { organisation: OrganisationId(mandat.organisation_id), usager: UsagerId(mandat.usager_id) };
    let id = MandatId(mandat.id);
    let revoked: Vec<(AutorisationId, Demarche)> = targets.iter().map(|a| (AutorisationId(a.id), a.demarche)).collect();
    let mut events: Vec<Event> = revoked
        .iter()
        .map(|&(autorisation, demarche)| Event::AutorisationRevoked { by, parties, mandat: id, autorisation, demarche })
        .collect();
    let mandat_revoked = targets.len() == active.len();
    if mandat_revoked {
        events.push(Event::MandatRevoked { by, parties, mandat: id, demarches: revoked.iter().map(|r| r.1).collect() });
    }
    Ok(RevocationPlan { mandat: id, parties, by, at: now, revoked, mandat_revoked, events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Demarche::*;

    const T0: Timestamp = Timestamp::from_micros(1_800_000_000_000_000);

    fn mandat(id: i64, created: Timestamp, duree: Duree, auts: &[(i64, Demarche)]) -> MandatFacts {
        MandatFacts {
            id,
            organisation_id: 1,
            usager_id: 7,
            created_at: created,
            expires_at: duree.expiry(created),
            autorisations: auts
                .iter()
                .map(|&(id, demarche)| AutorisationFacts { id, demarche, revoked_at: None })
                .collect(),
        }
    }

    #[test]
    fn durations_are_1_31_182_365_days() {
        assert_eq!(Duree::ALL.map(|d| d.days()), [1, 31, 182, 365]);
        assert_eq!(Duree::from_days(31), Some(Duree::UnMois));
        assert_eq!(Duree::from_days(30), None);
        assert_eq!(Duree::from_days(366), None);
        assert_eq!(Duree::UnAn.expiry(T0), T0.plus_days(365));
    }

    #[test]
    fn expiry_happens_at_the_exact_instant() {
        let m = mandat(1, T0, Duree::UnJour, &[(10, Social)]);
        let expiry = T0.plus_days(1);
        assert_eq!(m.status(Timestamp::from_micros(expiry.micros() - 1)), Status::Active);
        assert_eq!(m.status(expiry), Status::Expired);
        assert_eq!(m.active_demarches(expiry), vec![]);
        assert_eq!(m.active_demarches(Timestamp::from_micros(expiry.micros() - 1)), vec![Social]);
    }

    #[test]
    fn revoking_every_autorisation_revokes_the_mandat_one_keeps_it_active() {
        let mut m = mandat(1, T0, Duree::UnMois, &[(10, Social), (11, Argent)]);
        let t = T0.plus_days(2);
        m.autorisations[0].revoked_at = Some(t);
        assert_eq!(m.status(t), Status::Active);
        assert_eq!(m.active_demarches(t), vec![Argent]);
        m.autorisations[1].revoked_at = Some(t.plus_seconds(1));
        assert_eq!(m.status(t), Status::Active, "a future revocation has not happened yet");
        assert_eq!(m.status(t.plus_seconds(1)), Status::Revoked);
        assert_eq!(m.status(T0.plus_days(40)), Status::Revoked, "revoked before expiry stays revoked");
        assert_eq!(m.ended_at(T0.plus_days(40)), Some(t.plus_seconds(1)));
    }

    #[test]
    fn revocation_after_expiry_leaves_the_mandat_expired() {
        let mut m = mandat(1, T0, Duree::UnJour, &[(10, Social)]);
        m.autorisations[0].revoked_at = Some(T0.plus_days(3));
        assert_eq!(m.status(T0.plus_days(4)), Status::Expired);
        assert_eq!(m.ended_at(T0.plus_days(4)), Some(T0.plus_days(1)));
    }

    #[test]
    fn ended_mandats_leave_lists_after_365_days_but_not_before() {
        let m = mandat(1, T0, Duree::UnJour, &[(10, Social)]);
        let end = T0.plus_days(1);
        assert!(m.shown_in_lists(T0));
        assert!(m.shown_in_lists(end.plus_days(365)));
        assert!(!m.shown_in_lists(Timestamp::from_micros(end.plus_days(365).micros() + 1)));
        let mut r = mandat(2, T0, Duree::UnAn, &[(20, Argent)]);
        r.autorisations[0].revoked_at = Some(T0.plus_days(10));
        assert!(r.shown_in_lists(T0.plus_days(375)));
        assert!(!r.shown_in_lists(T0.plus_days(376)));
    }

    #[test]
    fn supersession_revokes_same_demarches_and_keeps_the_others() {
        let old = mandat(1, T0, Duree::UnAn, &[(10, Social), (11, Argent), (12, Logement)]);
        let now = T0.plus_days(30);
        let plan = plan_new_mandat(1, &Demarche::ALL, 7, &[Argent, Social, Famille], Duree::UnMois, &[old], now).unwrap();
        assert_eq!(plan.superseded, vec![10, 11]);
        assert_eq!(plan.demarches, vec![Famille, Social, Argent]);
        assert_eq!(plan.expires_at, now.plus_days(31));
    }

    #[test]
    fn supersession_ignores_expired_and_already_revoked_autorisations() {
        let expired = mandat(1, T0, Duree::UnJour, &[(10, Social)]);
        let mut revoked = mandat(2, T0, Duree::UnAn, &[(20, Social), (21, Argent)]);
        revoked.autorisations[0].revoked_at = Some(T0.plus_days(1));
        let now = T0.plus_days(5);
        let plan = plan_new_mandat(1, &Demarche::ALL, 7, &[Social, Argent], Duree::UnAn, &[expired, revoked], now).unwrap();
        assert_eq!(plan.superseded, vec![21]);
    }

    #[test]
    fn restricted_organisation_limits_new_mandats() {
        let err = plan_new_mandat(1, &[Social, Logement], 7, &[Social, Argent, Justice], Duree::UnAn, &[], T0).unwrap_err();
        assert_eq!(err, MandatError::DemarchesNotAllowed(vec![Argent, Justice]));
        assert!(plan_new_mandat(1, &[Social, Logement], 7, &[Logement], Duree::UnAn, &[], T0).is_ok());
        assert_eq!(plan_new_mandat(1, &Demarche::ALL, 7, &[], Duree::UnAn, &[], T0).unwrap_err(), MandatError::NoDemarche);
    }

    #[test]
    fn mandats_of_another_party_are_refused_as_input() {
        let mut other = mandat(1, T0, Duree::UnAn, &[(10, Social)]);
        other.organisation_id = 2;
        assert_eq!(
            plan_new_mandat(1, &Demarche::ALL, 7, &[Social], Duree::UnAn, &[other], T0).unwrap_err(),
            MandatError::OtherParty
        );
    }

    mod revocation {
        use super::*;
        use crate::capability::{AidantFacts, AidantId, OrganisationFacts};

        fn aidant_of(org: i64) -> InOrganisation {
            let a = AidantFacts { id: AidantId(3), active: true, current_organisation: Some(OrganisationId(org)) };
            InOrganisation::check(&a, &OrganisationFacts { id: OrganisationId(org), allowed_demarches: Demarche::ALL.to_vec() }).unwrap()
        }

        fn two() -> MandatFacts {
            mandat(5, T0, Duree::UnMois, &[(50, Social), (51, Argent)])
        }

        const NOW: Timestamp = Timestamp::from_micros(1_800_000_000_000_000 + 3_600_000_000);

        #[test]
        fn one_of_two_autorisations_keeps_the_mandat() {
            let by = aidant_of(1);
            let p = plan_revocation(&two(), RevocationTarget::Autorisation(AutorisationId(51)), Revoker::Aidant(&by), NOW).unwrap();
            assert_eq!(p.revoked, vec![(AutorisationId(51), Argent)]);
            assert!(!p.mandat_revoked);
            assert_eq!(p.by, Actor::Aidant(AidantId(3)));
            assert_eq!(p.at, NOW);
            assert_eq!(p.events.iter().map(|e| e.action()).collect::<Vec<_>>(), vec![crate::journal::Action::AutorisationRevoked]);
        }

        #[test]
        fn the_last_autorisation_revokes_the_mandat() {
            let by = aidant_of(1);
            let mut m = two();
            m.autorisations[0].revoked_at = Some(T0.plus_seconds(10));
            let p = plan_revocation(&m, RevocationTarget::Autorisation(AutorisationId(51)), Revoker::Aidant(&by), NOW).unwrap();
            assert!(p.mandat_revoked);
            assert_eq!(
                p.events.last(),
                Some(&Event::MandatRevoked { by: Actor::Aidant(AidantId(3)), parties: p.parties, mandat: MandatId(5), demarches: vec![Argent] })
            );
            let whole = plan_revocation(&two(), RevocationTarget::Mandat, Revoker::Aidant(&by), NOW).unwrap();
            assert_eq!(whole.revoked, vec![(AutorisationId(50), Social), (AutorisationId(51), Argent)]);
            assert_eq!(whole.events.len(), 3);
            assert!(whole.mandat_revoked);
            assert_eq!(whole.demarches(), vec![Social, Argent]);
        }

        #[test]
        fn already_revoked_is_refused() {
            let by = aidant_of(1);
            let mut m = two();
            m.autorisations[1].revoked_at = Some(T0.plus_seconds(10));
            let one = plan_revocation(&m, RevocationTarget::Autorisation(AutorisationId(51)), Revoker::Aidant(&by), NOW);
            assert_eq!(one, Err(RevocationError::AutorisationAlreadyRevoked));
            m.autorisations[0].revoked_at = Some(T0.plus_seconds(10));
            assert_eq!(plan_revocation(&m, RevocationTarget::Mandat, Revoker::Aidant(&by), NOW), Err(RevocationError::MandatAlreadyRevoked));
            assert_eq!(
                plan_revocation(&two(), RevocationTarget::Autorisation(AutorisationId(99)), Revoker::Aidant(&by), NOW),
                Err(RevocationError::UnknownAutorisation(AutorisationId(99)))
            );
        }

        #[test]
        fn nothing_is_revoked_from_the_instant_of_expiry() {
            let by = aidant_of(1);
            let m = two();
            let last = Timestamp::from_micros(m.expires_at.micros() - 1);
            assert!(plan_revocation(&m, RevocationTarget::Mandat, Revoker::Aidant(&by), last).is_ok());
            assert_eq!(plan_revocation(&m, RevocationTarget::Mandat, Revoker::Aidant(&by), m.expires_at), Err(RevocationError::Expired));
        }

        #[test]
        fn an_aidant_of_another_organisation_or_another_usager_is_refused() {
            let other = aidant_of(2);
            assert_eq!(plan_revocation(&two(), RevocationTarget::Mandat, Revoker::Aidant(&other), NOW), Err(RevocationError::NotTheirs));
            assert_eq!(plan_revocation(&two(), RevocationTarget::Mandat, Revoker::Usager(UsagerId(8)), NOW), Err(RevocationError::NotTheirs));
        }

        #[test]
        fn the_usager_revokes_as_themselves() {
            let p = plan_revocation(&two(), RevocationTarget::Autorisation(AutorisationId(50)), Revoker::Usager(UsagerId(7)), NOW).unwrap();
            assert_eq!(p.by, Actor::Usager);
            let e = p.events[0].entry(p.at);
            assert_eq!((e.aidant, e.usager, e.at), (None, Some(7), Some(NOW)));
            assert_eq!(e.details.get("by").and_then(|v| v.as_str()), Some("usager"));
        }
    }
}
