//! Command line: `serve`, `migrate`, `journal verify`, `keys` (key files and signing
//! keys), `jobs` (scheduled jobs and the mail queue) and the operator's `admin` commands. Every admin command and every change of the
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
use broker_store::{admin, capabilities, checkpoints, mandat_changes, DatabaseUrl, Db, StoreError};
use broker_core::capability::{AidantId, AutorisationId};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

mod operator;
mod jobs;
mod journal;
mod keys;
mod mandats;
mod serve;

use operator::*;
use jobs::*;
use journal::*;
use keys::*;
use mandats::*;
use serve::*;

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
    /// Tâches planifiées (rappels, désactivations, avis aux usagers) et file des e-mails.
    Jobs {
        #[command(subcommand)]
        command: JobsCmd,
    },
    /// Commandes de l'opérateur (inscrites au journal, sauf l'enregistrement d'un usager).
    Admin {
        #[command(subcommand)]
        command: AdminCmd,
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

/// A list: JSON with `--json`, else one line per item, or `empty` when there is none.
fn out_list<T: serde::Serialize>(json: bool, list: &[T], empty: &str, line: impl Fn(&T) -> String) {
    out(json, serde_json::to_value(list).unwrap_or_default(), || {
        if list.is_empty() {
            empty.to_owned()
        } else {
            list.iter().map(line).collect::<Vec<_>>().join("\n")
        }
    })
}

fn dispatch(cli: Cli, s: &Settings) -> Result<(), Failure> {
    let json = cli.json;
    match cli.command {
        Command::Serve => serve(s),
        Command::Migrate => {
            let url = DatabaseUrl::parse(&s.database_url);
            let db = Db::open(&url, 1)?;
            let applied = db.migrate()?;
            let tiles = db.read(broker_store::tiles::catch_up)?;
            out(json, json!({ "backend": url.backend.name(), "applied": applied, "journal_tiles_built": tiles }), || {
                let done = if applied.is_empty() {
                    "Base à jour : aucune migration en attente.".to_owned()
                } else {
                    format!("Migrations appliquées : {}", applied.join(", "))
                };
                if tiles > 0 {
                    format!("{done}\nTuiles du journal calculées : {tiles}.")
                } else {
                    done
                }
            });
            Ok(())
        }
        Command::Keys { command } => keys_cmd(command, s, json),
        Command::Jobs { command } => jobs_cmd(command, s, json),
        Command::Journal { command: JournalCmd::Verify(args) } if args.checkpoint.is_some() => verify_checkpoint(s, args, json),
        Command::Journal { command: JournalCmd::Verify(_) } => {
            let db = open_db(s)?;
            let started = std::time::Instant::now();
            let (v, tile_fault) = db.read_snapshot(|c| {
                let v = broker_store::journal::verify(c)?;
                let tiles = if v.fault.is_none() { broker_store::tiles::verify(c, v.verified)? } else { None };
                Ok((v, tiles))
            })?;
            let secs = started.elapsed().as_secs_f64();
            match (&v.fault, tile_fault) {
                (None, Some(f)) => {
                    out(json, json!({ "ok": false, "first_bad_seq": f.first_seq, "fault": "TileMismatch", "tile": f.tile.path(), "entries_before": v.verified }), || {
                        format!("Journal altéré : {f}")
                    });
                    Err(Failure { code: 1, message: format!("tuile du journal altérée : {}", f.tile.path()) })
                }
                (None, None) => {
                    out(json, json!({ "ok": true, "entries": v.verified, "pending": v.pending, "seconds": secs }), || {
                        let pending = if v.pending > 0 {
                            format!(" {} entrée(s) laissée(s) sans numéro par une version antérieure : lancez `broker migrate` pour les numéroter.", v.pending)
                        } else {
                            String::new()
                        };
                        format!("Journal intègre : {} entrées vérifiées en {:.2} s.{pending}", v.verified, secs)
                    });
                    Ok(())
                }
                (Some(f), _) => {
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
