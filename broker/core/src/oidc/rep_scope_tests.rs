use super::*;
use serde_json::json;
use Demarche::*;

fn parse(v: Value) -> Result<ParsedRepScope, OAuthError> {
    RepScope::parse(&v)
}

#[test]
fn every_demarche_has_its_key_and_franceconnect_label_and_nothing_is_ambiguous() {
    let mut seen = Vec::new();
    for d in Demarche::ALL {
        let (_, spellings) = ALIASES.iter().find(|(x, _)| *x == d).unwrap();
        assert_eq!(spellings[0], d.key());
        for s in *spellings {
            assert_eq!(alias(s), Some(d), "{s}");
            assert!(!seen.contains(s), "{s} twice");
            seen.push(s);
        }
    }
    // FranceConnect's labels, as its code writes them.
    for (l, d) in [
        ("Papier-Citoyenneté-Elections", Papiers),
        ("Famille-Scolarité", Famille),
        ("Social-Santé", Social),
        ("Travail-Formation", Travail),
        ("Logement", Logement),
        ("Transports-Mobilité", Transports),
        ("Argent-Impots-Consommation", Argent),
        ("Justice", Justice),
        ("Etranger-Europe", Etranger),
        ("Loisirs-Sport-Culture", Loisirs),
    ] {
        assert_eq!(alias(l), Some(d));
        assert_eq!(label(d), l);
    }
    assert_eq!(alias("Famille-Scolarite"), Some(Famille), "unaccented");
    assert_eq!(alias("famille-scolarité"), None, "case as FranceConnect writes it");
    assert_eq!(alias("Argent"), None);
}

#[test]
fn an_empty_or_absent_list_restricts_nothing() {
    for v in [
        json!({"essential": true, "values": []}),
        json!({"essential": true}),
        json!({}),
        json!(null),
        json!({"essential": true, "values": null}),
    ] {
        let p = parse(v.clone()).unwrap();
        assert_eq!(p.scope, RepScope::Any, "{v}");
        assert!(p.ignored.is_empty());
        assert_eq!(p.scope.restricted_to(), None);
        assert_eq!(p.scope.within(&[Argent, Social]).unwrap(), vec![Argent, Social]);
        assert_eq!(p.scope.answer(Famille), "Famille-Scolarité");
    }
}

#[test]
fn keys_and_labels_are_answered_in_the_spelling_asked() {
    let p = parse(json!({"essential": true, "values": ["Famille-Scolarité", "argent", "Travail-Formation"]})).unwrap();
    assert_eq!(p.scope.restricted_to(), Some(vec![Famille, Travail, Argent]));
    assert_eq!(p.scope.answer(Famille), "Famille-Scolarité");
    assert_eq!(p.scope.answer(Argent), "argent");
    assert_eq!(p.scope.answer(Travail), "Travail-Formation");
    let p = parse(json!({"values": ["Social-Sante", "social"]})).unwrap();
    assert_eq!(p.scope.restricted_to(), Some(vec![Social]), "one démarche, two spellings");
    assert_eq!(p.scope.answer(Social), "Social-Sante", "the first spelling used");
    let p = parse(json!({"value": "justice"})).unwrap();
    assert_eq!(p.scope.restricted_to(), Some(vec![Justice]));
}

#[test]
fn unknown_values_beside_known_ones_are_ignored_and_alone_are_refused() {
    let long = "x".repeat(5000);
    let p = parse(json!({"values": ["Etranger-Europe", "Impots", long, "a\u{0}b"]})).unwrap();
    assert_eq!(p.scope.restricted_to(), Some(vec![Etranger]));
    assert_eq!(p.ignored.len(), 3);
    assert_eq!(p.ignored[0], "Impots");
    assert!(p.ignored[1].chars().count() <= IGNORED_VALUE_MAX + 1, "bounded");
    assert_eq!(p.ignored[2], "a?b");
    let many: Vec<String> = (0..50).map(|i| format!("inconnue-{i}")).collect();
    let mut with_one = many.clone();
    with_one.push("logement".into());
    assert_eq!(parse(json!({"values": with_one})).unwrap().ignored.len(), IGNORED_LIST_MAX);

    let e = parse(json!({"values": ["Impots", "Sante"]})).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(e.description.contains("« Impots »") && e.description.contains("« Sante »"), "{}", e.description);
    let e = parse(json!({"values": many})).unwrap_err();
    assert!(e.description.len() < 600, "bounded: {}", e.description.len());
}

#[test]
fn malformed_requests_are_refused() {
    for (v, part) in [
        (json!({"values": "argent"}), "liste"),
        (json!({"values": ["argent", 1]}), "chaînes"),
        (json!({"value": 1}), "chaînes"),
        (json!({"value": "argent", "values": ["argent"]}), "ensemble"),
        (json!({"essential": "true", "values": ["argent"]}), "booléen"),
        (json!(["argent"]), "rep_scope doit"),
    ] {
        let e = parse(v.clone()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.description.contains(part), "{v}: {}", e.description);
    }
}

#[test]
fn a_restricted_list_must_lie_within_the_organisation() {
    let p = parse(json!({"values": ["argent", "Social-Santé"]})).unwrap();
    assert_eq!(p.scope.within(&Demarche::ALL).unwrap(), vec![Social, Argent]);
    let e = p.scope.within(&[Social]).unwrap_err();
    assert_eq!(e.code, ErrorCode::AccessDenied);
    assert!(e.description.contains("argent"), "{}", e.description);
}

#[test]
fn survives_a_round_trip_through_the_flow_store() {
    let p = parse(json!({"values": ["Famille-Scolarité"]})).unwrap();
    let back: RepScope = serde_json::from_slice(&serde_json::to_vec(&p.scope).unwrap()).unwrap();
    assert_eq!(back, p.scope);
    let any: RepScope = serde_json::from_str(&serde_json::to_string(&RepScope::Any).unwrap()).unwrap();
    assert_eq!(any, RepScope::Any);
}
