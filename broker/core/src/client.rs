//! OIDC clients the operator registers (FranceConnect's core, or a direct partner).

use crate::secret::{random_bytes, Secret};
use crate::validate::{self, Invalid};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenAlg {
    Es256,
    Rs256,
    Hs256,
}

impl IdTokenAlg {
    pub const fn key(self) -> &'static str {
        match self {
            IdTokenAlg::Es256 => "ES256",
            IdTokenAlg::Rs256 => "RS256",
            IdTokenAlg::Hs256 => "HS256",
        }
    }

    pub fn parse(v: &str) -> Result<Self, Invalid> {
        match v {
            "ES256" => Ok(IdTokenAlg::Es256),
            "RS256" => Ok(IdTokenAlg::Rs256),
            "HS256" => Ok(IdTokenAlg::Hs256),
            _ => Err(Invalid(format!("algorithme inconnu : « {v} » (ES256, RS256 ou HS256)"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserinfoFormat {
    Json,
    Jwt,
}

impl UserinfoFormat {
    pub const fn key(self) -> &'static str {
        match self {
            UserinfoFormat::Json => "json",
            UserinfoFormat::Jwt => "jwt",
        }
    }

    pub fn parse(v: &str) -> Result<Self, Invalid> {
        match v {
            "json" => Ok(UserinfoFormat::Json),
            "jwt" => Ok(UserinfoFormat::Jwt),
            _ => Err(Invalid(format!("format userinfo inconnu : « {v} » (json ou jwt)"))),
        }
    }
}

/// Which `sub` a client receives for a usager (OpenID Connect Core §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectType {
    /// The usager's broker id, the same for every client.
    Public,
    /// A keyed hash of the usager's broker id and the client's sector: stable for that
    /// sector, unrelated between sectors (the default for new clients).
    Pairwise,
}

impl SubjectType {
    pub const fn key(self) -> &'static str {
        match self {
            SubjectType::Public => "public",
            SubjectType::Pairwise => "pairwise",
        }
    }

    pub fn parse(v: &str) -> Result<Self, Invalid> {
        match v {
            "public" => Ok(SubjectType::Public),
            "pairwise" => Ok(SubjectType::Pairwise),
            _ => Err(Invalid(format!("type de sujet inconnu : « {v} » (public ou pairwise)"))),
        }
    }
}

/// A validated registration, with its freshly generated credentials.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub client_id: String,
    pub secret: Secret,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub id_token_alg: IdTokenAlg,
    pub userinfo: UserinfoFormat,
    /// [`SubjectType::Pairwise`] unless [`NewClient::with_subject`] says otherwise.
    pub subject_type: SubjectType,
    /// The sector of a pairwise client (a host name): clients sharing one get the same
    /// subjects. `None`: the client is a sector of its own.
    pub sector_identifier: Option<String>,
    /// Add the `act` claim (the acting aidant and their organisation) to the id_token
    /// and userinfo.
    pub act_claim: bool,
}

impl NewClient {
    pub fn validate(
        name: &str,
        redirect_uris: &[String],
        post_logout_redirect_uris: &[String],
        id_token_alg: &str,
        userinfo: &str,
    ) -> Result<Self, Invalid> {
        let name = validate::label("nom du client", name, 200)?;
        if redirect_uris.is_empty() {
            return Err(Invalid("au moins une URI de redirection est obligatoire (--redirect-uri)".into()));
        }
        let redirect_uris = uris(redirect_uris)?;
        let post_logout_redirect_uris = uris(post_logout_redirect_uris)?;
        Ok(Self {
            client_id: hex::encode(random_bytes::<16>()),
            secret: Secret::generate(),
            name,
            redirect_uris,
            post_logout_redirect_uris,
            id_token_alg: IdTokenAlg::parse(id_token_alg)?,
            userinfo: UserinfoFormat::parse(userinfo)?,
            subject_type: SubjectType::Pairwise,
            sector_identifier: None,
            act_claim: false,
        })
    }

    /// The subject type and, for a pairwise client, an optional sector identifier (a
    /// host name such as `demarches.exemple.fr`, lower case, without scheme nor path).
    pub fn with_subject(mut self, subject_type: &str, sector_identifier: Option<&str>) -> Result<Self, Invalid> {
        self.subject_type = SubjectType::parse(subject_type)?;
        self.sector_identifier = match sector_identifier.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(_) if self.subject_type == SubjectType::Public => {
                return Err(Invalid("--sector-identifier ne vaut que pour un client pairwise".into()))
            }
            Some(host) => Some(sector_host(host)?),
        };
        Ok(self)
    }

    /// Adds (or not) the `act` claim to this client's id_tokens and userinfo.
    pub fn with_act_claim(mut self, act_claim: bool) -> Self {
        self.act_claim = act_claim;
        self
    }
}

/// A sector identifier: a DNS host name, lower-cased.
fn sector_host(v: &str) -> Result<String, Invalid> {
    let host = v.to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() <= 253 && host.split('.').all(label_ok) {
        Ok(host)
    } else {
        Err(Invalid(format!(
            "identifiant de secteur invalide : « {} » (un nom d'hôte, par exemple demarches.exemple.fr)",
            v.chars().take(80).collect::<String>()
        )))
    }
}

fn uris(list: &[String]) -> Result<Vec<String>, Invalid> {
    let mut out = Vec::new();
    for u in list {
        let u = validate::redirect_uri(u)?;
        if !out.contains(&u) {
            out.push(u);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_checks_every_uri_and_the_algorithms() {
        let ok = NewClient::validate("FC", &["https://fc.exemple/cb".into()], &["https://fc.exemple/logout".into()], "ES256", "json").unwrap();
        assert_eq!(ok.client_id.len(), 32);
        assert_eq!(ok.id_token_alg, IdTokenAlg::Es256);
        assert!(NewClient::validate("FC", &[], &[], "ES256", "json").is_err());
        assert!(NewClient::validate("FC", &["https://fc.exemple/cb".into(), "http://fc.exemple/cb".into()], &[], "ES256", "json").is_err());
        assert!(NewClient::validate("FC", &["https://fc.exemple/cb".into()], &["http://evil.exemple/".into()], "ES256", "json").is_err());
        assert!(NewClient::validate("FC", &["https://fc.exemple/cb".into()], &[], "none", "json").is_err());
        assert!(NewClient::validate("FC", &["https://fc.exemple/cb".into()], &[], "HS256", "jwe").is_err());
    }

    #[test]
    fn new_clients_are_pairwise_unless_told_otherwise() {
        let n = NewClient::validate("FC", &["https://fc.exemple/cb".into()], &[], "ES256", "json").unwrap();
        assert_eq!((n.subject_type, n.sector_identifier.as_deref(), n.act_claim), (SubjectType::Pairwise, None, false));
        let p = n.clone().with_subject("public", None).unwrap();
        assert_eq!(p.subject_type, SubjectType::Public);
        let s = n.clone().with_subject("pairwise", Some("Demarches.Exemple.fr")).unwrap().with_act_claim(true);
        assert_eq!(s.sector_identifier.as_deref(), Some("demarches.exemple.fr"));
        assert!(s.act_claim);
        assert!(n.clone().with_subject("public", Some("demarches.exemple.fr")).is_err());
        assert!(n.clone().with_subject("opaque", None).is_err());
        for bad in ["https://demarches.exemple.fr", "demarches.exemple.fr/cb", "-x.fr", "a..b", "é.fr"] {
            assert!(n.clone().with_subject("pairwise", Some(bad)).is_err(), "{bad}");
        }
    }
}
