//! The dashboard and the consent desk over HTTP (axum). Every page needs a staff sign-in
//! except the shopper's opt-out page and the health probe.

use crate::charts::Chart;
use crate::config::Config;
use crate::consent;
use crate::db::Db;
use crate::ingest::Stats;
use crate::queries;
use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct App {
    pub db: Db,
    pub config: Config,
    pub stats: Arc<Stats>,
    /// Publishes consent commands.
    pub mqtt: rumqttc::v5::AsyncClient,
    sessions: Mutex<HashMap<String, (String, Instant)>>,
    optout_limit: crate::ratelimit::RateLimit,
}

const COOKIE: &str = "probegate_session";
const SESSION: Duration = Duration::from_secs(12 * 3600);

pub fn router(db: Db, config: Config, stats: Arc<Stats>, mqtt: rumqttc::v5::AsyncClient) -> Router {
    let optout_limit = crate::ratelimit::RateLimit::new(
        config.optout.per_address_per_hour,
        Duration::from_secs(3600),
    );
    let app = Arc::new(App {
        optout_limit,
        db,
        config,
        stats,
        mqtt,
        sessions: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/site/{site}", get(site_page))
        .route("/group/{group}", get(group_page))
        .route("/csv/{scope}/{name}/{chart}", get(csv))
        .route("/definitions", get(definitions))
        .route("/consent", get(consent_desk).post(consent_submit))
        .route("/optout/{site}", get(optout_page).post(optout_submit))
        .route("/optout/{site}/{request}", get(optout_status))
        .route("/healthz", get(healthz))
        .with_state(app)
}

pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f4f6f8}\
header{background:#1d2733;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}\
header a{color:#cfe3ff;text-decoration:none}header form{margin-left:auto}\
main{padding:1em 1.2em;max-width:1100px}section{background:#fff;border-radius:8px;padding:1em;margin:0 0 1em;box-shadow:0 1px 2px #0002}\
.kpis{display:flex;gap:1em;flex-wrap:wrap}.kpi{background:#fff;border-radius:8px;padding:.8em 1.2em;box-shadow:0 1px 2px #0002;min-width:9em}\
.kpi b{display:block;font-size:1.8em}table{border-collapse:collapse;font-size:.85em}td,th{padding:.2em .6em;border-bottom:1px solid #e3e7eb;text-align:right}\
td:first-child,th:first-child{text-align:left}.data{max-height:14em;overflow:auto;display:inline-block}.note{color:#5b6773;font-size:.9em}\
.online{color:#1a7f37}.offline{color:#b42318}.error{color:#b42318}";

fn page(title: &str, user: Option<&str>, body: &str) -> Html<String> {
    let nav = match user {
        Some(u) => format!(
            "<a href=\"/\">Stores</a><a href=\"/consent\">Consent desk</a><a href=\"/definitions\">Definitions</a>\
             <form method=\"post\" action=\"/logout\"><span>{}</span> <button>Sign out</button></form>",
            esc(u)
        ),
        None => String::new(),
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} · probegate</title><style>{STYLE}</style></head><body><header><strong>probegate back office</strong>{nav}</header>\
         <main>{body}</main></body></html>",
        esc(title)
    ))
}

impl App {
    /// The signed-in user, or a redirect to the sign-in page.
    fn user(&self, headers: &HeaderMap) -> Result<String, Redirect> {
        let token = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                c.trim()
                    .strip_prefix(COOKIE)
                    .and_then(|r| r.strip_prefix('='))
            });
        let mut sessions = self.sessions.lock().expect("no panics while locked");
        sessions.retain(|_, (_, at)| at.elapsed() < SESSION);
        token
            .and_then(|t| sessions.get(t))
            .map(|(u, _)| u.clone())
            .ok_or_else(|| Redirect::to("/login"))
    }

    fn sites_of_group(&self, group: &str) -> Option<Vec<String>> {
        self.config.groups.get(group).cloned()
    }
}

fn fail(e: anyhow::Error) -> Response {
    tracing::error!("{e:#}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "the database failed; see the service log",
    )
        .into_response()
}

async fn login_page() -> Html<String> {
    page("Sign in", None, LOGIN_FORM)
}

const LOGIN_FORM: &str = "<section><h1>Sign in</h1><form method=\"post\" action=\"/login\">\
<p><label>User <input name=\"user\" id=\"user\" autocomplete=\"username\" required></label></p>\
<p><label>Password <input name=\"password\" id=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\
<p><button id=\"sign-in\">Sign in</button></p></form></section>";

async fn login(State(app): State<Arc<App>>, Form(form): Form<HashMap<String, String>>) -> Response {
    use argon2::PasswordVerifier;
    let user = form.get("user").map(String::as_str).unwrap_or("");
    let password = form.get("password").map(String::as_str).unwrap_or("");
    let ok = app.config.users.iter().any(|u| {
        u.name == user
            && argon2::PasswordHash::new(&u.password_hash).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
    });
    if !ok {
        tracing::info!("failed sign-in");
        let body = format!(
            "<p class=\"error\" id=\"login-error\">Wrong user or password.</p>{LOGIN_FORM}"
        );
        return (StatusCode::UNAUTHORIZED, page("Sign in", None, &body)).into_response();
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    let token = probegate_contract::consent::to_hex(&bytes);
    app.sessions
        .lock()
        .expect("no panics while locked")
        .insert(token.clone(), (user.to_owned(), Instant::now()));
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(c) = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()) {
        let mut sessions = app.sessions.lock().expect("no panics while locked");
        for part in c.split(';') {
            if let Some(t) = part
                .trim()
                .strip_prefix(COOKIE)
                .and_then(|r| r.strip_prefix('='))
            {
                sessions.remove(t);
            }
        }
    }
    (
        [(header::SET_COOKIE, format!("{COOKIE}=; Max-Age=0; Path=/"))],
        Redirect::to("/login"),
    )
        .into_response()
}

fn ago(ms: i64) -> String {
    let s = (crate::store::now_ms() - ms).max(0) / 1000;
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

async fn overview(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let user = match app.user(&headers) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let mut sites = match queries::sites(&app.db).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    for s in app.config.sites.keys() {
        if !sites.contains(s) {
            sites.push(s.clone());
        }
    }
    sites.sort();
    let mut body = String::from("<section><h1>Stores</h1><ul id=\"sites\">");
    for s in &sites {
        let _ = write!(body, "<li><a href=\"/site/{0}\">{0}</a></li>", esc(s));
    }
    body += "</ul>";
    if !app.config.groups.is_empty() {
        body += "<h2>Groups</h2><ul>";
        for (g, members) in &app.config.groups {
            let _ = write!(
                body,
                "<li><a href=\"/group/{0}\">{0}</a> ({1} stores)</li>",
                esc(g),
                members.len()
            );
        }
        body += "</ul>";
    }
    body += "</section>";
    page("Stores", Some(&user), &body).into_response()
}

async fn site_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(site): Path<String>,
) -> Response {
    let user = match app.user(&headers) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    dashboard(&app, &user, "site", &site, std::slice::from_ref(&site)).await
}

async fn group_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(group): Path<String>,
) -> Response {
    let user = match app.user(&headers) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    match app.sites_of_group(&group) {
        Some(sites) => dashboard(&app, &user, "group", &group, &sites).await,
        None => (StatusCode::NOT_FOUND, "no such group").into_response(),
    }
}

async fn charts(
    db: &Db,
    sites: &[String],
    day: &crate::localtime::Day,
) -> anyhow::Result<Vec<Chart>> {
    Ok(vec![
        queries::occupancy_vs_baseline(db, sites, day).await?,
        queries::occupancy_windows(db, sites, day).await?,
        queries::visitors(db, sites, day).await?,
        queries::dwell(db, sites, day).await?,
        queries::devices(db, sites, day).await?,
    ])
}

async fn dashboard(app: &App, user: &str, scope: &str, name: &str, sites: &[String]) -> Response {
    let tz = app.config.zone_of(sites);
    let latest = match queries::latest(&app.db, sites, &tz).await {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut body = format!(
        "<h1 id=\"title\">{} {}</h1>",
        if scope == "group" { "Group" } else { "Store" },
        esc(name)
    );
    if scope == "group" {
        let _ = write!(
            body,
            "<p class=\"note\">{} stores: {}</p>",
            sites.len(),
            esc(&sites.join(", "))
        );
    }
    if let Some((day, end)) = latest {
        let k = match queries::kpis(&app.db, sites, &day).await {
            Ok(k) => k,
            Err(e) => return fail(e),
        };
        let _ = write!(
            body,
            "<p class=\"note\">The day: <span id=\"day\">{}</span> ({}), the latest with data; data up to {}.</p><div class=\"kpis\">\
             <div class=\"kpi\">Occupancy now<b id=\"kpi-occupancy\">{}</b><small class=\"note\">likely <span id=\"kpi-occupancy-interval\">{}</span></small></div>\
             <div class=\"kpi\">Visitors<b id=\"kpi-visitors\">{}</b></div>\
             <div class=\"kpi\">Passers-by<b id=\"kpi-passers-by\">{}</b></div>\
             <div class=\"kpi\">Universal addresses<b id=\"kpi-universal\">{}</b></div>\
             <div class=\"kpi\">Randomized addresses<b id=\"kpi-randomized\">{}</b></div></div><p></p>",
            day.date(),
            esc(&day.zone()),
            day.minute_label(end),
            k.occupancy_now.map_or("–".into(), |o| format!("{o:.1}")),
            k.occupancy_interval
                .map_or(String::new(), |(l, h)| format!("{l:.1}–{h:.1}")),
            k.visitors,
            k.passers_by,
            k.universal,
            k.randomized
        );
        let charts = match charts(&app.db, sites, &day).await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        for c in charts {
            let _ = write!(
                body,
                "<section id=\"chart-{}\"><h2>{}</h2><p class=\"note\">{}</p>",
                c.id,
                esc(&c.title),
                esc(&c.note)
            );
            if c.is_empty() {
                body += "<p class=\"empty\">No data for this chart on this day.</p></section>";
                continue;
            }
            match c.svg() {
                Ok(svg) => body += &svg,
                Err(e) => {
                    let _ = write!(
                        body,
                        "<p class=\"error\">The chart could not be drawn: {}</p>",
                        esc(&e)
                    );
                }
            }
            let _ = write!(
                body,
                "<p><a class=\"csv\" href=\"/csv/{scope}/{}/{}\">CSV</a></p><div class=\"data\"><table class=\"chart-data\"><tr>",
                esc(name),
                c.id
            );
            for col in &c.columns {
                let _ = write!(body, "<th>{}</th>", esc(col));
            }
            body += "</tr>";
            for (label, _, values) in &c.rows {
                let _ = write!(body, "<tr><td>{}</td>", esc(label));
                for v in values {
                    let _ = write!(body, "<td>{}</td>", Chart::fmt(*v));
                }
                body += "</tr>";
            }
            body += "</table></div></section>";
        }
    } else {
        body += "<section><p id=\"no-data\">No counts from these stores yet.</p></section>";
    }
    let health = match queries::health(&app.db, sites).await {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    body += "<section id=\"health\"><h2>Gateways</h2><table><tr><th>store</th><th>gateway</th><th>state</th><th>last seen</th>\
             <th>version</th><th>gaps (messages lost)</th><th>plugins</th><th>consent registry</th><th>bundles</th></tr>";
    for g in &health {
        let plugins: Vec<String> = g
            .plugins
            .iter()
            .map(|(p, s, v)| format!("{} {} ({})", esc(p), esc(v), esc(s)))
            .collect();
        let bundles: Vec<String> = g
            .bundles
            .iter()
            .map(|(p, v)| format!("{} {}", esc(p), esc(v)))
            .collect();
        let consent = match &g.consent {
            None => "–".into(),
            Some((v, None)) => format!("version {v}"),
            Some((v, Some(e))) => format!("version {v}, <span class=\"error\">{}</span>", esc(e)),
        };
        let _ = write!(
            body,
            "<tr class=\"gateway\"><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.site),
            esc(&g.gateway),
            esc(&g.state),
            esc(&g.state),
            ago(g.last_seen_ms),
            esc(&g.version),
            g.gaps,
            plugins.join(", "),
            consent,
            if bundles.is_empty() {
                "–".into()
            } else {
                bundles.join(", ")
            }
        );
    }
    body += "</table></section>";
    page(name, Some(user), &body).into_response()
}

async fn csv(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((scope, name, chart)): Path<(String, String, String)>,
) -> Response {
    if let Err(r) = app.user(&headers) {
        return r.into_response();
    }
    let sites = match scope.as_str() {
        "site" => vec![name.clone()],
        "group" => match app.sites_of_group(&name) {
            Some(s) => s,
            None => return (StatusCode::NOT_FOUND, "no such group").into_response(),
        },
        _ => return (StatusCode::NOT_FOUND, "scope is site or group").into_response(),
    };
    let tz = app.config.zone_of(&sites);
    let day = match queries::latest(&app.db, &sites, &tz).await {
        Ok(Some((day, _))) => day,
        Ok(None) => return (StatusCode::NOT_FOUND, "no data").into_response(),
        Err(e) => return fail(e),
    };
    let charts = match charts(&app.db, &sites, &day).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match charts.into_iter().find(|c| c.id == chart) {
        Some(c) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}-{}.csv\"", c.id),
                ),
            ],
            c.csv(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such chart").into_response(),
    }
}

async fn definitions(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let user = match app.user(&headers) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    page("Definitions", Some(&user), DEFINITIONS).into_response()
}

const DEFINITIONS: &str = include_str!("definitions.html");

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let s = &app.stats;
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            "{{\"subscribed\":{},\"received\":{},\"stored\":{},\"repeats\":{},\"invalid\":{},\"engine\":\"{}\"}}",
            s.subscribed.load(Ordering::Relaxed),
            s.received.load(Ordering::Relaxed),
            s.stored.load(Ordering::Relaxed),
            s.repeats.load(Ordering::Relaxed),
            s.invalid.load(Ordering::Relaxed),
            app.db.engine()
        ),
    )
        .into_response()
}

async fn consent_desk(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let user = match app.user(&headers) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    render_desk(&app, &user, "").await
}

async fn render_desk(app: &App, user: &str, message: &str) -> Response {
    let mut body = format!(
        "<section><h1>Consent desk</h1>{message}<p class=\"note\">Enter the MAC address from a shopper's request. \
         The service computes its consent id with the site's key and publishes an opt-out to every gateway of the store; \
         the MAC itself is neither stored nor logged.</p><form method=\"post\" action=\"/consent\">\
         <label>Store <select name=\"site\" id=\"site\">"
    );
    for s in app.config.sites.keys() {
        let _ = write!(body, "<option>{}</option>", esc(s));
    }
    body += "</select></label> <label>MAC <input name=\"mac\" id=\"mac\" placeholder=\"aa:bb:cc:dd:ee:ff\" required></label> \
             <button id=\"opt-out\">Opt out</button></form></section>";
    match consent::requests_html(&app.db).await {
        Ok(table) => body += &table,
        Err(e) => return fail(e),
    }
    page("Consent desk", Some(user), &body).into_response()
}

async fn consent_submit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let user = match app.user(&headers) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let site = form.get("site").cloned().unwrap_or_default();
    let mac = form.get("mac").cloned().unwrap_or_default();
    let message = match consent::opt_out(&app, &site, &mac, "staff").await {
        Ok(_) => "<p class=\"ok\">Published. The table shows when each gateway confirms it.</p>"
            .to_owned(),
        Err(e) => format!("<p class=\"error\">{}</p>", esc(&e.to_string())),
    };
    render_desk(&app, &user, &message).await
}

async fn optout_page(State(app): State<Arc<App>>, Path(site): Path<String>) -> Response {
    if !app.config.sites.contains_key(&site) {
        return (StatusCode::NOT_FOUND, "no such store").into_response();
    }
    page("Opt out", None, &optout_form(&site, "")).into_response()
}

fn optout_form(site: &str, message: &str) -> String {
    format!(
        "<section><h1>Opt out of footfall counting</h1>{message}<p>This store counts visitors from the Wi-Fi probe requests \
         phones send. Enter your device's Wi-Fi MAC address and the store's sensors will ignore it from now on. \
         We keep only a keyed hash of the address, never the address itself.</p>\
         <p class=\"note\">Most phones use a different, random address for probing; an opt-out covers the address you enter.</p>\
         <form method=\"post\" action=\"/optout/{0}\"><label>Wi-Fi MAC address <input name=\"mac\" id=\"mac\" \
         placeholder=\"aa:bb:cc:dd:ee:ff\" required></label> <button id=\"opt-out\">Opt out</button></form></section>",
        esc(site)
    )
}

/// The client's address: the peer's, or behind a trusted reverse proxy the address the proxy
/// appended to `X-Forwarded-For`.
fn client_address(app: &App, peer: std::net::IpAddr, headers: &HeaderMap) -> std::net::IpAddr {
    if !app.config.optout.trusted_proxies.contains(&peer) {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(peer)
}

async fn optout_submit(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let client = client_address(&app, peer.ip(), &headers);
    if !app.optout_limit.allow(client, Instant::now()) {
        tracing::warn!("opt-out page: rate limit reached by one client address");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "3600")],
            page(
                "Opt out",
                None,
                "<section><h1>Opt out of footfall counting</h1><p class=\"error\" id=\"rate-limited\">\
                 Too many requests from your network. Please try again in an hour, or ask the store's staff.</p></section>",
            ),
        )
            .into_response();
    }
    let mac = form.get("mac").cloned().unwrap_or_default();
    match consent::opt_out(&app, &site, &mac, "public").await {
        Ok(request) => Redirect::to(&format!("/optout/{site}/{request}")).into_response(),
        Err(e) => page(
            "Opt out",
            None,
            &optout_form(
                &site,
                &format!("<p class=\"error\">{}</p>", esc(&e.to_string())),
            ),
        )
        .into_response(),
    }
}

async fn optout_status(
    State(app): State<Arc<App>>,
    Path((site, request)): Path<(String, i64)>,
) -> Response {
    match consent::confirmation(&app.db, &site, request).await {
        Ok(Some((confirmed, total))) => {
            let state = if total > 0 && confirmed == total {
                "<p id=\"confirmed\" class=\"online\">Done: every sensor in this store now ignores your device.</p>".to_owned()
            } else {
                format!(
                    "<p id=\"pending\">Sent; {confirmed} of {total} sensors have confirmed so far. This page refreshes itself.</p>\
                     <meta http-equiv=\"refresh\" content=\"3\">"
                )
            };
            page(
                "Opt out",
                None,
                &format!("<section><h1>Your opt-out</h1>{state}</section>"),
            )
            .into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such request").into_response(),
        Err(e) => fail(e),
    }
}
