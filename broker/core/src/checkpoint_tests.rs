use super::*;

/// RFC 8032 §7.1, test 1: secret key and public key.
const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const NAME: &str = "aidantsconnect.exemple.gouv.fr/journal";
/// Computed outside this code (Python `hashlib` and `cryptography`): key id, note
/// and verifier key for a checkpoint of size 5 whose root is SHA-256("").
const KEY_ID: &str = "08ffeb9c";
const NOTE: &str = "aidantsconnect.exemple.gouv.fr/journal\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\ntime 2026-11-24T00:17:38Z\n\n\u{2014} aidantsconnect.exemple.gouv.fr/journal CP/rnA8XseXWvLk9gDVOEZjjlomX+E/zxa24CL/NfYvVSwOQ76fVt9nn34lg7SYwbgi/SWI7CRxY0LiU70yh0BX9xQA=\n";
const VKEY: &str = "aidantsconnect.exemple.gouv.fr/journal+08ffeb9c+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea";

fn key() -> JournalKey {
    JournalKey::from_seed(NAME, &hex::decode(SEED).unwrap().try_into().unwrap()).unwrap()
}

fn cp() -> Checkpoint {
    Checkpoint { origin: NAME.into(), size: 5, root: crate::merkle::empty_root(), time: 1_795_479_458 }
}

#[test]
fn signature_matches_bytes_computed_by_hand() {
    let k = key();
    assert_eq!(hex::encode(k.verifier().public_key()), PUBLIC);
    assert_eq!(hex::encode(key_id(NAME, &k.verifier().public_key())), KEY_ID);
    assert_eq!(k.verifier().to_string(), VKEY);
    assert_eq!(k.sign(&cp()).unwrap(), NOTE);
    let v = VerifierKey::parse(VKEY).unwrap();
    assert_eq!(v, k.verifier());
    assert_eq!(v.verify(NOTE).unwrap(), cp());
    assert_eq!(cp().time_rfc3339(), "2026-11-24T00:17:38Z");
}

#[test]
fn sign_and_verify_round_trip() {
    let k = JournalKey::generate("localhost:8000/journal").unwrap();
    let c = Checkpoint { origin: "localhost:8000/journal".into(), size: 123_456, root: [7u8; 32], time: 1_700_000_000 };
    let note = k.sign(&c).unwrap();
    assert_eq!(k.verifier().verify(&note).unwrap(), c);
    let again = VerifierKey::parse(&k.verifier().to_string()).unwrap();
    assert_eq!(again.verify(&note).unwrap(), c);
    let other_origin = Checkpoint { origin: "ailleurs/journal".into(), ..c };
    assert!(matches!(k.sign(&other_origin), Err(CheckpointError::WrongOrigin { .. })));
}

#[test]
fn tampered_body_is_refused() {
    let v = key().verifier();
    for (from, to) in [("\n5\n", "\n6\n"), ("47DEQ", "47DEA"), ("00:17:38Z", "00:17:39Z"), ("gouv.fr/journal\n5", "gouv.fr/journal\n5\nx")] {
        let forged = NOTE.replacen(from, to, 1);
        assert_ne!(forged, NOTE);
        assert!(matches!(v.verify(&forged), Err(CheckpointError::BadSignature(_))), "{from} -> {to}");
    }
    // One bit of the signature.
    let line = NOTE.lines().last().unwrap();
    let b64 = line.rsplit(' ').next().unwrap();
    let mut raw = BASE64.decode(b64.as_bytes()).unwrap();
    raw[10] ^= 1;
    let forged = NOTE.replace(b64, &BASE64.encode(&raw));
    assert!(matches!(v.verify(&forged), Err(CheckpointError::BadSignature(_))));
}

#[test]
fn wrong_key_is_refused() {
    let other = JournalKey::from_seed(NAME, &[3u8; 32]).unwrap();
    let note = other.sign(&cp()).unwrap();
    let e = key().verifier().verify(&note).unwrap_err();
    assert!(matches!(e, CheckpointError::NotSignedByKey(_)), "{e}");
    assert!(e.to_string().contains("autre clé"));
    // Same key bytes under another name: another key id, another key.
    let renamed = JournalKey::from_seed("autre.exemple/journal", &hex::decode(SEED).unwrap().try_into().unwrap()).unwrap();
    let c = Checkpoint { origin: "autre.exemple/journal".into(), ..cp() };
    assert!(matches!(key().verifier().verify(&renamed.sign(&c).unwrap()), Err(CheckpointError::NotSignedByKey(_))));
    // A key id that matches but a signature by another key.
    let mut forged_raw = key_id(NAME, &key().verifier().public_key()).to_vec();
    let body = cp().body();
    forged_raw.extend_from_slice(&other.key.sign(body.as_bytes()).to_bytes());
    let forged = format!("{body}\n{SIGNATURE_PREFIX}{NAME} {}\n", BASE64.encode(&forged_raw));
    assert!(matches!(key().verifier().verify(&forged), Err(CheckpointError::BadSignature(_))));
}

#[test]
fn malformed_notes_are_refused() {
    let v = key().verifier();
    let cases: Vec<String> = vec![
        String::new(),
        NOTE.trim_end().to_owned(),
        NOTE.replace("\n\n", "\n"),
        cp().body() + "\n",
        format!("{}\n- {NAME} AAAA\n", cp().body()),
        format!("{}\n{SIGNATURE_PREFIX}{NAME} !!!\n", cp().body()),
        format!("{}\n{SIGNATURE_PREFIX}{NAME} AAAA\n", cp().body()),
        format!("{}\n{SIGNATURE_PREFIX}{NAME}\n", cp().body()),
        "x".repeat(MAX_NOTE_BYTES + 1),
    ];
    for c in &cases {
        assert!(matches!(v.verify(c), Err(CheckpointError::Malformed(_))), "{c:?}");
    }
    // Bodies that are signed properly but do not read as a checkpoint.
    let k = key();
    let sign_raw = |body: &str| {
        let mut raw = key_id(NAME, &k.verifier().public_key()).to_vec();
        raw.extend_from_slice(&k.key.sign(body.as_bytes()).to_bytes());
        format!("{body}\n{SIGNATURE_PREFIX}{NAME} {}\n", BASE64.encode(&raw))
    };
    let root = BASE64.encode(&[0u8; 32]);
    for body in [
        format!("{NAME}\n05\n{root}\ntime 2026-11-24T00:17:38Z\n"),
        format!("{NAME}\n-5\n{root}\ntime 2026-11-24T00:17:38Z\n"),
        format!("{NAME}\n5\n{}\ntime 2026-11-24T00:17:38Z\n", BASE64.encode(&[0u8; 31])),
        format!("{NAME}\n5\n{root}\n"),
        format!("{NAME}\n5\n{root}\ntime 2026-11-24 00:17:38\n"),
        format!("{NAME}\n5\n"),
    ] {
        assert!(matches!(v.verify(&sign_raw(&body)), Err(CheckpointError::Malformed(_))), "{body:?}");
    }
    assert!(matches!(v.verify(&sign_raw(&format!("autre/journal\n5\n{root}\ntime 2026-11-24T00:17:38Z\n"))), Err(CheckpointError::WrongOrigin { .. })));
    // Unknown extension lines are allowed.
    let with_ext = format!("{NAME}\n5\n{root}\ntime 2026-11-24T00:17:38Z\nautre valeur\n");
    assert_eq!(v.verify(&sign_raw(&with_ext)).unwrap().size, 5);
}

fn journal(n: i64) -> Vec<Record> {
    use crate::journal::{parse_hash, Action, Entry, GENESIS};
    let mut prev = GENESIS;
    (1..=n)
        .map(|seq| {
            let r = Entry::new(Action::MandatCreated)
                .aidant(seq)
                .demarche(crate::Demarche::Argent)
                .detail("via", "é\"x")
                .seal(seq, crate::Timestamp::from_micros(1_700_000_000_000_000 + seq), &prev);
            prev = parse_hash(&r.chain_hash).unwrap();
            r
        })
        .collect()
}

fn audit(lines: &[String], cp: &Checkpoint) -> Result<(i64, Hash), AuditFailure> {
    let mut a = Audit::new(cp.size);
    for (i, l) in lines.iter().enumerate() {
        match parse_export_line(l).map_err(|reason| AuditFailure::Unreadable { line: i + 1, reason })? {
            ExportLine::Entry { record, canonical } => {
                if !a.push(&record, canonical) {
                    break;
                }
            }
            ExportLine::Checkpoint(_) => {}
        }
    }
    a.finish(cp)
}

#[test]
fn export_lines_round_trip_and_audit_finds_each_tamper() {
    let recs = journal(12);
    let leaves: Vec<Hash> = recs.iter().map(|r| crate::journal::parse_hash(&r.leaf_hash).unwrap()).collect();
    let lines: Vec<String> = recs.iter().map(export_line).collect();
    assert!(lines[0].starts_with("{\"v\":1,\"seq\":1,") && lines[0].ends_with("\"}"), "{}", lines[0]);
    assert_eq!(parse_export_line(&lines[3]).unwrap(), ExportLine::Entry { record: recs[3].clone(), canonical: true });
    let note = export_checkpoint_line("a\nb\n");
    assert_eq!(parse_export_line(&note).unwrap(), ExportLine::Checkpoint("a\nb\n".into()));
    let cp = |n: usize| Checkpoint { origin: NAME.into(), size: n as u64, root: crate::merkle::root(&leaves[..n]), time: 0 };

    assert_eq!(audit(&lines, &cp(12)), Ok((12, cp(12).root)));
    assert_eq!(audit(&lines, &cp(7)), Ok((12, cp(12).root)), "a longer journal extends the checkpoint");

    let mut edited = lines.clone();
    edited[4] = edited[4].replace("\"aidant\":5", "\"aidant\":6");
    assert_eq!(audit(&edited, &cp(12)), Err(AuditFailure::Edited { seq: 5 }));
    let mut spaced = lines.clone();
    spaced[6] = spaced[6].replacen(",\"action\"", ", \"action\"", 1);
    assert_eq!(audit(&spaced, &cp(12)), Err(AuditFailure::Edited { seq: 7 }), "not canonical");

    let mut deleted = lines.clone();
    deleted.remove(5);
    assert_eq!(audit(&deleted, &cp(12)), Err(AuditFailure::Deleted { seq: 6 }));

    let mut swapped = lines.clone();
    swapped.swap(2, 8);
    assert_eq!(audit(&swapped, &cp(12)), Err(AuditFailure::Reordered { seq: 3 }));
    let mut repeated = lines.clone();
    repeated.insert(4, lines[3].clone());
    assert_eq!(audit(&repeated, &cp(12)), Err(AuditFailure::Reordered { seq: 5 }));

    assert_eq!(audit(&lines[..9], &cp(12)), Err(AuditFailure::Truncated { entries: 9, size: 12 }));

    let mut forked = cp(12);
    forked.root[0] ^= 1;
    assert!(matches!(audit(&lines, &forked), Err(AuditFailure::Fork { size: 12, .. })));
    assert!(AuditFailure::Fork { size: 12, expected: "a".into(), found: "b".into() }.to_string().contains("fork"));

    // An edit whose leaf and chain hashes were recomputed is caught by the root.
    let mut rehashed = recs.clone();
    rehashed[4].aidant = Some(99);
    let mut prev = crate::journal::parse_hash(&rehashed[3].chain_hash).unwrap();
    for r in rehashed.iter_mut().skip(4) {
        *r = r.clone().seal(r.seq, &prev);
        prev = crate::journal::parse_hash(&r.chain_hash).unwrap();
    }
    let rehashed_lines: Vec<String> = rehashed.iter().map(export_line).collect();
    assert!(matches!(audit(&rehashed_lines, &cp(12)), Err(AuditFailure::Fork { .. })));
    assert!(parse_export_line("{\"v\":1").is_err());
}

#[test]
fn verifier_key_strings_are_checked() {
    assert!(VerifierKey::parse(VKEY).is_ok());
    for bad in [
        "",
        "nom",
        "aidantsconnect.exemple.gouv.fr/journal+08ffeb9d+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea",
        "aidantsconnect.exemple.gouv.fr/journal+08ffeb9c+AtdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea",
        "aidantsconnect.exemple.gouv.fr/journal+08ffeb9c+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1E",
        "autre/journal+08ffeb9c+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea",
    ] {
        assert!(VerifierKey::parse(bad).is_err(), "{bad}");
    }
    assert!(matches!(JournalKey::from_seed("a b", &[1u8; 32]), Err(CheckpointError::BadKeyName(_))));
    assert!(matches!(JournalKey::from_seed("", &[1u8; 32]), Err(CheckpointError::BadKeyName(_))));
}
