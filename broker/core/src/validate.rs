//! Input checks shared by the operator CLI and the pages. Messages are plain French,
//! one line, and say what is expected.

use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// The longest identifier the service ever issues or accepts (client ids, key ids, flow
/// ids, filter values naming one of them).
pub const IDENTIFIER_MAX: usize = 128;

/// An identifier as callers may send one: 1 to [`IDENTIFIER_MAX`] visible ASCII
/// characters. Anything else (a NUL byte, a control character, a space, non-ASCII, an
/// overlong value) names nothing the service knows, and never reaches a database.
pub fn is_identifier(v: &str) -> bool {
    (1..=IDENTIFIER_MAX).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic())
}

/// The most bytes of a caller-controlled value that a log line carries.
pub const LOG_VALUE_MAX: usize = 256;

/// A caller-controlled value as a log line may carry it: at most [`LOG_VALUE_MAX`]
/// bytes (cut on a character boundary, `…` appended), control characters escaped.
pub fn log_value(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        let piece: String = if c.is_control() { c.escape_default().collect() } else { c.to_string() };
        if out.len() + piece.len() > LOG_VALUE_MAX {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// Checks an e-mail address and returns it lower-cased (addresses are matched
/// case-insensitively everywhere in the service).
pub fn email(raw: &str) -> Result<String, Invalid> {
    let e = raw.trim();
    let err = || invalid(format!("adresse e-mail invalide : « {e} » (exemple attendu : prenom.nom@structure.fr)"));
    if e.len() > 254 || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err());
    }
    let (local, domain) = e.rsplit_once('@').ok_or_else(err)?;
    if local.is_empty() || local.len() > 64 || local.contains('@') || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(err());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(err());
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-');
        if !ok {
            return Err(err());
        }
    }
    Ok(e.to_lowercase())
}

/// Checks a SIRET: 14 digits whose Luhn sum is a multiple of 10, except for La Poste's
/// establishments (SIREN 356000000), whose digit sum is a multiple of 5.
pub fn siret(raw: &str) -> Result<String, Invalid> {
    let s: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("SIRET invalide : « {} » (14 chiffres attendus)", raw.trim())));
    }
    let digits: Vec<u32> = s.bytes().map(|b| u32::from(b - b'0')).collect();
    let ok = if s.starts_with("356000000") && s != "35600000000048" {
        digits.iter().sum::<u32>() % 5 == 0
    } else {
        let luhn: u32 = digits
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                if i % 2 == 0 {
                    let x = d * 2;
                    if x > 9 { x - 9 } else { x }
                } else {
                    d
                }
            })
            .sum();
        luhn.is_multiple_of(10)
    };
    if ok {
        Ok(s)
    } else {
        Err(invalid(format!("SIRET invalide : « {s} » (la clé de contrôle ne correspond pas, vérifiez les chiffres)")))
    }
}

/// A person's name or a short label: trimmed, 1 to `max` characters, no control characters.
pub fn label(field: &str, raw: &str, max: usize) -> Result<String, Invalid> {
    let v = raw.trim();
    if v.is_empty() {
        return Err(invalid(format!("{field} : valeur obligatoire")));
    }
    if v.chars().count() > max {
        return Err(invalid(format!("{field} : {max} caractères au plus")));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(format!("{field} : caractères non autorisés")));
    }
    Ok(v.to_owned())
}

/// A redirect URI a client may register: absolute, without fragment or credentials,
/// `https`, or `http` only on `localhost` / `127.0.0.1` / `[::1]`. Matching at run time
/// is exact, so the URI is kept as written.
pub fn redirect_uri(raw: &str) -> Result<String, Invalid> {
    let v = raw.trim();
    let url = Url::parse(v).map_err(|_| invalid(format!("URI de redirection invalide : « {v} » (URL absolue attendue)")))?;
    if url.fragment().is_some() {
        return Err(invalid(format!("URI de redirection invalide : « {v} » (pas de fragment #)")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!("URI de redirection invalide : « {v} » (pas d'identifiants dans l'URL)")));
    }
    let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" if url.host_str().is_some() => Ok(v.to_owned()),
        "http" if local => Ok(v.to_owned()),
        _ => Err(invalid(format!(
            "URI de redirection refusée : « {v} » (https obligatoire, http seulement pour localhost ou 127.0.0.1)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_short_visible_ascii() {
        for ok in ["demo-service", "0123456789abcdef0123456789abcdef", "a", &"x".repeat(IDENTIFIER_MAX)] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "a\0b", "a b", "é", "a\nb", "a\u{7f}", &"x".repeat(IDENTIFIER_MAX + 1)] {
            assert!(!is_identifier(bad), "{bad:?}");
        }
    }

    #[test]
    fn log_values_are_bounded_and_escaped() {
        assert_eq!(log_value("https://rp.exemple/cb"), "https://rp.exemple/cb");
        assert_eq!(log_value("a\0b\r\n"), "a\\u{0}b\\r\\n");
        let long = log_value(&"é".repeat(30_000));
        assert!(long.len() <= LOG_VALUE_MAX + 3 && long.ends_with('…'), "{}", long.len());
    }

    #[test]
    fn emails_are_lowercased_and_malformed_ones_refused() {
        assert_eq!(email(" Marie.Curie@Exemple.FR ").unwrap(), "marie.curie@exemple.fr");
        for bad in ["", "marie", "marie@", "@exemple.fr", "marie@exemple", "ma rie@exemple.fr", "marie@@exemple.fr", "marie@exemple..fr", "marie@-exemple.fr", ".marie@exemple.fr"] {
            assert!(email(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn siret_checksum() {
        assert!(siret("73282932000074").is_ok());
        assert!(siret("732 829 320 00074").is_ok());
        assert!(siret("73282932000075").is_err());
        assert!(siret("7328293200007").is_err());
        assert!(siret("7328293200007A").is_err());
        // La Poste: digit sum multiple of 5 instead of Luhn
        assert!(siret("35600000000010").is_ok());
        assert!(siret("35600000000011").is_err());
    }

    #[test]
    fn redirect_uris_https_or_local_http_only() {
        assert!(redirect_uri("https://fc.exemple.gouv.fr/api/v2/oidc-callback").is_ok());
        assert!(redirect_uri("http://localhost:8080/cb").is_ok());
        assert!(redirect_uri("http://127.0.0.1/cb").is_ok());
        assert!(redirect_uri("http://[::1]:3000/cb").is_ok());
        for bad in ["http://exemple.fr/cb", "https://exemple.fr/cb#x", "ftp://exemple.fr", "/cb", "https://u:p@exemple.fr/cb", "http://localhost.evil.fr/cb"] {
            assert!(redirect_uri(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn labels_are_trimmed_and_bounded() {
        assert_eq!(label("Nom", "  Dupont ", 10).unwrap(), "Dupont");
        assert!(label("Nom", "   ", 10).is_err());
        assert!(label("Nom", "abcdefghijk", 10).is_err());
        assert!(label("Nom", "a\u{0}b", 10).is_err());
    }
}
