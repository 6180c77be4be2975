//! Command line: `serve`, `migrate`, `journal verify`, `keys` (key files and signing
//! keys) and the operator's `admin` commands. Every admin command and every change of the
//! signing keys is journaled. Exit codes: 0 success,
//! 1 failure (service unreachable, journal altered), 2 bad input (nothing written).

use crate::keys::{Generate, Keys};
use broker_core::checkpoint::{parse_export_line, Audit, AuditFailure, Checkpoint, ExportLine, JournalKey, VerifierKey};
use broker_core::merkle;
use crate::settings::{self, Env, Settings};
use anyhow::Context;
use broker_core::client::NewClient;
use broker_core::identite::{usager_key, IdentitePivot};
use broker_core::mandat::{Duree, MandatFacts, Status};
use broker_core::signing::store::KeyStore;
use broker_core::signing::{files as signing_files, Alg, KeyInfo, KeySet, SigningError};
use broker_core::totp::CardRecord;
use broker_core::{Demarche, Timestamp};
use broker_store::cache::{Cache, InProcess, Redis};
use broker_store::seal::Sealer;
use broker_store::{admin, checkpoints, journal, mandats, DatabaseUrl, Db, StoreError};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(name = "broker", version, about = "Aidants Connect : fournisseur d'identité pour les aidants professionnels")]
pub struct Cli {
    /// Sortie JSON (pour les scripts) au lieu du texte.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lance le service HTTP (applique les migrations au démarrage).
    Serve,
    /// Applique les migrations en attente.
    Migrate,
    /// Journal d'audit.
    Journal {
        #[command(subcommand)]
        command: JournalCmd,
    },
    /// Clés du répertoire AC_KEYS_DIR, dont les clés de signature (AC_KEYS_DIR/signing).
    Keys {
        #[command(subcommand)]
        command: KeysCmd,
    },
    /// Commandes de l'opérateur (inscrites au journal, sauf l'enregistrement d'un usager).
    Admin {
        #[command(subcommand)]
        command: AdminCmd,
    },
}

#[derive(Subcommand, Debug)]
enum JournalCmd {
    /// Recalcule toutes les empreintes et signale le premier numéro incohérent ; avec
    /// --checkpoint, vérifie aussi un point de contrôle signé sauvegardé, depuis la base ou
    /// depuis un export (sans base).
    Verify(VerifyArgs),
    /// Signe un point de contrôle de l'arbre actuel du journal (inscrit au journal).
    Checkpoint,
    /// Preuves d'inclusion et de cohérence (JSON, empreintes en hexadécimal).
    Prove {
        #[command(subcommand)]
        command: ProveCmd,
    },
    /// Exporte le journal en JSON Lines (une entrée par ligne), terminé par le point de
    /// contrôle signé qui le couvre.
    Export {
        #[arg(long)]
        output: PathBuf,
    },
    /// La clé du journal (Ed25519, AC_KEYS_DIR/journal-ed25519.key).
    Key {
        #[command(subcommand)]
        command: JournalKeyCmd,
    },
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// Point de contrôle signé sauvegardé (texte de /journal/checkpoint).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Vérifie cet export (« broker journal export ») au lieu de la base.
    #[arg(long, requires = "checkpoint")]
    export: Option<PathBuf>,
    /// Clé de vérification « nom+identifiant+clé » (par défaut : celle de AC_KEYS_DIR).
    #[arg(long, requires = "checkpoint")]
    key: Option<String>,
    /// Preuve d'inclusion (JSON de « broker journal prove inclusion ») à vérifier contre
    /// le point de contrôle.
    #[arg(long, requires = "checkpoint")]
    inclusion: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ProveCmd {
    /// Preuve qu'une entrée est dans l'arbre d'un point de contrôle.
    Inclusion {
        #[arg(long)]
        seq: i64,
        /// Taille du point de contrôle (le dernier par défaut).
        #[arg(long)]
        size: Option<i64>,
    },
    /// Preuve que l'arbre d'un point de contrôle prolonge celui d'un autre.
    Consistency {
        #[arg(long)]
        from: i64,
        #[arg(long)]
        to: i64,
    },
}

#[derive(Subcommand, Debug)]
enum JournalKeyCmd {
    /// Crée la clé du journal (refusé si elle existe).
    Generate,
    /// Affiche la clé de vérification à donner aux auditeurs.
    Show,
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
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

#[derive(Subcommand, Debug)]
enum AdminCmd {
    /// Structures.
    Organisation {
        #[command(subcommand)]
        command: OrganisationCmd,
    },
    /// Aidants.
    Aidant {
        #[command(subcommand)]
        command: AidantCmd,
    },
    /// Cartes et applications TOTP.
    Totp {
        #[command(subcommand)]
        command: TotpCmd,
    },
    /// Clients OpenID Connect (FranceConnect, partenaires).
    Client {
        #[command(subcommand)]
        command: ClientCmd,
    },
    /// Usagers (enregistrement : développement uniquement).
    Usager {
        #[command(subcommand)]
        command: UsagerCmd,
    },
    /// Mandats et autorisations (création : développement uniquement).
    Mandat {
        #[command(subcommand)]
        command: MandatCmd,
    },
    /// Auditeurs : lisent et exportent tout le journal, sans structure.
    Auditor {
        #[command(subcommand)]
        command: AuditorCmd,
    },
}

#[derive(Subcommand, Debug)]
enum AuditorCmd {
    /// Crée un compte d'auditeur (inscrit au journal) ; ajoutez-lui ensuite une
    /// application TOTP (`admin totp enroll-app`).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        first_name: String,
        #[arg(long)]
        last_name: String,
    },
}

#[derive(Subcommand, Debug)]
enum OrganisationCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        siret: String,
        #[arg(long, default_value = "")]
        address: String,
        /// Démarches autorisées, séparées par des virgules (toutes par défaut).
        #[arg(long)]
        demarches: Option<String>,
    },
    List,
}

#[derive(Subcommand, Debug)]
enum AidantCmd {
    Create(AidantCreate),
    List {
        #[arg(long)]
        organisation: Option<i64>,
    },
    Deactivate {
        #[arg(long)]
        email: String,
    },
}

#[derive(Args, Debug)]
struct AidantCreate {
    #[arg(long)]
    organisation: i64,
    #[arg(long)]
    email: String,
    #[arg(long)]
    first_name: String,
    #[arg(long)]
    last_name: String,
    #[arg(long, default_value = "")]
    profession: String,
    /// Donne le rôle de référent de la structure.
    #[arg(long)]
    referent: bool,
}

#[derive(Subcommand, Debug)]
enum TotpCmd {
    /// Importe un stock de cartes (CSV : serial,seed,step,digits ; graine en base32).
    ImportCards { file: PathBuf },
    /// Crée une application TOTP pour un aidant et affiche son secret une seule fois.
    EnrollApp {
        #[arg(long)]
        aidant: String,
    },
}

#[derive(Subcommand, Debug)]
enum ClientCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long = "redirect-uri", num_args = 1.., required = true)]
        redirect_uri: Vec<String>,
        #[arg(long = "post-logout-redirect-uri", num_args = 1..)]
        post_logout_redirect_uri: Vec<String>,
        #[arg(long, default_value = "ES256")]
        id_token_alg: String,
        #[arg(long, default_value = "json")]
        userinfo: String,
        /// `pairwise` (par défaut : un sub propre au client, ou à son secteur) ou `public`
        /// (l'identifiant de l'usager dans le broker, le même pour tous les clients).
        #[arg(long, default_value = "pairwise")]
        subject_type: String,
        /// Un nom d'hôte : les clients pairwise qui le partagent reçoivent les mêmes sub.
        #[arg(long)]
        sector_identifier: Option<String>,
        /// Ajoute la claim act (l'aidant qui agit et sa structure) à l'id_token et à userinfo.
        #[arg(long)]
        act_claim: bool,
    },
    List,
}

#[derive(Subcommand, Debug)]
enum UsagerCmd {
    /// Enregistre un usager comme si FranceConnect l'avait identifié (données de test ;
    /// rien n'est inscrit au journal, aucune action ne correspond).
    Create(UsagerCreate),
}

#[derive(Args, Debug)]
struct UsagerCreate {
    #[arg(long)]
    given_name: String,
    #[arg(long)]
    family_name: String,
    /// AAAA-MM-JJ ; AAAA-MM-00 ou AAAA-00-00 si la date est incomplète.
    #[arg(long)]
    birthdate: String,
    /// female, male ou unspecified.
    #[arg(long)]
    gender: String,
    /// Code commune INSEE ; vide pour une naissance à l'étranger.
    #[arg(long, default_value = "")]
    birthplace: String,
    /// Code pays INSEE (99100 : France).
    #[arg(long)]
    birthcountry: String,
    #[arg(long)]
    email: String,
    /// Nom d'usage.
    #[arg(long)]
    preferred_username: Option<String>,
    /// Le `sub` FranceConnect de l'usager (seule sa version hachée est gardée).
    #[arg(long)]
    fc_sub: String,
}

#[derive(Subcommand, Debug)]
enum MandatCmd {
    /// Crée un mandat pour la structure courante de l'aidant (inscrit au journal).
    Create {
        /// Adresse e-mail de l'aidant qui crée le mandat.
        #[arg(long)]
        aidant: String,
        /// Numéro de l'usager (« broker admin usager create »).
        #[arg(long)]
        usager: i64,
        /// Démarches, séparées par des virgules.
        #[arg(long)]
        demarches: String,
        /// Durée en jours : 1, 31, 182 ou 365.
        #[arg(long)]
        duree: String,
    },
    /// Révoque une autorisation d'un mandat de la structure courante de l'aidant.
    Revoke {
        #[arg(long)]
        aidant: String,
        #[arg(long)]
        autorisation: i64,
    },
    /// Mandats d'une structure, avec leur état (ceux terminés depuis plus d'un an exceptés).
    List {
        #[arg(long)]
        organisation: i64,
    },
}

/// A failure with its exit code.
struct Failure {
    code: i32,
    message: String,
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure { code: if e.is_user_error() { 2 } else { 1 }, message: e.to_string() }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure { code: 1, message: format!("{e:#}") }
    }
}

impl From<SigningError> for Failure {
    fn from(e: SigningError) -> Self {
        Failure { code: if e.is_user_error() { 2 } else { 1 }, message: e.to_string() }
    }
}

fn bad_input(message: impl Into<String>) -> Failure {
    Failure { code: 2, message: message.into() }
}

pub fn run(cli: Cli) -> i32 {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("erreur de configuration : {e:#}");
            return 2;
        }
    };
    init_logging(&settings);
    let unknown = settings::unknown_variables();
    if !unknown.is_empty() {
        tracing::warn!(variables = %unknown.join(", "), "unknown AC_* variables ignored (see docs/configuration.md)");
    }
    let json = cli.json;
    match dispatch(cli, &settings) {
        Ok(()) => 0,
        Err(f) => {
            if json {
                eprintln!("{}", json!({ "error": f.message }));
            } else {
                eprintln!("erreur : {}", f.message);
            }
            f.code
        }
    }
}

fn init_logging(s: &Settings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&s.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if s.log_json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

fn open_db(s: &Settings) -> Result<Db, Failure> {
    let url = DatabaseUrl::parse(&s.database_url);
    let db = Db::open(&url, s.db_pool_size)?;
    let applied = db.migrate()?;
    if !applied.is_empty() {
        tracing::info!(backend = url.backend.name(), count = applied.len(), "migrations applied");
    }
    Ok(db)
}

fn keys(s: &Settings) -> Result<Keys, Failure> {
    Ok(Keys::load(&s.keys_dir, (s.env == Env::Development).then_some(Generate::Development))?)
}

fn out(json: bool, value: serde_json::Value, text: impl FnOnce() -> String) {
    if json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

fn dispatch(cli: Cli, s: &Settings) -> Result<(), Failure> {
    let json = cli.json;
    match cli.command {
        Command::Serve => serve(s),
        Command::Migrate => {
            let url = DatabaseUrl::parse(&s.database_url);
            let db = Db::open(&url, 1)?;
            let applied = db.migrate()?;
            out(json, json!({ "backend": url.backend.name(), "applied": applied }), || {
                if applied.is_empty() {
                    "Base à jour : aucune migration en attente.".into()
                } else {
                    format!("Migrations appliquées : {}", applied.join(", "))
                }
            });
            Ok(())
        }
        Command::Keys { command } => keys_cmd(command, s, json),
        Command::Journal { command: JournalCmd::Verify(args) } if args.checkpoint.is_some() => verify_checkpoint(s, args, json),
        Command::Journal { command: JournalCmd::Verify(_) } => {
            let db = open_db(s)?;
            let started = std::time::Instant::now();
            db.flush_journal();
            let v = db.read_snapshot(journal::verify)?;
            let secs = started.elapsed().as_secs_f64();
            match &v.fault {
                None => {
                    out(json, json!({ "ok": true, "entries": v.verified, "pending": v.pending, "seconds": secs }), || {
                        let pending = if v.pending > 0 {
                            format!(" {} entrée(s) en attente de numérotation.", v.pending)
                        } else {
                            String::new()
                        };
                        format!("Journal intègre : {} entrées vérifiées en {:.2} s.{pending}", v.verified, secs)
                    });
                    Ok(())
                }
                Some(f) => {
                    out(json, json!({ "ok": false, "first_bad_seq": f.seq, "fault": format!("{:?}", f.kind), "entries_before": v.verified }), || {
                        format!("Journal altéré : {f}")
                    });
                    Err(Failure { code: 1, message: format!("journal altéré à partir du numéro {}", f.seq) })
                }
            }
        }
        Command::Journal { command } => journal_cmd(command, s, json),
        Command::Admin { command } => admin_cmd(command, s, json),
    }
}

fn admin_cmd(cmd: AdminCmd, s: &Settings, json: bool) -> Result<(), Failure> {
    match cmd {
        AdminCmd::Organisation { command: OrganisationCmd::Create { name, siret, address, demarches } } => {
            // Check input before touching the database.
            broker_core::validate::siret(&siret).map_err(|e| bad_input(e.0))?;
            if let Some(d) = &demarches {
                broker_core::Demarche::parse_list(d).map_err(|e| bad_input(e.to_string()))?;
            }
            let db = open_db(s)?;
            let o = admin::create_organisation(&db, &name, &siret, &address, demarches.as_deref())?;
            out(json, serde_json::to_value(&o).unwrap_or_default(), || {
                format!("Structure créée : n° {} « {} » (SIRET {}), démarches : {}", o.id, o.name, o.siret, o.allowed_demarches)
            });
        }
        AdminCmd::Organisation { command: OrganisationCmd::List } => {
            let db = open_db(s)?;
            let list = admin::list_organisations(&db)?;
            out(json, serde_json::to_value(&list).unwrap_or_default(), || {
                if list.is_empty() {
                    return "Aucune structure.".into();
                }
                list.iter()
                    .map(|o| format!("{}\t{}\t{}\t{}", o.id, o.siret, o.name, o.allowed_demarches))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AdminCmd::Aidant { command: AidantCmd::Create(a) } => {
            broker_core::validate::email(&a.email).map_err(|e| bad_input(e.0))?;
            let db = open_db(s)?;
            let created = admin::create_aidant(
                &db,
                &admin::NewAidant {
                    organisation_id: a.organisation,
                    email: &a.email,
                    first_name: &a.first_name,
                    last_name: &a.last_name,
                    profession: &a.profession,
                    referent: a.referent,
                },
            )?;
            out(json, serde_json::to_value(&created).unwrap_or_default(), || {
                format!(
                    "Aidant créé : n° {} {} {} <{}>{}",
                    created.id,
                    created.first_name,
                    created.last_name,
                    created.email,
                    if a.referent { " (référent)" } else { "" }
                )
            });
        }
        AdminCmd::Auditor { command: AuditorCmd::Create { email, first_name, last_name } } => {
            broker_core::validate::email(&email).map_err(|e| bad_input(e.0))?;
            let db = open_db(s)?;
            let a = broker_store::audit::create_auditor(&db, &email, &first_name, &last_name)?;
            out(json, serde_json::json!({ "id": a.id, "email": a.email }), || format!("Auditeur créé : n° {} ({})", a.id, a.email));
        }
        AdminCmd::Aidant { command: AidantCmd::List { organisation } } => {
            let db = open_db(s)?;
            let list = admin::list_aidants(&db, organisation)?;
            out(json, serde_json::to_value(&list).unwrap_or_default(), || {
                if list.is_empty() {
                    return "Aucun aidant.".into();
                }
                list.iter()
                    .map(|a| {
                        let roles: Vec<String> = a.memberships.iter().map(|(o, r)| format!("{r}@{o}")).collect();
                        format!(
                            "{}\t{}\t{} {}\t{}\t{}",
                            a.aidant.id,
                            a.aidant.email,
                            a.aidant.first_name,
                            a.aidant.last_name,
                            if a.aidant.active { "actif" } else { "désactivé" },
                            roles.join(",")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AdminCmd::Aidant { command: AidantCmd::Deactivate { email } } => {
            broker_core::validate::email(&email).map_err(|e| bad_input(e.0))?;
            let db = open_db(s)?;
            let a = admin::deactivate_aidant(&db, &email)?;
            out(json, serde_json::to_value(&a).unwrap_or_default(), || format!("Aidant désactivé : {}", a.email));
        }
        AdminCmd::Totp { command: TotpCmd::ImportCards { file } } => {
            let cards = read_cards(&file)?;
            let db = open_db(s)?;
            let sealer = Sealer::new(&keys(s)?.seal);
            let n = admin::import_cards(&db, &sealer, &cards)?;
            out(json, json!({ "imported": n }), || format!("{n} cartes importées."));
        }
        AdminCmd::Totp { command: TotpCmd::EnrollApp { aidant } } => {
            broker_core::validate::email(&aidant).map_err(|e| bad_input(e.0))?;
            let db = open_db(s)?;
            let sealer = Sealer::new(&keys(s)?.seal);
            let (a, seed) = admin::enroll_app(&db, &sealer, &aidant)?;
            let uri = seed.otpauth_uri(broker_core::totp::APP_STEP, broker_core::totp::DIGITS, &a.email);
            out(json, json!({ "aidant": a.email, "secret": seed.base32(), "otpauth_uri": uri }), || {
                format!(
                    "Application TOTP créée pour {}.\nSecret (affiché une seule fois) : {}\nURI à scanner : {}",
                    a.email,
                    seed.base32(),
                    uri
                )
            });
        }
        AdminCmd::Client {
            command:
                ClientCmd::Create { name, redirect_uri, post_logout_redirect_uri, id_token_alg, userinfo, subject_type, sector_identifier, act_claim },
        } => {
            let n = NewClient::validate(&name, &redirect_uri, &post_logout_redirect_uri, &id_token_alg, &userinfo)
                .and_then(|n| n.with_subject(&subject_type, sector_identifier.as_deref()))
                .map_err(|e| bad_input(e.0))?
                .with_act_claim(act_claim);
            let db = open_db(s)?;
            let sealer = Sealer::new(&keys(s)?.seal);
            let c = admin::create_client(&db, &sealer, &n)?;
            out(
                json,
                json!({ "client_id": c.client_id, "client_secret": n.secret.expose(), "name": c.name,
                        "redirect_uris": c.redirect_uri_list(), "post_logout_redirect_uris": c.post_logout_uri_list(),
                        "id_token_alg": c.id_token_alg, "userinfo": c.userinfo_format,
                        "subject_type": c.subject_type, "sector_identifier": c.sector_identifier, "act_claim": c.act_claim }),
                || {
                    format!(
                        "Client enregistré : {}\nclient_id : {}\nclient_secret (affiché une seule fois) : {}",
                        c.name,
                        c.client_id,
                        n.secret.expose()
                    )
                },
            );
        }
        AdminCmd::Usager { command: UsagerCmd::Create(u) } => usager_create(u, s, json)?,
        AdminCmd::Mandat { command } => mandat_cmd(command, s, json)?,
        AdminCmd::Client { command: ClientCmd::List } => {
            let db = open_db(s)?;
            let list = admin::list_clients(&db)?;
            out(json, serde_json::to_value(&list).unwrap_or_default(), || {
                if list.is_empty() {
                    return "Aucun client.".into();
                }
                list.iter()
                    .map(|c| {
                        let subject = match &c.sector_identifier {
                            Some(sector) => format!("{} ({sector})", c.subject_type),
                            None => c.subject_type.clone(),
                        };
                        let act = if c.act_claim { "act" } else { "-" };
                        format!("{}\t{}\t{}\t{subject}\t{act}\t{}", c.client_id, c.name, c.id_token_alg, c.redirect_uri_list().join(" "))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}

/// Usagers and mandats made by hand skip FranceConnect and the usager's signature: for
/// test and demonstration databases only.
fn development_only(s: &Settings, command: &str) -> Result<(), Failure> {
    if s.env == Env::Production {
        return Err(bad_input(format!(
            "« broker admin {command} » est réservé au développement : en production, un mandat se crée avec l'usager, \
             identifié par FranceConnect, dans l'espace aidant"
        )));
    }
    Ok(())
}

fn usager_create(u: UsagerCreate, s: &Settings, json: bool) -> Result<(), Failure> {
    development_only(s, "usager create")?;
    let pivot = IdentitePivot {
        given_name: u.given_name,
        family_name: u.family_name,
        preferred_username: u.preferred_username.filter(|p| !p.trim().is_empty()),
        birthdate: u.birthdate,
        gender: u.gender,
        birthplace: u.birthplace,
        birthcountry: u.birthcountry,
        email: u.email,
    }
    .validate()
    .map_err(|e| bad_input(e.0))?;
    let fc_sub = broker_core::validate::label("--fc-sub", &u.fc_sub, 256).map_err(|e| bad_input(e.0))?;
    let keys = keys(s)?;
    let db = open_db(s)?;
    let sub = usager_key(&keys.usager_salt, &fc_sub);
    let id = db.write(|c| mandats::upsert_usager(c, &sub, &pivot, Timestamp::now()))?;
    out(json, json!({ "id": id, "sub": sub }), || {
        format!("Usager enregistré : n° {id} {} {}\nIdentifiant (sub) : {sub}", pivot.given_name, pivot.family_name)
    });
    Ok(())
}

/// The active aidant with this e-mail and their current organisation.
fn acting_aidant(db: &Db, email: &str) -> Result<(admin::Aidant, i64), Failure> {
    let a = db.read(|c| admin::find_aidant_by_email(c, email))?;
    if !a.active {
        return Err(bad_input(format!("l'aidant {} est désactivé", a.email)));
    }
    let org = a
        .current_organisation_id
        .ok_or_else(|| bad_input(format!("l'aidant {} n'a pas de structure courante", a.email)))?;
    Ok((a, org))
}

fn status_key(s: Status) -> &'static str {
    match s {
        Status::Active => "active",
        Status::Expired => "expired",
        Status::Revoked => "revoked",
    }
}

fn mandat_json(m: &MandatFacts, status: Status, now: Timestamp) -> serde_json::Value {
    json!({
        "mandat_id": m.id,
        "organisation_id": m.organisation_id,
        "usager_id": m.usager_id,
        "created_at": m.created_at.rfc3339(),
        "expires_at": m.expires_at.rfc3339(),
        "status": status_key(status),
        "autorisations": m.autorisations.iter().map(|a| json!({
            "id": a.id,
            "demarche": a.demarche.key(),
            "status": status_key(a.status(m.expires_at, now)),
            "revoked_at": a.revoked_at.map(|r| r.rfc3339()),
        })).collect::<Vec<_>>(),
    })
}

fn mandat_line(m: &MandatFacts, status: Status, now: Timestamp) -> String {
    let auts: Vec<String> = m
        .autorisations
        .iter()
        .map(|a| match a.status(m.expires_at, now) {
            Status::Active => format!("{} (n° {})", a.demarche, a.id),
            other => format!("{} (n° {}, {})", a.demarche, a.id, other.label()),
        })
        .collect();
    format!(
        "{}\tusager n° {}\t{}\texpire le {}\t{}",
        m.id,
        m.usager_id,
        status.label(),
        m.expires_at.french_date(),
        auts.join(", ")
    )
}

fn mandat_cmd(cmd: MandatCmd, s: &Settings, json: bool) -> Result<(), Failure> {
    match cmd {
        MandatCmd::Create { aidant, usager, demarches, duree } => {
            development_only(s, "mandat create")?;
            let demarches = Demarche::parse_list(&demarches).map_err(|e| bad_input(e.to_string()))?;
            let duree = duree
                .trim()
                .parse::<i64>()
                .ok()
                .and_then(Duree::from_days)
                .ok_or_else(|| bad_input(format!("durée refusée : « {duree} » (1, 31, 182 ou 365 jours)")))?;
            broker_core::validate::email(&aidant).map_err(|e| bad_input(e.0))?;
            let db = open_db(s)?;
            let (a, org) = acting_aidant(&db, &aidant)?;
            broker_store::idp::usager_sub(&db, broker_core::capability::UsagerId(usager)).map_err(|e| match e {
                StoreError::NotFound(_) => bad_input(format!("usager inconnu : {usager}")),
                other => other.into(),
            })?;
            let n = mandats::NewMandat { organisation_id: org, usager_id: usager, aidant_id: a.id, demarches, duree };
            let m = mandats::create_mandat(&db, &n, Timestamp::now())?;
            let auts: Vec<serde_json::Value> = m.autorisations.iter().map(|(id, d)| json!({ "id": id, "demarche": d.key() })).collect();
            out(
                json,
                json!({ "mandat_id": m.mandat_id, "organisation_id": org, "usager_id": usager,
                        "duree_jours": m.plan.duree.days(), "expires_at": m.plan.expires_at.rfc3339(),
                        "autorisations": auts, "superseded": m.plan.superseded }),
                || {
                    let list: Vec<String> = m.autorisations.iter().map(|(id, d)| format!("{d} (n° {id})")).collect();
                    let mut text = format!(
                        "Mandat créé : n° {} pour l'usager n° {usager}, structure n° {org}, expire le {}\nAutorisations : {}",
                        m.mandat_id,
                        m.plan.expires_at.french_date(),
                        list.join(", ")
                    );
                    if !m.plan.superseded.is_empty() {
                        let ids: Vec<String> = m.plan.superseded.iter().map(|i| format!("n° {i}")).collect();
                        text.push_str(&format!("\nAutorisations remplacées (révoquées) : {}", ids.join(", ")));
                    }
                    text
                },
            );
        }
        MandatCmd::Revoke { aidant, autorisation } => {
            broker_core::validate::email(&aidant).map_err(|e| bad_input(e.0))?;
            let db = open_db(s)?;
            let (a, org) = acting_aidant(&db, &aidant)?;
            let now = Timestamp::now();
            let list = mandats::list_for_organisation(&db, org, now)?;
            let (m, aut) = list
                .iter()
                .find_map(|(m, _)| m.autorisations.iter().find(|x| x.id == autorisation).map(|x| (m, x)))
                .ok_or_else(|| bad_input(format!("autorisation inconnue dans la structure n° {org} : {autorisation}")))?;
            let (mandat_id, demarche) = (m.id, aut.demarche);
            mandats::revoke_autorisation(&db, autorisation, a.id, now)?;
            let later = Timestamp::now();
            let status = mandats::list_for_organisation(&db, org, later)?
                .into_iter()
                .find(|(m, _)| m.id == mandat_id)
                .map(|(_, st)| st)
                .unwrap_or(Status::Revoked);
            out(
                json,
                json!({ "autorisation_id": autorisation, "mandat_id": mandat_id, "demarche": demarche.key(),
                        "mandat_status": status_key(status) }),
                || format!("Autorisation n° {autorisation} révoquée ({demarche}, mandat n° {mandat_id}, désormais {})", status.label()),
            );
        }
        MandatCmd::List { organisation } => {
            let db = open_db(s)?;
            db.read(|c| admin::find_organisation(c, organisation))?;
            let now = Timestamp::now();
            let list = mandats::list_for_organisation(&db, organisation, now)?;
            out(json, serde_json::Value::Array(list.iter().map(|(m, st)| mandat_json(m, *st, now)).collect()), || {
                if list.is_empty() {
                    return "Aucun mandat.".into();
                }
                list.iter().map(|(m, st)| mandat_line(m, *st, now)).collect::<Vec<_>>().join("\n")
            });
        }
    }
    Ok(())
}

/// One line per algorithm for `keys list`: the key that signs it now, or what to do.
fn signing_summary(set: &KeySet, alg: Alg, now: Timestamp) -> String {
    match set.signing_key_for(alg, now) {
        Some(k) => format!("{} : signe avec {}", alg.key(), k.kid()),
        None if set.has(alg) => format!("{} : aucune clé ne signe maintenant", alg.key()),
        None => format!("{} : aucune clé (« broker keys generate --alg {} » crée la première)", alg.key(), alg.key()),
    }
}

fn key_line(k: &KeyInfo) -> String {
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
fn keys_cmd(cmd: KeysCmd, s: &Settings, json: bool) -> Result<(), Failure> {
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
fn signing_keys(s: &Settings, db: Option<&Db>) -> Result<KeyStore, Failure> {
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
fn warn_unsigned_clients(db: &Db, keys: &KeySet) {
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

/// Reads a card stock file: header `serial,seed,step,digits`, one card per line.
fn read_cards(path: &PathBuf) -> Result<Vec<CardRecord>, Failure> {
    let file = std::fs::File::open(path).map_err(|e| bad_input(format!("fichier illisible : {} ({e})", path.display())))?;
    let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(file);
    let headers = rdr.headers().map_err(|e| bad_input(format!("CSV illisible : {e}")))?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .ok_or_else(|| bad_input(format!("colonne « {name} » absente (en-tête attendu : serial,seed,step,digits)")))
    };
    let (i_serial, i_seed, i_step, i_digits) = (col("serial")?, col("seed")?, col("step")?, col("digits")?);
    let mut cards = Vec::new();
    for (n, rec) in rdr.records().enumerate() {
        let line = n + 2;
        let rec = rec.map_err(|e| bad_input(format!("ligne {line} : {e}")))?;
        let get = |i: usize| rec.get(i).unwrap_or("");
        let card = CardRecord::parse(get(i_serial), get(i_seed), get(i_step), get(i_digits))
            .map_err(|e| bad_input(format!("ligne {line} : {}", e.0)))?;
        cards.push(card);
    }
    Ok(cards)
}

/// Where FranceConnect sends the usager back, and where its logout ends.
fn fc_redirect_uri(s: &Settings) -> String {
    format!("{}/mandats/nouveau/franceconnect/retour", s.issuer)
}

fn fc_post_logout_redirect_uri(s: &Settings) -> String {
    format!("{}/mandats/nouveau", s.issuer)
}

/// The broker's FranceConnect registration: `AC_FC_*`, or in development the built-in
/// simulator at `{AC_ISSUER}/simulateur-franceconnect/api/v2`.
fn franceconnect(s: &Settings, keys: &Keys) -> Option<broker_web::franceconnect::FcSettings> {
    let (issuer, client_id, client_secret) = match (&s.franceconnect, s.env) {
        (Some(fc), _) => (fc.issuer.clone(), fc.client_id.clone(), fc.client_secret.clone()),
        (None, Env::Development) => (
            fcsim::provider::ProviderSettings::issuer_under(&s.issuer),
            crate::demo::FC_SIM_CLIENT_ID.to_owned(),
            crate::demo::fc_sim_client_secret(&keys.seal),
        ),
        (None, Env::Production) => return None,
    };
    Some(broker_web::franceconnect::FcSettings {
        issuer,
        client_id,
        client_secret,
        redirect_uri: fc_redirect_uri(s),
        post_logout_redirect_uri: fc_post_logout_redirect_uri(s),
    })
}

/// In development only: the demonstration e-service at `/demo` (FranceConnect's core
/// played against this broker with the demo client), and the FranceConnect provider
/// simulator at `/simulateur-franceconnect/api/v2`, where the broker is registered as
/// [`crate::demo::FC_SIM_CLIENT_ID`].
fn demo_service(s: &Settings, keys: &Keys) -> Option<Arc<dyn Fn(&mut actix_web::web::ServiceConfig) + Send + Sync>> {
    if s.env != Env::Development {
        return None;
    }
    let demo = fcsim::demo::DemoSettings {
        issuer: s.issuer.clone(),
        client_id: crate::demo::DEMO_CLIENT_ID.to_owned(),
        client_secret: crate::demo::demo_client_secret(&keys.seal),
    };
    let simulator = fcsim::provider::ProviderSettings::new(
        fcsim::provider::ProviderSettings::issuer_under(&s.issuer),
        crate::demo::FC_SIM_CLIENT_ID,
        crate::demo::fc_sim_client_secret(&keys.seal),
        vec![fc_redirect_uri(s)],
        vec![fc_post_logout_redirect_uri(s)],
    )
    .with_key_seed(&crate::demo::fc_sim_key_seed(&keys.seal));
    Some(Arc::new(move |cfg: &mut actix_web::web::ServiceConfig| {
        fcsim::demo::configure(cfg, demo.clone());
        fcsim::provider::configure(cfg, simulator.clone());
    }))
}

fn serve(s: &Settings) -> Result<(), Failure> {
    if s.env == Env::Production && s.smtp_url.is_none() {
        return Err(bad_input("AC_SMTP_URL est obligatoire en production (envoi des liens de connexion)"));
    }
    let keys = keys(s)?;
    let journal_key = Arc::new(journal_key(s)?);
    // Production checks the signing keys before touching the database.
    let checked = if s.env == Env::Production { Some(signing_keys(s, None)?) } else { None };
    let db = open_db(s)?;
    let signing = match checked {
        Some(store) => store,
        None => signing_keys(s, Some(&db))?,
    };
    warn_unsigned_clients(&db, &signing.keys());
    let cache: Arc<dyn Cache> = match &s.redis_url {
        Some(url) => Arc::new(Redis::new(url, &s.cache_prefix).map_err(|e| Failure { code: 2, message: e.to_string() })?),
        None => {
            if s.env == Env::Production {
                tracing::warn!("REDIS_URL unset: in-process cache, state is not shared between instances");
            }
            Arc::new(InProcess::new())
        }
    };
    if s.env == Env::Development {
        crate::demo::seed_and_print(&db, &keys, s).context("données de démonstration")?;
    }
    if !s.assets_dir.join("dsfr.min.css").exists() {
        tracing::warn!(dir = %s.assets_dir.display(), "DSFR assets not found: run `npm ci` (see README)");
    }
    db.sweep_pending_journal_entries();
    if s.journal_checkpoint_seconds > 0 {
        start_checkpoints(db.clone(), journal_key.clone(), s.journal_checkpoint_seconds);
    }
    start_purges(db.clone());
    let mailer = broker_web::mail::Mailer::from_settings(s.smtp_url.as_deref(), &s.mail_from, &s.outbox_dir)
        .map_err(|e| Failure { code: 2, message: e.to_string() })?;
    let passkeys = broker_web::passkeys::Passkeys::new(&s.issuer).map_err(|e| Failure { code: 2, message: format!("AC_ISSUER : {}", e.detail()) })?;
    let fc_settings = franceconnect(s, &keys);
    let fc_client = match &fc_settings {
        Some(fc) => Some(Arc::new(
            broker_web::franceconnect::FcClient::new(fc.clone()).map_err(|e| bad_input(format!("AC_FC_ISSUER : {e}")))?,
        )),
        None => None,
    };
    let state = broker_web::AppState {
        db,
        cache,
        issuer: s.issuer.clone(),
        sealer: Sealer::new(&keys.seal),
        mailer: Arc::new(mailer),
        passkeys: Arc::new(passkeys),
        clock: match std::env::var_os("AC_DEV_CLOCK_OFFSET_FILE") {
            Some(path) if s.env == Env::Development => Arc::new(crate::devclock::OffsetFileClock { path: path.into() }),
            Some(_) => return Err(bad_input("AC_DEV_CLOCK_OFFSET_FILE n'est accepté qu'en développement")),
            None => Arc::new(broker_core::time::SystemClock),
        },
        signing: Arc::new(signing),
        development: s.env == Env::Development,
        behind_proxy: s.behind_proxy,
        franceconnect: fc_client,
        usager_salt: keys.usager_salt,
        journal_key: Some(journal_key),
        clients: Arc::new(broker_store::idp::ClientCache::new(std::time::Duration::from_secs(s.client_cache_seconds))),
    };
    let opts = broker_web::ServeOptions {
        listen: s.listen.clone(),
        assets_dir: s.assets_dir.clone(),
        workers: s.workers,
        session_key: keys.session,
        extra: demo_service(s, &keys),
    };
    let fc_issuer = match fc_settings {
        Some(fc) => fc.issuer,
        None => {
            tracing::warn!("AC_FC_ISSUER unset: usagers cannot be identified through FranceConnect");
            "(none)".to_owned()
        }
    };
    let signing_kids = state
        .signing
        .keys()
        .signing_keys(Timestamp::now())
        .iter()
        .map(|k| format!("{}={}", k.alg().key(), k.kid()))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(backend = state.db.backend().name(), cache = state.cache.kind(), issuer = %s.issuer, signing_kids = %signing_kids, franceconnect = %fc_issuer, "starting");
    actix_web::rt::System::new()
        .block_on(broker_web::serve(state, opts))
        .map_err(|e| Failure { code: 1, message: format!("serveur HTTP : {e} ({})", s.listen) })
}

// ---- the journal: key, checkpoints, proofs, export, stand-alone verifier ------------------

/// The journal key: generated in development when missing, required in production.
fn journal_key(s: &Settings) -> Result<JournalKey, Failure> {
    let generate = (s.env == Env::Development).then_some(Generate::Development);
    crate::keys::load_journal_key(&s.keys_dir, &s.journal_origin, generate).map_err(|e| bad_input(format!("{e:#}")))
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn journal_cmd(cmd: JournalCmd, s: &Settings, json: bool) -> Result<(), Failure> {
    match cmd {
        JournalCmd::Verify(_) => unreachable!("handled by dispatch"),
        JournalCmd::Key { command: JournalKeyCmd::Generate } => {
            let (key, path) = crate::keys::generate_journal_key(&s.keys_dir, &s.journal_origin).map_err(|e| bad_input(format!("{e:#}")))?;
            let v = key.verifier().to_string();
            out(json, json!({ "path": path, "key": v }), || {
                format!("Clé du journal créée : {}\nSauvegardez-la dans votre coffre.\nClé de vérification (à publier) : {v}", path.display())
            });
        }
        JournalCmd::Key { command: JournalKeyCmd::Show } => {
            let key = crate::keys::load_journal_key(&s.keys_dir, &s.journal_origin, None).map_err(|e| bad_input(format!("{e:#}")))?;
            let v = key.verifier().to_string();
            out(json, json!({ "key": v }), || v.clone());
        }
        JournalCmd::Checkpoint => {
            let key = journal_key(s)?;
            let db = open_db(s)?;
            let made = checkpoints::create(&db, &key, Timestamp::now(), false)?.expect("made on demand");
            let cp = &made.checkpoint;
            out(json, json!({ "size": cp.size, "root_hash": cp.root_hash, "created": made.created, "checkpoint": cp.note }), || cp.note.trim_end().to_owned());
        }
        JournalCmd::Prove { command } => {
            let db = open_db(s)?;
            db.flush_journal();
            let value = match command {
                ProveCmd::Inclusion { seq, size } => serde_json::to_value(db.read(|c| checkpoints::inclusion(c, seq, size))?),
                ProveCmd::Consistency { from, to } => serde_json::to_value(db.read(|c| checkpoints::consistency(c, from, to))?),
            }
            .unwrap_or_default();
            out(json, value.clone(), || pretty(&value));
        }
        JournalCmd::Export { output } => {
            let key = journal_key(s)?;
            let db = open_db(s)?;
            let made = checkpoints::create(&db, &key, Timestamp::now(), false)?.expect("made on demand");
            let file = std::fs::File::create(&output).map_err(|e| bad_input(format!("{} : {e}", output.display())))?;
            let mut w = std::io::BufWriter::new(file);
            let n = db.read_snapshot(|c| checkpoints::export(c, &made.checkpoint, &mut w))?;
            use std::io::Write;
            w.flush().map_err(|e| Failure { code: 1, message: format!("{} : {e}", output.display()) })?;
            checkpoints::journal_export(&db, n, "cli")?;
            out(json, json!({ "output": output, "entries": n, "root_hash": made.checkpoint.root_hash, "checkpoint": made.checkpoint.note }), || {
                format!("Journal exporté : {n} entrées dans {}, couvertes par le point de contrôle :\n{}", output.display(), made.checkpoint.note.trim_end())
            });
        }
    }
    Ok(())
}

/// A refused audit: printed, exit code 1.
fn refused(json: bool, f: AuditFailure) -> Failure {
    let kind = match &f {
        AuditFailure::Edited { .. } => "edited",
        AuditFailure::Deleted { .. } => "deleted",
        AuditFailure::Reordered { .. } => "reordered",
        AuditFailure::Truncated { .. } => "truncated",
        AuditFailure::Fork { .. } => "fork",
        AuditFailure::Checkpoint(_) => "checkpoint",
        AuditFailure::ForgedProof(_) => "forged_proof",
        AuditFailure::Unreadable { .. } => "unreadable",
    };
    let message = f.to_string();
    out(json, json!({ "ok": false, "failure": kind, "message": message }), || format!("Journal refusé : {message}"));
    Failure { code: 1, message }
}

/// `broker journal verify --checkpoint FILE [--export FILE] [--key KEY] [--inclusion FILE]`.
fn verify_checkpoint(s: &Settings, args: VerifyArgs, json: bool) -> Result<(), Failure> {
    let path = args.checkpoint.expect("checked by dispatch");
    let note = std::fs::read_to_string(&path).map_err(|e| bad_input(format!("{} : {e}", path.display())))?;
    let vkey = match &args.key {
        Some(k) => VerifierKey::parse(k).map_err(|e| bad_input(e.to_string()))?,
        None => crate::keys::load_journal_key(&s.keys_dir, &s.journal_origin, None)
            .map_err(|e| bad_input(format!("{e:#} ; ou donnez la clé de vérification avec --key")))?
            .verifier(),
    };
    let started = std::time::Instant::now();
    let cp = vkey.verify(&note).map_err(|e| refused(json, AuditFailure::Checkpoint(e)))?;
    if let Some(p) = &args.inclusion {
        check_inclusion_file(p, &cp).map_err(|f| refused(json, f))?;
    }
    let (entries, newer) = match &args.export {
        Some(export) => (audit_export(export, &cp, &vkey).map_err(|f| match f {
            Audited::Refused(f) => refused(json, f),
            Audited::Error(e) => e,
        })?, None),
        None => audit_live(s, &cp, &vkey).map_err(|f| match f {
            Audited::Refused(f) => refused(json, f),
            Audited::Error(e) => e,
        })?,
    };
    let secs = started.elapsed().as_secs_f64();
    out(
        json,
        json!({ "ok": true, "checkpoint_size": cp.size, "root_hash": hex::encode(cp.root), "entries": entries, "consistent_with": newer, "inclusion": args.inclusion.is_some(), "seconds": secs }),
        || {
            let mut t = format!(
                "Point de contrôle valide (taille {}, signé par {}) ; {entries} entrées recalculées en {secs:.2} s depuis {} : l'arbre de taille {} a bien la racine signée.",
                cp.size,
                vkey,
                if args.export.is_some() { "l'export" } else { "la base" },
                cp.size
            );
            if let Some(n) = newer {
                t.push_str(&format!(" Le journal actuel (point de contrôle de taille {n}) prolonge ce point de contrôle (preuve de cohérence vérifiée)."));
            }
            if args.inclusion.is_some() {
                t.push_str(" Preuve d'inclusion vérifiée.");
            }
            t
        },
    );
    Ok(())
}

enum Audited {
    Refused(AuditFailure),
    Error(Failure),
}

impl From<StoreError> for Audited {
    fn from(e: StoreError) -> Self {
        Audited::Error(e.into())
    }
}

/// Checks an inclusion proof (JSON of `broker journal prove inclusion`) against the
/// checkpoint alone.
fn check_inclusion_file(path: &PathBuf, cp: &Checkpoint) -> Result<(), AuditFailure> {
    let forged = |m: String| AuditFailure::ForgedProof(m);
    let text = std::fs::read_to_string(path).map_err(|e| forged(format!("{} illisible ({e})", path.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| forged(format!("JSON illisible ({e})")))?;
    let seq = v["seq"].as_i64().ok_or_else(|| forged("« seq » absent".into()))?;
    let size = v["tree_size"].as_u64().ok_or_else(|| forged("« tree_size » absent".into()))?;
    let hash = |h: &serde_json::Value| h.as_str().and_then(broker_core::journal::parse_hash);
    let leaf = hash(&v["leaf_hash"]).ok_or_else(|| forged("« leaf_hash » : 64 chiffres hexadécimaux attendus".into()))?;
    let proof: Vec<merkle::Hash> = v["proof"]
        .as_array()
        .ok_or_else(|| forged("« proof » absent".into()))?
        .iter()
        .map(|h| hash(h).ok_or_else(|| forged("« proof » : empreintes de 64 chiffres hexadécimaux attendues".into())))
        .collect::<Result<_, _>>()?;
    if size != cp.size {
        return Err(forged(format!("la preuve porte sur l'arbre de taille {size}, le point de contrôle sur l'arbre de taille {}", cp.size)));
    }
    if seq < 1 {
        return Err(forged(format!("numéro d'entrée {seq} invalide")));
    }
    merkle::verify_inclusion(&leaf, (seq - 1) as u64, size, &proof, &cp.root).map_err(|e| {
        forged(format!("la preuve d'inclusion de l'entrée n° {seq} ne mène pas à la racine signée de l'arbre de taille {size} ({e})"))
    })
}

/// Audits an export file against the checkpoint, without any database.
fn audit_export(path: &PathBuf, cp: &Checkpoint, vkey: &VerifierKey) -> Result<i64, Audited> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| Audited::Error(bad_input(format!("{} : {e}", path.display()))))?;
    let mut audit = Audit::new(cp.size);
    let mut final_note: Option<(usize, String)> = None;
    let mut going = true;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| Audited::Refused(AuditFailure::Unreadable { line: n, reason: e.to_string() }))?;
        if let Some((at, _)) = &final_note {
            return Err(Audited::Refused(AuditFailure::Unreadable { line: n, reason: format!("ligne après le point de contrôle final (ligne {at})") }));
        }
        match parse_export_line(&line).map_err(|reason| Audited::Refused(AuditFailure::Unreadable { line: n, reason }))? {
            ExportLine::Checkpoint(note) => final_note = Some((n, note)),
            ExportLine::Entry { record, canonical } => {
                if going {
                    going = audit.push(&record, canonical);
                }
            }
        }
    }
    let (entries, root) = audit.finish(cp).map_err(Audited::Refused)?;
    let Some((_, note)) = final_note else {
        return Err(Audited::Refused(AuditFailure::Unreadable {
            line: entries as usize + 1,
            reason: "export tronqué : la dernière ligne, le point de contrôle qui le couvre, manque".into(),
        }));
    };
    let own = vkey.verify(&note).map_err(|e| Audited::Refused(AuditFailure::Checkpoint(e)))?;
    if (entries as u64) < own.size {
        return Err(Audited::Refused(AuditFailure::Truncated { entries, size: own.size }));
    }
    if entries as u64 > own.size {
        return Err(Audited::Refused(AuditFailure::Unreadable {
            line: own.size as usize + 1,
            reason: format!("l'export compte {entries} entrées, son point de contrôle n'en couvre que {}", own.size),
        }));
    }
    if root != own.root {
        return Err(Audited::Refused(AuditFailure::Fork { size: own.size, expected: hex::encode(own.root), found: hex::encode(root) }));
    }
    Ok(entries)
}

/// Audits the live database against the checkpoint; with a newer checkpoint stored, also
/// checks the consistency proof from the audited checkpoint to it.
fn audit_live(s: &Settings, cp: &Checkpoint, vkey: &VerifierKey) -> Result<(i64, Option<i64>), Audited> {
    const PAGE: i64 = 10_000;
    let db = open_db(s).map_err(Audited::Error)?;
    db.flush_journal();
    let result = db.read_snapshot(|c| {
        let mut audit = Audit::new(cp.size);
        let mut after = 0;
        'pages: loop {
            let rows = journal::page(c, after, PAGE)?;
            let Some(last) = rows.last().map(|r| r.seq) else { break };
            for r in &rows {
                if !audit.push(r, true) {
                    break 'pages;
                }
            }
            after = last;
        }
        let stored_same = checkpoints::by_size(c, cp.size as i64)?;
        let latest = checkpoints::latest(c)?;
        let outcome = audit.finish(cp);
        let newer = match (&outcome, latest) {
            (Ok(_), Some(l)) if l.size as u64 > cp.size => Some((l.clone(), checkpoints::leaf_hashes(c, l.size)?)),
            _ => None,
        };
        Ok((outcome, stored_same, newer))
    })?;
    let (outcome, stored_same, newer) = result;
    let (entries, _) = outcome.map_err(Audited::Refused)?;
    if let Some(st) = stored_same {
        if st.root() != cp.root {
            return Err(Audited::Refused(AuditFailure::Fork { size: cp.size, expected: hex::encode(cp.root), found: st.root_hash }));
        }
    }
    let Some((latest, leaves)) = newer else { return Ok((entries, None)) };
    let signed = vkey.verify(&latest.note).map_err(|e| Audited::Refused(AuditFailure::Checkpoint(e)))?;
    let proof = merkle::consistency_proof(&leaves, cp.size);
    merkle::verify_consistency(cp.size, signed.size, &cp.root, &signed.root, &proof).map_err(|e| {
        Audited::Refused(AuditFailure::ForgedProof(format!(
            "pas de preuve de cohérence entre les points de contrôle de taille {} et {} ({e})",
            cp.size, signed.size
        )))
    })?;
    Ok((entries, Some(latest.size)))
}

/// Every ten minutes, forgets the uses of access tokens that have expired
/// ([`broker_store::idp::purge_token_uses`]).
fn start_purges(db: Db) {
    let keep = broker_store::oidc_state::MAX_ACCESS_TOKEN_TTL_SECONDS as i64 + 60;
    let spawned = std::thread::Builder::new().name("purges".into()).spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(600));
        match broker_store::idp::purge_token_uses(&db, Timestamp::now().plus_seconds(-keep)) {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "expired token uses purged"),
            Err(e) => tracing::error!(error = %e, "purge of token uses failed"),
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "purges: task not started");
    }
}

/// The server's periodic checkpoints: one at start, then every `every` seconds when
/// entries other than checkpoints were added.
fn start_checkpoints(db: Db, key: Arc<JournalKey>, every: u64) {
    let spawned = std::thread::Builder::new().name("journal-checkpoints".into()).spawn(move || loop {
        match checkpoints::create(&db, &key, Timestamp::now(), true) {
            Ok(Some(m)) if m.created => tracing::info!(size = m.checkpoint.size, root = %m.checkpoint.root_hash, "journal checkpoint signed"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "journal checkpoint failed"),
        }
        std::thread::sleep(std::time::Duration::from_secs(every));
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "journal checkpoints: task not started");
    }
}
