//! `broker admin usager` and `broker admin mandat`.

use super::*;
use broker_store::mandats;

#[derive(Subcommand, Debug)]
pub(super) enum UsagerCmd {
    /// Enregistre un usager comme si FranceConnect l'avait identifié (données de test ;
    /// rien n'est inscrit au journal, aucune action ne correspond).
    Create(UsagerCreate),
}

#[derive(Args, Debug)]
pub(super) struct UsagerCreate {
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
pub(super) enum MandatCmd {
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

pub(super) fn usager_create(u: UsagerCreate, s: &Settings, json: bool) -> Result<(), Failure> {
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
pub(super) fn acting_aidant(db: &Db, email: &str) -> Result<(admin::Aidant, i64), Failure> {
    let a = db.read(|c| admin::find_aidant_by_email(c, email))?;
    if !a.active {
        return Err(bad_input(format!("l'aidant {} est désactivé", a.email)));
    }
    let org = a
        .current_organisation_id
        .ok_or_else(|| bad_input(format!("l'aidant {} n'a pas de structure courante", a.email)))?;
    Ok((a, org))
}

pub(super) fn status_key(s: Status) -> &'static str {
    match s {
        Status::Active => "active",
        Status::Expired => "expired",
        Status::Revoked => "revoked",
    }
}

pub(super) fn mandat_json(m: &MandatFacts, status: Status, now: Timestamp) -> serde_json::Value {
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

pub(super) fn mandat_line(m: &MandatFacts, status: Status, now: Timestamp) -> String {
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

pub(super) fn mandat_cmd(cmd: MandatCmd, s: &Settings, json: bool) -> Result<(), Failure> {
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
            let by = capabilities::in_organisation(&db, AidantId(a.id))?;
            mandat_changes::revoke_autorisation(&db, &by, AutorisationId(autorisation), now)?;
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
