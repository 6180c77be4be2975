//! `broker admin`: structures, aidants, auditors, TOTP cards and OIDC clients.

use super::*;

#[derive(Subcommand, Debug)]
pub(super) enum AdminCmd {
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
pub(super) enum AuditorCmd {
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
pub(super) enum OrganisationCmd {
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
pub(super) enum AidantCmd {
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
pub(super) struct AidantCreate {
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
pub(super) enum TotpCmd {
    /// Importe un stock de cartes (CSV : serial,seed,step,digits ; graine en base32).
    ImportCards { file: PathBuf },
    /// Crée une application TOTP pour un aidant et affiche son secret une seule fois.
    EnrollApp {
        #[arg(long)]
        aidant: String,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum ClientCmd {
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

pub(super) fn admin_cmd(cmd: AdminCmd, s: &Settings, json: bool) -> Result<(), Failure> {
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
            out_list(json, &list, "Aucune structure.", |o| format!("{}\t{}\t{}\t{}", o.id, o.siret, o.name, o.allowed_demarches));
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
            out_list(json, &list, "Aucun client.", |c| {
                let subject = match &c.sector_identifier {
                    Some(sector) => format!("{} ({sector})", c.subject_type),
                    None => c.subject_type.clone(),
                };
                let act = if c.act_claim { "act" } else { "-" };
                format!("{}\t{}\t{}\t{subject}\t{act}\t{}", c.client_id, c.name, c.id_token_alg, c.redirect_uri_list().join(" "))
            });
        }
    }
    Ok(())
}

/// Usagers and mandats made by hand skip FranceConnect and the usager's signature: for
/// test and demonstration databases only.
pub(super) fn development_only(s: &Settings, command: &str) -> Result<(), Failure> {
    if s.env == Env::Production {
        return Err(bad_input(format!(
            "« broker admin {command} » est réservé au développement : en production, un mandat se crée avec l'usager, \
             identifié par FranceConnect, dans l'espace aidant"
        )));
    }
    Ok(())
}

/// Reads a card stock file: header `serial,seed,step,digits`, one card per line.
pub(super) fn read_cards(path: &PathBuf) -> Result<Vec<CardRecord>, Failure> {
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
