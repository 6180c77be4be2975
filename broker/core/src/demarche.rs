//! The ten démarches: the unit of consent. Their keys are part of the protocol
//! (`rep_scope` values, journal entries) and never change.

use std::fmt;

/// Serialised as its key (`"argent"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Demarche {
    Papiers,
    Famille,
    Social,
    Travail,
    Logement,
    Transports,
    Argent,
    Justice,
    Etranger,
    Loisirs,
}

impl Demarche {
    pub const ALL: [Demarche; 10] = [
        Demarche::Papiers,
        Demarche::Famille,
        Demarche::Social,
        Demarche::Travail,
        Demarche::Logement,
        Demarche::Transports,
        Demarche::Argent,
        Demarche::Justice,
        Demarche::Etranger,
        Demarche::Loisirs,
    ];

    pub const fn key(self) -> &'static str {
        match self {
            Demarche::Papiers => "papiers",
            Demarche::Famille => "famille",
            Demarche::Social => "social",
            Demarche::Travail => "travail",
            Demarche::Logement => "logement",
            Demarche::Transports => "transports",
            Demarche::Argent => "argent",
            Demarche::Justice => "justice",
            Demarche::Etranger => "etranger",
            Demarche::Loisirs => "loisirs",
        }
    }

    pub const fn title(self) -> &'static str {
        match self {
            Demarche::Papiers => "Papiers - Citoyenneté - Élections",
            Demarche::Famille => "Famille - Scolarité",
            Demarche::Social => "Social - Santé",
            Demarche::Travail => "Travail - Formation",
            Demarche::Logement => "Logement",
            Demarche::Transports => "Transports - Mobilité",
            Demarche::Argent => "Argent - Impôts - Consommation",
            Demarche::Justice => "Justice",
            Demarche::Etranger => "Étranger - Europe",
            Demarche::Loisirs => "Loisirs - Sport - Culture",
        }
    }

    pub const fn description(self) -> &'static str {
        match self {
            Demarche::Papiers => {
                "État civil, passeport, carte nationale d'identité, inscription sur les listes électorales"
            }
            Demarche::Famille => {
                "Allocations familiales, naissance, mariage, PACS, inscription et vie scolaire"
            }
            Demarche::Social => {
                "Carte Vitale, assurance chômage, handicap, RSA, aides aux personnes âgées"
            }
            Demarche::Travail => {
                "Contrat de travail, concours, retraite, formation professionnelle"
            }
            Demarche::Logement => {
                "Aides au logement, demande de logement social, fin de bail"
            }
            Demarche::Transports => {
                "Certificat d'immatriculation (carte grise), permis de conduire, infractions routières"
            }
            Demarche::Argent => {
                "Impôts, crédit, assurance, dossier de surendettement"
            }
            Demarche::Justice => {
                "Extrait de casier judiciaire, dépôt de plainte, aide juridictionnelle"
            }
            Demarche::Etranger => "Titre de séjour, attestation d'accueil",
            Demarche::Loisirs => "Permis bateau, permis de chasser, tourisme",
        }
    }

    pub fn from_key(key: &str) -> Option<Demarche> {
        Demarche::ALL.into_iter().find(|d| d.key() == key)
    }

    /// Parses a comma-separated list of keys (`"argent,social"`), trimming blanks,
    /// refusing unknown keys and empty lists, and removing duplicates. The result is in
    /// the canonical order of [`Demarche::ALL`].
    pub fn parse_list(list: &str) -> Result<Vec<Demarche>, UnknownDemarche> {
        let mut out = Vec::new();
        for raw in list.split(',') {
            let key = raw.trim();
            if key.is_empty() {
                continue;
            }
            let d = Demarche::from_key(key).ok_or_else(|| UnknownDemarche(key.to_owned()))?;
            out.push(d);
        }
        if out.is_empty() {
            return Err(UnknownDemarche(String::new()));
        }
        Ok(canonical(out))
    }

    /// Comma-separated keys in canonical order, as stored.
    pub fn join(list: &[Demarche]) -> String {
        canonical(list.to_vec())
            .iter()
            .map(|d| d.key())
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn canonical(mut list: Vec<Demarche>) -> Vec<Demarche> {
    list.sort();
    list.dedup();
    list
}

serde_as_key!(Demarche, Demarche::from_key, "démarche");

impl fmt::Display for Demarche {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", if .0.is_empty() { "la liste des démarches est vide".to_owned() } else { format!("démarche inconnue : « {} » (démarches possibles : {})", .0, all_keys()) })]
pub struct UnknownDemarche(pub String);

pub fn all_keys() -> String {
    Demarche::ALL.map(|d| d.key()).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_demarches_with_unique_keys_titles_and_descriptions() {
        let mut keys: Vec<_> = Demarche::ALL.iter().map(|d| d.key()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 10);
        for d in Demarche::ALL {
            assert_eq!(Demarche::from_key(d.key()), Some(d));
            assert!(!d.title().is_empty() && !d.description().is_empty());
        }
        assert_eq!(Demarche::Etranger.title(), "Étranger - Europe");
        assert_eq!(Demarche::Argent.key(), "argent");
    }

    #[test]
    fn parse_list_orders_dedups_and_refuses_unknown_keys() {
        assert_eq!(
            Demarche::parse_list(" social,argent, social ").unwrap(),
            vec![Demarche::Social, Demarche::Argent]
        );
        assert_eq!(
            Demarche::parse_list("argent,impots"),
            Err(UnknownDemarche("impots".into()))
        );
        assert!(Demarche::parse_list(" , ").is_err());
        assert!(Demarche::parse_list("Argent").is_err(), "keys are case-sensitive");
        assert_eq!(Demarche::join(&[Demarche::Loisirs, Demarche::Papiers]), "papiers,loisirs");
    }
}
