//! The four durations a mandat may last.

use crate::Timestamp;

/// The four durations a usager may choose. Expiry = creation + duration, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duree {
    /// « expire demain »
    UnJour,
    UnMois,
    SixMois,
    UnAn,
}

impl Duree {
    pub const ALL: [Duree; 4] = [Duree::UnJour, Duree::UnMois, Duree::SixMois, Duree::UnAn];

    pub const fn days(self) -> i64 {
        match self {
            Duree::UnJour => 1,
            Duree::UnMois => 31,
            Duree::SixMois => 182,
            Duree::UnAn => 365,
        }
    }

    pub fn from_days(days: i64) -> Option<Duree> {
        Duree::ALL.into_iter().find(|d| d.days() == days)
    }

    pub const fn label(self) -> &'static str {
        match self {
            Duree::UnJour => "1 jour (le mandat expire demain)",
            Duree::UnMois => "1 mois (31 jours)",
            Duree::SixMois => "6 mois (182 jours)",
            Duree::UnAn => "1 an (365 jours)",
        }
    }

    /// The duration in a few words (« 1 mois »).
    pub const fn short_label(self) -> &'static str {
        match self {
            Duree::UnJour => "1 jour",
            Duree::UnMois => "1 mois",
            Duree::SixMois => "6 mois",
            Duree::UnAn => "1 an",
        }
    }

    pub fn expiry(self, created_at: Timestamp) -> Timestamp {
        created_at.plus_days(self.days())
    }
}
