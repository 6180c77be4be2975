//! `broker keys`: key files and signing keys.

use super::*;

#[derive(Subcommand, Debug)]
pub(super) enum KeysCmd {
    /// Crée les clés manquantes (sans toucher aux clés existantes), dont la clé du journal ;
    /// pas les clés de signature.
    Init,
    /// Crée la première clé de signature d'un algorithme, active tout de suite.
    Generate {
        /// ES256 (P-256) ou RS256 (RSA 2048 bits).
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// Ne fait rien (code 0) si une clé de signature de cet algorithme existe déjà.
        #[arg(long)]
        if_missing: bool,
    },
    /// Liste les clés de signature et leur état, par algorithme (jamais leur partie privée).
    List,
    /// Ajoute une clé de signature, publiée tout de suite, qui remplacera celle du même
    /// algorithme après AC_KEY_PUBLISH_DELAY_SECONDS.
    Rotate {
        /// ES256 (P-256) ou RS256 (RSA 2048 bits).
        #[arg(long, default_value = "ES256")]
        alg: String,
    },
    /// Arrête une clé de signature maintenant (elle reste publiée une heure) ; refusé pour
    /// la seule clé qui signe dans son algorithme.
    Retire {
        /// Key id, as `broker keys list` shows it (it may begin with « - »).
        #[arg(long, allow_hyphen_values = true)]
        kid: String,
    },
}

/// One line per algorithm for `keys list`: the key that signs it now, or what to do.
pub(super) fn signing_summary(set: &KeySet, alg: Alg, now: Timestamp) -> String {
    match set.signing_key_for(alg, now) {
        Some(k) => format!("{} : signe avec {}", alg.key(), k.kid()),
        None if set.has(alg) => format!("{} : aucune clé ne signe maintenant", alg.key()),
        None => format!("{} : aucune clé (« broker keys generate --alg {} » crée la première)", alg.key(), alg.key()),
    }
}

pub(super) fn key_line(k: &KeyInfo) -> String {
    let published = match (&k.published, &k.published_until) {
        (true, Some(until)) => format!("publiée jusqu'au {until}"),
        (true, None) => "publiée".to_owned(),
        (false, _) => "non publiée".to_owned(),
    };
    format!("{}\t{}\t{}\tactive le {}\t{published}", k.kid, k.alg.key(), k.state.french(), k.active_from)
}

/// `broker keys init` creates the missing key files; `generate | list | rotate | retire`
/// manage the signing keys in `AC_KEYS_DIR/signing`. Input and rules are checked before
/// anything is written; each change of a signing key is journaled with its file.
pub(super) fn keys_cmd(cmd: KeysCmd, s: &Settings, json: bool) -> Result<(), Failure> {
    let dir = crate::keys::signing_dir(&s.keys_dir);
    let now = Timestamp::now();
    let alg = |v: &str| Alg::parse(v).map_err(|e| bad_input(e.0));
    match cmd {
        KeysCmd::Init => {
            Keys::load(&s.keys_dir, Some(Generate::Provision))?;
            if !crate::keys::journal_key_path(&s.keys_dir).exists() {
                let (_, path) = crate::keys::generate_journal_key(&s.keys_dir, &s.journal_origin)?;
                eprintln!("Clé créée : {} (sauvegardez-la dans votre coffre)", path.display());
            }
            out(json, json!({ "keys_dir": s.keys_dir }), || format!("Clés présentes dans {}", s.keys_dir.display()));
        }
        KeysCmd::List => {
            let set = signing_files::load(&dir)?;
            let infos = set.infos(now);
            out(json, serde_json::to_value(&infos).unwrap_or_default(), || {
                if infos.is_empty() {
                    return format!("Aucune clé de signature dans {} (« broker keys generate » crée la première).", dir.display());
                }
                let mut lines: Vec<String> = infos.iter().map(key_line).collect();
                lines.push(String::new());
                lines.extend(Alg::ALL.iter().map(|a| signing_summary(&set, *a, now)));
                lines.join("\n")
            });
        }
        KeysCmd::Generate { alg: a, if_missing } => {
            let a = alg(&a)?;
            let mut set = signing_files::load(&dir)?;
            if if_missing && set.has(a) {
                let count = set.keys_of(a).count();
                out(json, json!({ "generated": false, "alg": a.key(), "keys": count }), || {
                    format!("Clé de signature {} déjà présente dans {} : rien à faire.", a.key(), dir.display())
                });
                return Ok(());
            }
            let key = set.generate(a, now)?.clone();
            let db = open_db(s)?;
            let path = crate::keys::record_new_signing_key(&db, &dir, "generate", &key, "cli")?;
            let info = set.info(key.kid(), now).expect("the new key");
            out(json, serde_json::to_value(&info).unwrap_or_default(), || {
                format!("Clé de signature créée : {} ({}), active dès maintenant : {}\nSauvegardez-la dans votre coffre.", info.kid, info.alg.key(), path.display())
            });
        }
        KeysCmd::Rotate { alg: a } => {
            let a = alg(&a)?;
            let mut set = signing_files::load(&dir)?;
            let key = set.rotate(a, now, s.key_publish_delay_seconds)?.clone();
            let db = open_db(s)?;
            let path = crate::keys::record_new_signing_key(&db, &dir, "rotate", &key, "cli")?;
            let info = set.info(key.kid(), now).expect("the new key");
            out(json, serde_json::to_value(&info).unwrap_or_default(), || {
                format!(
                    "Clé de signature ajoutée : {} ({}), publiée dès maintenant, signe à partir du {} : {}\nSauvegardez-la dans votre coffre.",
                    info.kid,
                    info.alg.key(),
                    info.active_from,
                    path.display()
                )
            });
        }
        KeysCmd::Retire { kid } => {
            let mut set = signing_files::load(&dir)?;
            let before = set.get(&kid).cloned();
            let retired = set.retire(&kid, now)?.clone();
            let before = before.expect("retire found the key");
            let db = open_db(s)?;
            crate::keys::record_retirement(&db, &dir, &retired, &before)?;
            let info = set.info(&kid, now).expect("the retired key");
            out(json, serde_json::to_value(&info).unwrap_or_default(), || {
                format!(
                    "Clé de signature retirée : {} ; elle ne signe plus et reste publiée jusqu'au {}.",
                    info.kid,
                    info.published_until.as_deref().unwrap_or("?")
                )
            });
        }
    }
    Ok(())
}

/// The signing keys for `serve`. Signing is per algorithm (a client registers ES256 or
/// RS256): in development a first key of each algorithm is generated (and journaled) when
/// there is no key of it, so that any registered client works out of the box; in
/// production a key must sign now for the default algorithm (ES256), and an algorithm
/// without a signing key is only warned about (see [`warn_unsigned_clients`]).
pub(super) fn signing_keys(s: &Settings, db: Option<&Db>) -> Result<KeyStore, Failure> {
    let dir = crate::keys::signing_dir(&s.keys_dir);
    let mut store = KeyStore::open(&dir)?;
    let now = Timestamp::now();
    if let (Env::Development, Some(db)) = (s.env, db) {
        let mut set = KeySet::clone(&store.keys());
        let mut generated = false;
        for alg in Alg::ALL.iter().copied().filter(|a| !set.has(*a)).collect::<Vec<_>>() {
            let key = set.generate(alg, now)?.clone();
            let path = crate::keys::record_new_signing_key(db, &dir, "generate", &key, "serve")?;
            eprintln!(
                "ATTENTION : clé de signature de développement générée ({}) dans {} — ne l'utilisez pas en production.",
                alg.key(),
                path.display()
            );
            generated = true;
        }
        if generated {
            store = KeyStore::open(&dir)?;
        }
    }
    let keys = store.keys();
    let default = Alg::DEFAULT;
    if s.env == Env::Production && keys.signing_key_for(default, now).is_none() {
        let count = keys.keys_of(default).count();
        return Err(bad_input(if count == 0 {
            format!(
                "aucune clé de signature {a} dans {} : créez-la avec « broker keys generate --alg {a} » \
                 ({a} est l'algorithme par défaut des clients ; voir docs/configuration.md)",
                dir.display(),
                a = default.key()
            )
        } else {
            format!(
                "aucune des {count} clés de signature {a} de {} ne signe maintenant (voir « broker keys list »)",
                dir.display(),
                a = default.key()
            )
        }));
    }
    for alg in Alg::ALL.iter().filter(|a| keys.signing_key_for(**a, now).is_none()) {
        if s.env == Env::Development || keys.has(*alg) {
            tracing::warn!(dir = %dir.display(), alg = alg.key(), "no signing key signs now for this algorithm (see `broker keys list`)");
        }
    }
    Ok(store)
}

/// Warns about each active client whose registered id_token algorithm has no key that
/// signs now: its id_tokens would be refused until `broker keys generate --alg …`. A
/// check at start only (keys and clients may change while the service runs).
pub(super) fn warn_unsigned_clients(db: &Db, keys: &KeySet) {
    let now = Timestamp::now();
    let unsigned: Vec<Alg> = Alg::ALL.iter().copied().filter(|a| keys.signing_key_for(*a, now).is_none()).collect();
    if unsigned.is_empty() {
        return;
    }
    let clients = match admin::list_clients(db) {
        Ok(c) => c,
        Err(e) => return tracing::warn!(error = %e, "registered clients not checked against the signing keys"),
    };
    for alg in unsigned {
        let ids: Vec<&str> =
            clients.iter().filter(|c| c.active && c.id_token_alg == alg.key()).map(|c| c.client_id.as_str()).collect();
        if !ids.is_empty() {
            tracing::warn!(
                alg = alg.key(),
                clients = %ids.join(", "),
                "registered clients use an algorithm without a signing key: run `broker keys generate --alg {}`",
                alg.key()
            );
        }
    }
}
