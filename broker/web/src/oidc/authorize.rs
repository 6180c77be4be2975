//! `/authorize` and the aidant's steps: sign in (or prove a fresh second factor), pick the
//! usager, pick the démarche, then the single-use code goes back to the client.
//!
//! A validated request becomes a *flow*, kept in the cache for [`FLOW_SECONDS`] under a
//! random id and bound to the browser that started it: a random value in a cookie of
//! that flow alone (`ac_flux_<id>`, path `/autorisation/<id>`, HttpOnly, SameSite=Lax),
//! of which the flow keeps the hash. Each flow has its own cookie, so flows started at
//! the same moment in one browser never overwrite each other's binding (a value kept in
//! the session would be: concurrent requests each write the whole session, the last one
//! wins). Every step checks the flow, the binding, the aidant and the autorisation again
//! at that instant.

use super::{form_pairs, Registered};
use crate::capability::Acting;
use crate::guard::{self, SignedIn};
use crate::pages::{self, Header};
use crate::AppState;
use actix_session::Session;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use super::respond;
use broker_core::oidc::authorize::{try_validate, AuthorizeRequest, Outcome, RegisteredUri};
use broker_core::oidc::rep_scope::RepScope;
use broker_core::oidc::error::{ErrorCode, OAuthError};
use broker_core::secret::{random_bytes, sha256_hex};
use broker_core::capability::{InOrganisation, UsagerId};
use broker_core::oidc::grant::{Grant, Issued};
use broker_store::idp::{self, ActiveAutorisation, Candidate};
use broker_store::oidc_state::GrantStore;
use serde::{Deserialize, Serialize};

/// The whole flow, from `/authorize` to the code, must end within 5 minutes.
pub const FLOW_SECONDS: i64 = 300;
/// Codes live 60 seconds at most.
pub const CODE_SECONDS: u64 = 60;

const FLOW_COOKIE_PREFIX: &str = "ac_flux_";

/// A validated authorization request in progress.
#[derive(Serialize, Deserialize, Clone)]
struct Flow {
    client_id: String,
    client_name: String,
    redirect_uri: RegisteredUri,
    state: String,
    nonce: String,
    scopes: Vec<broker_core::oidc::claims::Scope>,
    prompt_login: bool,
    rep_scope: Option<RepScope>,
    code_challenge: Option<String>,
    /// SHA-256 of the random value in the starting browser's flow cookie.
    binding: String,
    /// The usager picked at the first step.
    usager_id: Option<i64>,
}

impl Flow {
    fn redirect(&self, issuer: &str, error: OAuthError) -> HttpResponse {
        respond(Outcome::Error { to: self.redirect_uri.clone(), state: Some(self.state.clone()), error }, issuer)
    }
}

/// The cookie binding flow `id` to the browser that started it (`value`), or its
/// removal (`None`) once the flow is over.
fn flow_cookie(id: &str, value: Option<&str>, secure: bool) -> Cookie<'static> {
    let mut c = Cookie::build(format!("{FLOW_COOKIE_PREFIX}{id}"), value.unwrap_or("").to_owned())
        .path(format!("/autorisation/{id}"))
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .finish();
    match value {
        Some(_) => c.set_max_age(CookieDuration::seconds(FLOW_SECONDS)),
        None => c.make_removal(),
    }
    c
}

/// This browser's binding value for flow `id`, if it has one.
fn binding(req: &HttpRequest, id: &str) -> Option<String> {
    req.cookie(&format!("{FLOW_COOKIE_PREFIX}{id}")).map(|c| c.value().to_owned())
}

/// `res` with the flow's cookie removed (the flow is over).
fn ending_flow(mut res: HttpResponse, state: &AppState, id: &str) -> HttpResponse {
    let _ = res.add_cookie(&flow_cookie(id, None, !state.development));
    res
}

fn expired_page() -> HttpResponse {
    pages::error_page(
        StatusCode::BAD_REQUEST,
        "Cette demande de connexion a expiré",
        "Pour votre sécurité, une connexion doit être menée à son terme en moins de 5 minutes, dans le navigateur où elle a commencé. Retournez sur le service en ligne et cliquez de nouveau sur le bouton FranceConnect.",
    )
}

pub async fn authorize_get(req: HttpRequest, state: web::Data<AppState>, session: Session) -> HttpResponse {
    start(form_pairs(req.query_string().as_bytes()), state, session).await
}

pub async fn authorize_post(body: web::Bytes, state: web::Data<AppState>, session: Session) -> HttpResponse {
    start(form_pairs(&body), state, session).await
}

async fn start(params: Vec<(String, String)>, state: web::Data<AppState>, session: Session) -> HttpResponse {
    let st = state.clone();
    let checked = web::block(move || {
        let mut name = String::new();
        let r = try_validate(&params, |id| {
            let c = st.clients.get(&st.db, id).map_err(|e| e.to_string())?;
            if let Some(c) = &c {
                name = c.name.clone();
            }
            Ok::<_, String>(c.map(Registered::new))
        });
        (r, name)
    })
    .await;
    let (request, client_name) = match checked {
        Ok((Ok(r), name)) => (r, name),
        Ok((Err(rejection), _)) => return respond(rejection.into(), &state.issuer),
        Err(_) => return pages::server_error(),
    };
    if !request.rep_scope_ignored.is_empty() {
        tracing::info!(client = %request.client_id, ignored = ?request.rep_scope_ignored, "rep_scope values not known, ignored");
    }
    let now = state.clock.now();
    let signed_in = SignedIn::from_session(&session, now);
    if request.prompt_none {
        let code = if signed_in.is_none() { ErrorCode::LoginRequired } else { ErrorCode::InteractionRequired };
        let error = OAuthError::new(code, "L'aidant doit se connecter et choisir l'usager.");
        return respond(Outcome::Error { to: request.redirect_uri, state: Some(request.state), error }, &state.issuer);
    }
    let b = hex::encode(random_bytes::<32>());
    let flow = Issued::new(new_flow(request, client_name, &b), now, FLOW_SECONDS as u64);
    let id = hex::encode(random_bytes::<16>());
    if let Err(e) = GrantStore::new(state.cache.as_ref()).put_flow(&id, &flow, now) {
        tracing::error!(error = %e, "flow not stored");
        return pages::server_error();
    }
    let mut res = guard::see_other(&format!("/autorisation/{id}"));
    if res.add_cookie(&flow_cookie(&id, Some(&b), !state.development)).is_err() {
        return pages::server_error();
    }
    res
}

fn new_flow(r: AuthorizeRequest, client_name: String, binding: &str) -> Flow {
    Flow {
        client_id: r.client_id,
        client_name,
        redirect_uri: r.redirect_uri,
        state: r.state,
        nonce: r.nonce,
        scopes: r.scopes,
        prompt_login: r.prompt_login,
        rep_scope: r.rep_scope,
        code_challenge: r.code_challenge,
        binding: sha256_hex(binding.as_bytes()),
        usager_id: None,
    }
}

/// The flow of this browser, if it is still live.
fn load_flow(state: &AppState, req: &HttpRequest, id: &str) -> Result<Issued<Flow>, HttpResponse> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(expired_page());
    }
    let flow: Issued<Flow> = match GrantStore::new(state.cache.as_ref()).flow(id) {
        Ok(Some(f)) => f,
        Ok(None) => return Err(expired_page()),
        Err(e) => {
            tracing::error!(error = %e, "flow not read");
            return Err(pages::server_error());
        }
    };
    let bound = binding(req, id).is_some_and(|b| broker_core::secret::constant_time_eq(sha256_hex(b.as_bytes()).as_bytes(), flow.value.binding.as_bytes()));
    if !bound || !flow.live_at(state.clock.now()) {
        return Err(expired_page());
    }
    Ok(flow)
}

fn save_flow(state: &AppState, id: &str, flow: &Issued<Flow>) -> Result<(), HttpResponse> {
    GrantStore::new(state.cache.as_ref()).put_flow(id, flow, state.clock.now()).map_err(|e| {
        tracing::error!(error = %e, "flow not stored");
        pages::server_error()
    })
}

/// Who acts — an aidant in their organisation, narrowed to the démarches the request
/// accepts — checked at every step.
struct Actor {
    who: SignedIn,
    by: InOrganisation,
}

/// Signed in, second factor proved since the flow began when `prompt=login`, aidant
/// active with a current organisation allowed the requested démarches.
async fn actor(state: &web::Data<AppState>, req: &HttpRequest, id: &str, issued: &Issued<Flow>) -> Result<Actor, HttpResponse> {
    let flow = &issued.value;
    let here = format!("/autorisation/{id}");
    let Acting { who, by } = Acting::resolve(req).await?;
    if flow.prompt_login && who.fresh_at < issued.issued_at {
        let mut u = url::form_urlencoded::Serializer::new(String::new());
        u.append_pair("suite", &here);
        return Err(guard::see_other(&format!("/reauthentification?{}", u.finish())));
    }
    let by = match &flow.rep_scope {
        Some(requested) => match requested.within(by.allowed()) {
            Ok(accepted) => by.narrowed(&accepted),
            Err(e) => {
                let _ = GrantStore::new(state.cache.as_ref()).take_flow(id);
                return Err(flow.redirect(&state.issuer, e));
            }
        },
        None => by,
    };
    Ok(Actor { who, by })
}

/// The live flow of this browser and who acts in it, checked again.
async fn step(state: &web::Data<AppState>, req: &HttpRequest, id: &str) -> Result<(Issued<Flow>, Actor), HttpResponse> {
    let flow = load_flow(state, req, id)?;
    let actor = actor(state, req, id, &flow).await?;
    Ok((flow, actor))
}

/// [`step`] at the démarche stage: also the usager picked and their autorisations now.
async fn demarche_step(state: &web::Data<AppState>, req: &HttpRequest, id: &str) -> Result<(Issued<Flow>, Actor, i64, Vec<ActiveAutorisation>), HttpResponse> {
    let (flow, actor) = step(state, req, id).await?;
    let Some(usager_id) = flow.value.usager_id else {
        return Err(guard::see_other(&format!("/autorisation/{id}")));
    };
    let auts = usager_autorisations(state, &actor, usager_id).await?;
    Ok((flow, actor, usager_id, auts))
}

struct UsagerView {
    id: i64,
    name: String,
    birthdate: String,
    demarches: String,
}

fn usager_view(c: &Candidate) -> UsagerView {
    let name = match &c.preferred_username {
        Some(u) if !u.is_empty() && *u != c.family_name => format!("{} {} (née ou né {})", c.given_name, u.to_uppercase(), c.family_name.to_uppercase()),
        _ => format!("{} {}", c.given_name, c.family_name.to_uppercase()),
    };
    UsagerView {
        id: c.usager_id,
        name,
        birthdate: display_birthdate(&c.birthdate),
        demarches: c.autorisations.iter().map(|a| a.demarche.title()).collect::<Vec<_>>().join(", "),
    }
}

fn display_birthdate(b: &str) -> String {
    let parts: Vec<&str> = b.split('-').collect();
    match parts.as_slice() {
        [y, "00", _] => format!("née ou né en {y}"),
        [y, m, "00"] => format!("née ou né en {m}/{y}"),
        [y, m, d] => format!("née ou né le {d}/{m}/{y}"),
        _ => String::new(),
    }
}

#[derive(Template)]
#[template(path = "choose_usager.html")]
struct ChooseUsager<'a> {
    header: Header,
    csrf: String,
    flow: &'a str,
    client_name: &'a str,
    q: &'a str,
    usagers: Vec<UsagerView>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "choose_demarche.html")]
struct ChooseDemarche<'a> {
    header: Header,
    csrf: String,
    flow: &'a str,
    client_name: &'a str,
    usager_name: String,
    demarches: Vec<pages::DemarcheView>,
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// A step's answer: the page, or whatever stopped it (expired flow, sign-in, error
/// redirect to the client…); both are sent as they are.
type Step = Result<HttpResponse, HttpResponse>;

fn answer(step: Step) -> HttpResponse {
    step.unwrap_or_else(|stopped| stopped)
}

pub async fn choose_usager(req: HttpRequest, path: web::Path<String>, q: web::Query<SearchQuery>, state: web::Data<AppState>, session: Session) -> HttpResponse {
    answer(async {
        let id = path.into_inner();
        let (flow, actor) = step(&state, &req, &id).await?;
        let search = q.q.clone().unwrap_or_default();
        Ok(render_usagers(&state, &session, &id, &flow.value, &actor, &search, None).await)
    }
    .await)
}

async fn render_usagers(state: &web::Data<AppState>, session: &Session, id: &str, flow: &Flow, actor: &Actor, search: &str, error: Option<&str>) -> HttpResponse {
    let st = state.clone();
    let (by, now, s) = (actor.by.clone(), state.clock.now(), search.to_owned());
    let found = web::block(move || idp::candidates(&st.db, &by, now, Some(&s))).await;
    let usagers = match found {
        Ok(Ok(list)) => list.iter().map(usager_view).collect(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "usagers not listed");
            return pages::server_error();
        }
        Err(_) => return pages::server_error(),
    };
    let header = pages::header_for(state, session, actor.who.aidant_id).await;
    let status = if error.is_some() { StatusCode::CONFLICT } else { StatusCode::OK };
    pages::render_with(
        status,
        &ChooseUsager { header, csrf: guard::csrf_token(session), flow: id, client_name: &flow.client_name, q: search, usagers, error },
    )
}

#[derive(Deserialize)]
pub struct UsagerForm {
    csrf: String,
    usager: String,
}

async fn usager_autorisations(state: &web::Data<AppState>, actor: &Actor, usager_id: i64) -> Result<Vec<ActiveAutorisation>, HttpResponse> {
    let st = state.clone();
    let (by, now) = (actor.by.clone(), state.clock.now());
    match web::block(move || idp::usager_autorisations(&st.db, &by, UsagerId(usager_id), now)).await {
        Ok(Ok(list)) => Ok(list),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "autorisations not read");
            Err(pages::server_error())
        }
        Err(_) => Err(pages::server_error()),
    }
}

const NO_LONGER: &str = "Cet usager n'a plus de mandat actif pour ces démarches avec votre structure. Choisissez un autre usager, ou créez un nouveau mandat.";

pub async fn pick_usager(req: HttpRequest, path: web::Path<String>, form: web::Form<UsagerForm>, state: web::Data<AppState>, session: Session) -> HttpResponse {
    if !guard::csrf_ok(&session, &form.csrf) {
        return guard::csrf_refused();
    }
    answer(async {
        let id = path.into_inner();
        let (mut flow, actor) = step(&state, &req, &id).await?;
        let Ok(usager_id) = form.usager.parse::<i64>() else {
            return Ok(render_usagers(&state, &session, &id, &flow.value, &actor, "", Some(NO_LONGER)).await);
        };
        let auts = usager_autorisations(&state, &actor, usager_id).await?;
        Ok(match auts.as_slice() {
            [] => render_usagers(&state, &session, &id, &flow.value, &actor, "", Some(NO_LONGER)).await,
            [only] => issue(&state, &session, &id, &flow.value, &actor, usager_id, only).await,
            _ => {
                flow.value.usager_id = Some(usager_id);
                save_flow(&state, &id, &flow)?;
                guard::see_other(&format!("/autorisation/{id}/demarche"))
            }
        })
    }
    .await)
}

async fn usager_name(state: &web::Data<AppState>, actor: &Actor, usager_id: i64) -> String {
    let st = state.clone();
    let (by, now) = (actor.by.clone(), state.clock.now());
    web::block(move || idp::candidate(&st.db, &by, UsagerId(usager_id), now))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .map(|c| usager_view(&c).name)
        .unwrap_or_default()
}

pub async fn choose_demarche(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>, session: Session) -> HttpResponse {
    answer(async {
        let id = path.into_inner();
        let (flow, actor, usager_id, auts) = demarche_step(&state, &req, &id).await?;
        if auts.is_empty() {
            return Ok(render_usagers(&state, &session, &id, &flow.value, &actor, "", Some(NO_LONGER)).await);
        }
        let header = pages::header_for(&state, &session, actor.who.aidant_id).await;
        let usager_name = usager_name(&state, &actor, usager_id).await;
        let demarches = auts
            .iter()
            .map(|a| pages::DemarcheView { key: a.demarche.key(), title: a.demarche.title(), description: a.demarche.description() })
            .collect();
        Ok(pages::render(&ChooseDemarche { header, csrf: guard::csrf_token(&session), flow: &id, client_name: &flow.value.client_name, usager_name, demarches }))
    }
    .await)
}

#[derive(Deserialize)]
pub struct DemarcheForm {
    csrf: String,
    demarche: String,
}

pub async fn pick_demarche(req: HttpRequest, path: web::Path<String>, form: web::Form<DemarcheForm>, state: web::Data<AppState>, session: Session) -> HttpResponse {
    if !guard::csrf_ok(&session, &form.csrf) {
        return guard::csrf_refused();
    }
    answer(async {
        let id = path.into_inner();
        let (flow, actor, usager_id, auts) = demarche_step(&state, &req, &id).await?;
        Ok(match auts.iter().find(|a| a.demarche.key() == form.demarche) {
            Some(a) => issue(&state, &session, &id, &flow.value, &actor, usager_id, a).await,
            None => render_usagers(&state, &session, &id, &flow.value, &actor, "", Some(NO_LONGER)).await,
        })
    }
    .await)
}

/// Issues the code for the autorisation just checked, ends the flow, and sends the
/// browser back to the client.
async fn issue(state: &web::Data<AppState>, session: &Session, id: &str, flow: &Flow, actor: &Actor, usager_id: i64, a: &ActiveAutorisation) -> HttpResponse {
    // The capability to act for this usager on this démarche, checked now from the
    // mandat's facts; then the usager's broker id.
    let (st, by, chosen, now) = (state.clone(), actor.by.clone(), *a, state.clock.now());
    let checked = web::block(move || -> Result<Option<(broker_core::capability::ActingFor, String)>, broker_store::StoreError> {
        let Some(acting) = idp::acting_for(&st.db, &by, &chosen, now)? else { return Ok(None) };
        let sub = idp::usager_sub(&st.db, acting.usager())?;
        Ok(Some((acting, sub)))
    })
    .await;
    let (acting, usager_sub) = match checked {
        Ok(Ok(Some(x))) if x.0.usager().get() == usager_id => x,
        Ok(Ok(_)) => return render_usagers(state, session, id, flow, actor, "", Some(NO_LONGER)).await,
        _ => return pages::server_error(),
    };
    let grant = Grant {
        client_id: flow.client_id.clone(),
        redirect_uri: flow.redirect_uri.as_str().to_owned(),
        nonce: flow.nonce.clone(),
        code_challenge: flow.code_challenge.clone(),
        scopes: flow.scopes.clone(),
        rep_scope: flow.rep_scope.as_ref().map(|s| s.answer(acting.demarche())),
        acting,
        usager_sub,
        auth_time: actor.who.fresh_at,
        amr: guard::amr(session),
    };
    // One flow, one code: the flow is taken before the code is issued, so that of two
    // concurrent submissions only one gets a code.
    let grants = GrantStore::new(state.cache.as_ref());
    match grants.take_flow(id) {
        Ok(true) => {}
        Ok(false) => return expired_page(),
        Err(e) => {
            tracing::error!(error = %e, "flow not ended");
            return pages::server_error();
        }
    }
    let code = match grants.issue_code(&Issued::new(grant, state.clock.now(), CODE_SECONDS)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "code not issued");
            return pages::server_error();
        }
    };
    let answer = respond(Outcome::Code { to: flow.redirect_uri.clone(), state: flow.state.clone(), code }, &state.issuer);
    ending_flow(answer, state, id)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn cancel(req: HttpRequest, path: web::Path<String>, form: web::Form<CsrfForm>, state: web::Data<AppState>, session: Session) -> HttpResponse {
    if !guard::csrf_ok(&session, &form.csrf) {
        return guard::csrf_refused();
    }
    answer(async {
        let id = path.into_inner();
        let flow = load_flow(&state, &req, &id)?.value;
        GrantStore::new(state.cache.as_ref()).take_flow(&id).map_err(|e| {
            tracing::error!(error = %e, "flow not ended");
            pages::server_error()
        })?;
        Ok(ending_flow(flow.redirect(&state.issuer, OAuthError::new(ErrorCode::AccessDenied, "L'aidant a annulé la connexion.")), &state, &id))
    }
    .await)
}

#[cfg(test)]
mod tests {
    use super::display_birthdate;

    #[test]
    fn partial_birthdates_are_shown_as_known() {
        assert_eq!(display_birthdate("1950-00-00"), "née ou né en 1950");
        assert_eq!(display_birthdate("1962-03-00"), "née ou né en 03/1962");
        assert_eq!(display_birthdate("1984-11-02"), "née ou né le 02/11/1984");
    }
}
