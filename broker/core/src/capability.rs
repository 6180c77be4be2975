//! Typed capabilities: "this aidant acts in this organisation" and "this aidant may act
//! for this usager on this démarche, now".
//!
//! Each has private fields and one checked constructor, fed with the facts the store read
//! at an instant. Code that acts for a usager takes an [`ActingFor`]; it cannot be built
//! without the mandat check, so no caller can forget it. Ids are newtypes, so that an
//! aidant id cannot be passed where a usager id is expected.

use crate::mandat::{MandatFacts, Status};
use crate::{Demarche, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }
    )*};
}

id_type!(
    /// An aidant's account.
    AidantId,
    /// A structure (organisation).
    OrganisationId,
    /// A usager, as the broker knows them.
    UsagerId,
    /// A mandat.
    MandatId,
    /// One démarche of a mandat.
    AutorisationId,
);

/// What the store knows of an aidant when a request needs their organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AidantFacts {
    pub id: AidantId,
    pub active: bool,
    pub current_organisation: Option<OrganisationId>,
}

/// What the store knows of an organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganisationFacts {
    pub id: OrganisationId,
    pub allowed_demarches: Vec<Demarche>,
}

/// Why a capability is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("compte d'aidant désactivé")]
    AidantInactive,
    #[error("aucune structure choisie pour cet aidant")]
    NoOrganisation,
    #[error("le mandat appartient à une autre structure")]
    OtherOrganisation,
    #[error("la structure n'est pas habilitée pour la démarche {0}")]
    DemarcheNotAllowed(Demarche),
    #[error("le mandat ne comprend pas la démarche {0}")]
    NoAutorisation(Demarche),
    #[error("le mandat a expiré")]
    Expired,
    #[error("la démarche a été révoquée")]
    Revoked,
}

/// An active aidant acting in their current organisation, with that organisation's
/// allowed démarches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InOrganisation {
    aidant: AidantId,
    organisation: OrganisationId,
    allowed: Vec<Demarche>,
}

impl InOrganisation {
    /// The aidant must be active and `organisation` their current one.
    pub fn check(aidant: &AidantFacts, organisation: &OrganisationFacts) -> Result<Self, Refusal> {
        if !aidant.active {
            return Err(Refusal::AidantInactive);
        }
        match aidant.current_organisation {
            None => Err(Refusal::NoOrganisation),
            Some(o) if o != organisation.id => Err(Refusal::OtherOrganisation),
            Some(o) => Ok(InOrganisation { aidant: aidant.id, organisation: o, allowed: organisation.allowed_demarches.clone() }),
        }
    }

    pub fn aidant(&self) -> AidantId {
        self.aidant
    }

    pub fn organisation(&self) -> OrganisationId {
        self.organisation
    }

    /// The démarches the organisation may do (or, once narrowed, the part of them a
    /// request accepts).
    pub fn allowed(&self) -> &[Demarche] {
        &self.allowed
    }

    /// The same capability restricted to `demarches` (never widened).
    pub fn narrowed(&self, demarches: &[Demarche]) -> InOrganisation {
        InOrganisation { allowed: self.allowed.iter().copied().filter(|d| demarches.contains(d)).collect(), ..self.clone() }
    }
}

/// An aidant who may act, at `checked_at`, for a usager on one démarche: the mandat is
/// their organisation's, the organisation may do the démarche, and the mandat's
/// autorisation for it is active at that instant (not expired, not revoked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActingFor {
    aidant: AidantId,
    organisation: OrganisationId,
    usager: UsagerId,
    mandat: MandatId,
    autorisation: AutorisationId,
    demarche: Demarche,
    checked_at: Timestamp,
}

impl ActingFor {
    /// The one way to get an [`ActingFor`]: the facts of the mandat, read at `now`.
    pub fn check(by: &InOrganisation, mandat: &MandatFacts, demarche: Demarche, now: Timestamp) -> Result<Self, Refusal> {
        if mandat.organisation_id != by.organisation.0 {
            return Err(Refusal::OtherOrganisation);
        }
        if !by.allowed.contains(&demarche) {
            return Err(Refusal::DemarcheNotAllowed(demarche));
        }
        let a = mandat.autorisations.iter().find(|a| a.demarche == demarche).ok_or(Refusal::NoAutorisation(demarche))?;
        match a.status(mandat.expires_at, now) {
            Status::Active => Ok(ActingFor {
                aidant: by.aidant,
                organisation: by.organisation,
                usager: UsagerId(mandat.usager_id),
                mandat: MandatId(mandat.id),
                autorisation: AutorisationId(a.id),
                demarche,
                checked_at: now,
            }),
            Status::Expired => Err(Refusal::Expired),
            Status::Revoked => Err(Refusal::Revoked),
        }
    }

    /// The same capability checked again at `now` against fresh facts of its mandat (for
    /// a step that happens later: the code, then userinfo).
    pub fn recheck(&self, by: &InOrganisation, mandat: &MandatFacts, now: Timestamp) -> Result<Self, Refusal> {
        if by.aidant != self.aidant || mandat.id != self.mandat.0 {
            return Err(Refusal::OtherOrganisation);
        }
        ActingFor::check(by, mandat, self.demarche, now)
    }

    pub fn aidant(&self) -> AidantId {
        self.aidant
    }
    pub fn organisation(&self) -> OrganisationId {
        self.organisation
    }
    pub fn usager(&self) -> UsagerId {
        self.usager
    }
    pub fn mandat(&self) -> MandatId {
        self.mandat
    }
    pub fn autorisation(&self) -> AutorisationId {
        self.autorisation
    }
    pub fn demarche(&self) -> Demarche {
        self.demarche
    }
    pub fn checked_at(&self) -> Timestamp {
        self.checked_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mandat::AutorisationFacts;

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
}
