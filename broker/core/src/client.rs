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
        })
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
}
