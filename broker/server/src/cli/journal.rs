//! `broker journal`: verification, against a checkpoint and its audit, proofs and the journal key.

use super::*;
use broker_store::journal;

#[derive(Subcommand, Debug)]
pub(super) enum JournalCmd {
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
pub(super) struct VerifyArgs {
    /// Point de contrôle signé sauvegardé (texte de /journal/checkpoint).
    #[arg(long)]
    pub(super) checkpoint: Option<PathBuf>,
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
pub(super) enum ProveCmd {
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
pub(super) enum JournalKeyCmd {
    /// Crée la clé du journal (refusé si elle existe).
    Generate,
    /// Affiche la clé de vérification à donner aux auditeurs.
    Show,
}

/// The journal key: generated in development when missing, required in production.
pub(super) fn journal_key(s: &Settings) -> Result<JournalKey, Failure> {
    let generate = (s.env == Env::Development).then_some(Generate::Development);
    crate::keys::load_journal_key(&s.keys_dir, &s.journal_origin, generate).map_err(|e| bad_input(format!("{e:#}")))
}

pub(super) fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

pub(super) fn journal_cmd(cmd: JournalCmd, s: &Settings, json: bool) -> Result<(), Failure> {
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
pub(super) fn refused(json: bool, f: AuditFailure) -> Failure {
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
pub(super) fn verify_checkpoint(s: &Settings, args: VerifyArgs, json: bool) -> Result<(), Failure> {
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

pub(super) enum Audited {
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
pub(super) fn check_inclusion_file(path: &PathBuf, cp: &Checkpoint) -> Result<(), AuditFailure> {
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
pub(super) fn audit_export(path: &PathBuf, cp: &Checkpoint, vkey: &VerifierKey) -> Result<i64, Audited> {
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
pub(super) fn audit_live(s: &Settings, cp: &Checkpoint, vkey: &VerifierKey) -> Result<(i64, Option<i64>), Audited> {
    const PAGE: i64 = 10_000;
    let db = open_db(s).map_err(Audited::Error)?;
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
