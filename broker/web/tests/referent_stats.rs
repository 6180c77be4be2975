//! The référent's statistics page, through the real actix application on both storage
//! backends: the figures of the organisation's mandats and uses, never another
//! organisation's, the empty page, and who may see it.

mod common;

use actix_web::http::StatusCode;
use actix_web::test;
use broker_core::journal::{Action, Entry};
use broker_core::mandat::Duree;
use broker_core::time::Clock;
use broker_core::{Demarche, Timestamp};
use broker_store::admin::{self, NewAidant};
use broker_store::mandats::{self, NewMandat};
use broker_store::stats::Month;
use broker_store::journal;
use broker_testkit::TestDb;
use common::{sign_in, world, World};

fn organisation_of(w: &World) -> i64 {
    w.organisation()
}

fn usager(w: &World, sub: &str) -> i64 {
    w.usager(sub, "Angela", "Dubois")
}

fn mandat(w: &World, org: i64, usager: i64, demarches: &[Demarche], when: Timestamp) {
    let n = NewMandat { organisation_id: org, usager_id: usager, aidant_id: w.aidant_id, demarches: demarches.to_vec(), duree: Duree::UnAn };
    mandats::create_mandat(&w.t.db, &n, when).unwrap();
}

fn uses(w: &World, org: i64, times: usize) {
    let e: Vec<Entry> = (0..times).map(|_| Entry::new(Action::AutorisationUsed).aidant(w.aidant_id).organisation(org).demarche(Demarche::Argent)).collect();
    w.t.db.write(|c| journal::append(c, &e)).unwrap();
}

/// Makes the world sign in as a new référent of `org` (and returns the e-mail and seed of
/// the aidant it replaces).
fn become_referent(w: &mut World, org: i64) -> (String, broker_core::totp::Seed) {
    let email = format!("referent-{}@exemple.fr", hex::encode(rand::random::<[u8; 4]>()));
    let a = admin::create_aidant(&w.t.db, &NewAidant { organisation_id: org, email: &email, first_name: "Rémi", last_name: "Ferrand", profession: "", referent: true }).unwrap();
    let (_, seed) = admin::enroll_app(&w.t.db, &w.state.sealer, &email).unwrap();
    w.aidant_id = a.id;
    (std::mem::replace(&mut w.email, email), std::mem::replace(&mut w.seed, seed))
}

/// The cells of every table row headed by `label`, as numbers.
fn rows(body: &str, label: &str) -> Vec<Vec<i64>> {
    let head = format!("<th scope=\"row\">{label}</th>");
    body.match_indices(&head)
        .map(|(at, _)| {
            let rest = &body[at + head.len()..];
            let row = &rest[..rest.find("</tr>").unwrap()];
            row.split("<td>").skip(1).map(|cell| cell.split("</td>").next().unwrap().trim().parse().unwrap()).collect()
        })
        .collect()
}

#[actix_web::test]
async fn the_page_shows_the_organisation_mandats_and_uses_per_month() {
    for t in TestDb::both() {
        let mut w = world(t);
        let app = app!(w);
        let name = w.t.name();
        let org = organisation_of(&w);
        let other = admin::create_organisation(&w.t.db, "CCAS de Roubaix", "21590512700019", "", None).unwrap().id;
        become_referent(&mut w, org);
        let mut b = sign_in(&w, &app).await;

        // Nothing yet: sentences, no chart, no table.
        let empty = b.get(&app, "/referent/statistiques").await;
        assert_eq!(empty.status, StatusCode::OK, "{name}: {}", empty.body);
        assert!(empty.shows("Votre structure n'a créé aucun mandat ces 12 derniers mois."), "{name}");
        assert!(empty.shows("n'ont réalisé aucune démarche pour un usager ces 12 derniers mois"), "{name}");
        assert!(!empty.body.contains("<svg") && !empty.body.contains("<table"), "{name}");

        let now = w.clock.now();
        let (angela, bruno, chloe, zoe) = (usager(&w, "angela"), usager(&w, "bruno"), usager(&w, "chloe"), usager(&w, "zoe"));
        mandat(&w, org, angela, &[Demarche::Argent, Demarche::Logement], now);
        mandat(&w, org, bruno, &[Demarche::Argent], now);
        let earlier = now.plus_days(-70);
        mandat(&w, org, chloe, &[Demarche::Social], earlier);
        // Thirteen months ago: out of the period.
        mandat(&w, org, zoe, &[Demarche::Famille], now.plus_days(-400));
        mandat(&w, other, zoe, &[Demarche::Travail, Demarche::Argent], now);
        uses(&w, org, 2);
        uses(&w, other, 5);

        let p = b.get(&app, "/referent/statistiques").await;
        assert_eq!(p.status, StatusCode::OK, "{name}: {}", p.body);
        let (this_month, that_month) = (Month::of(now).label(), Month::of(earlier).label());
        let first = (0..11).fold(Month::of(now), |m, _| m.previous());
        assert!(p.shows(&format!("Les 12 derniers mois, de {} à {this_month}.", first.label())), "{name}");
        assert!(p.shows("à l'heure de Paris"), "{name}");
        // Columns: Social, Logement, Argent (in the order of the démarches), then all.
        assert!(
            p.shows("<th scope=\"col\">Mois</th><th scope=\"col\">Social - Santé</th><th scope=\"col\">Logement</th><th scope=\"col\">Argent - Impôts - Consommation</th><th scope=\"col\">Toutes démarches</th>"),
            "{name}: {}",
            p.body
        );
        assert!(!p.shows("Travail - Formation") && !p.shows("Famille - Scolarité"), "{name}");
        let current = rows(&p.body, &this_month);
        assert_eq!(current, vec![vec![0, 1, 2, 3], vec![2]], "{name}: mandats then uses of {this_month}");
        assert_eq!(rows(&p.body, &that_month), vec![vec![1, 0, 0, 1], vec![0]], "{name}: {that_month}");
        assert_eq!(rows(&p.body, "Total sur 12 mois"), vec![vec![1, 1, 2, 4], vec![2]], "{name}");
        assert!(p.body.contains("<caption>Mandats créés par mois et par démarche"), "{name}");

        // The charts: an image each, named by a title and a description with the totals.
        assert!(p.body.contains(r#"<svg role="img" aria-labelledby="graphique-mandats-titre graphique-mandats-desc""#), "{name}");
        assert!(p.shows("4 démarches couvertes au total. Social - Santé : 1, Logement : 1, Argent - Impôts - Consommation : 2."), "{name}: {}", p.body);
        assert!(p.body.contains(r#"aria-labelledby="graphique-utilisations-titre graphique-utilisations-desc""#), "{name}");
        assert!(p.shows("2 démarches réalisées au total.") && p.shows(&format!("{this_month} : 2.")), "{name}");
        assert!(!p.shows("7 démarches réalisées") && !p.shows("5 démarches réalisées"), "{name}");

        // The other organisation's référent sees its figures only.
        become_referent(&mut w, other);
        let mut b2 = sign_in(&w, &app).await;
        let q = b2.get(&app, "/referent/statistiques").await;
        assert_eq!(q.status, StatusCode::OK, "{name}");
        assert_eq!(rows(&q.body, "Total sur 12 mois"), vec![vec![1, 1, 2], vec![5]], "{name}: {}", q.body);
        assert!(!q.shows("Social - Santé") && !q.shows("Logement"), "{name}");
    }
}

#[actix_web::test]
async fn only_a_referent_of_the_structure_gets_in() {
    for t in TestDb::both() {
        let w = world(t);
        let app = app!(w);
        let name = w.t.name();
        let mut anonymous = common::Browser::default();
        let p = anonymous.get(&app, "/referent/statistiques").await;
        assert_eq!((p.status, p.location.as_deref()), (StatusCode::SEE_OTHER, Some("/connexion?suite=%2Freferent%2Fstatistiques")), "{name}");

        // The world's aidant is not a référent.
        let mut b = sign_in(&w, &app).await;
        let p = b.get(&app, "/referent/statistiques").await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{name}: {}", p.body);
        assert!(p.shows("Espace réservé aux référents") && !p.shows("Statistiques de"), "{name}");
    }
}
