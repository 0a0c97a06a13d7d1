//! Sign-in, sign-out and the session check every page uses. One generic message for an unknown
//! user and a wrong password; every attempt is audited; a new session id at every sign-in;
//! sign-out ends the session server-side at once. State-changing requests must come from this
//! site (`Origin` equal to the request's own origin) and, once signed in, carry the session's
//! CSRF token; the cookie is SameSite=Strict as well.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::pages::{escape, page, signed_in_page};
use super::WebState;
use crate::audit::{Action, Actor, Entry};
use crate::auth::session::{random_token, Invalid, Session, Sessions, COOKIE, LOGIN_COOKIE};

/// A 64-hex-digit token cookie's value.
fn token_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == name && v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|(_, v)| v.to_owned())
}

/// The session id in a request's cookies.
pub fn cookie_session(headers: &HeaderMap) -> Option<String> {
    token_cookie(headers, COOKIE)
}

/// Whether a state-changing request comes from this site. A browser names the origin in
/// `Origin`, except that a form post under `Referrer-Policy: no-referrer` (which every page
/// sends) carries `Origin: null`; then the fetch metadata header `Sec-Fetch-Site`, which pages
/// cannot set, must say `same-origin`. Any `Sec-Fetch-Site` other than `same-origin` is
/// refused whatever `Origin` says.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|h: &header::HeaderValue| h.to_str().ok())
    };
    let site = text("sec-fetch-site");
    if site.is_some_and(|s| s != "same-origin") {
        return false;
    }
    match (text(header::HOST.as_str()), text(header::ORIGIN.as_str())) {
        (_, None | Some("null")) => site == Some("same-origin"),
        (Some(h), Some(o)) => o == format!("https://{h}"),
        (None, Some(_)) => false,
    }
}

/// A signed-in form post: from this site and with the session's CSRF token.
// The error is the answer itself, handed straight back by the handler (axum's idiom).
#[allow(clippy::result_large_err)]
pub fn check_post(headers: &HeaderMap, s: &Session, csrf: &str) -> Result<(), Response> {
    if !same_origin(headers) {
        return Err((StatusCode::FORBIDDEN, "cross-site request refused").into_response());
    }
    if csrf != s.csrf {
        return Err((
            StatusCode::FORBIDDEN,
            "the form has expired; reload the page",
        )
            .into_response());
    }
    Ok(())
}

/// Appends a record that must exist before the action it records is done: if the trail
/// cannot take it, the caller answers with this 503 and does nothing (fail closed).
pub async fn record_first(state: &WebState, entry: Entry) -> Result<(), Response> {
    state.auth.audit.append(entry).await.map(|_| ()).map_err(|e| {
        tracing::error!(error = %sandbox::error_chain::chain(&e), "the audit trail refused a record; action not done");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit trail is unavailable, so this was not done",
        )
            .into_response()
    })
}

pub fn actor_of(s: &Session) -> Actor {
    Actor {
        user_id: Some(s.identity.user_id.clone()),
        user_role: Some(s.identity.role.name().to_owned()),
        department: s.identity.department.clone(),
        session_id: Some(s.reference.clone()),
        client_ip: s.client_ip.clone(),
    }
}

/// Records the end of a session by a timeout (best effort: logged if the trail fails).
pub async fn record_timeout(state: &WebState, invalid: &Invalid) {
    let (action, s, why) = match invalid {
        Invalid::Idle(s) => (Action::IdleLogout, s, "idle"),
        Invalid::Absolute(s) => (Action::Logout, s, "absolute_limit"),
        Invalid::Unknown => return,
    };
    let e = Entry::new(action).actor(&actor_of(s)).detail("reason", why);
    if let Err(e) = state.auth.audit.append(e).await {
        tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot record a session timeout");
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    expired: Option<String>,
}

/// The sign-in page with a fresh form token (also set as a cookie: double submit).
fn login_response(state: &WebState, status: StatusCode, message: Option<&str>) -> Response {
    let token = random_token();
    (
        status,
        [(
            header::SET_COOKIE,
            format!(
                "{LOGIN_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600"
            ),
        )],
        login_page(state, message, &token),
    )
        .into_response()
}

fn login_page(state: &WebState, message: Option<&str>, token: &str) -> Html<String> {
    let note = message
        .map(|m| format!(r#"<p class="notice" role="alert">{}</p>"#, escape(m)))
        .unwrap_or_default();
    page(
        state,
        "Sign in",
        &format!(
            r#"<h1>Sign in</h1>{note}
<form method="post" action="/login" class="signin">
<input type="hidden" name="login_token" value="{token}">
<label>User name <input name="user" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button>
</form>"#
        ),
    )
}

pub async fn login_form(State(state): State<WebState>, Query(q): Query<LoginQuery>) -> Response {
    let msg = q
        .expired
        .map(|_| "Your session ended after a period without activity. Please sign in again.");
    login_response(&state, StatusCode::OK, msg)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    #[serde(default)]
    login_token: String,
}

/// The one message for every failed sign-in.
pub const SIGN_IN_FAILED: &str = "Sign-in failed. Check your user name and password.";

/// What the user sees when the directory cannot be asked (not their fault; not counted).
pub const DIRECTORY_DOWN: &str = "The clinic sign-in directory cannot be reached. Try again in a \
     few minutes; in an emergency, use an emergency access account.";

pub async fn login(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    if token_cookie(&headers, LOGIN_COOKIE).as_deref() != Some(form.login_token.as_str()) {
        return login_response(
            &state,
            StatusCode::FORBIDDEN,
            Some("The sign-in form has expired. Please sign in again."),
        );
    }
    let ip = peer.ip().to_string();
    let user = form.user.trim();
    let user_id = (!user.is_empty() && user.len() <= 256).then(|| user.to_owned());
    let auth = &state.auth;
    let fail = |reason: &str| {
        Entry::new(Action::LoginFailure)
            .actor(&Actor {
                user_id: user_id.clone(),
                client_ip: Some(ip.clone()),
                ..Actor::default()
            })
            .detail("reason", reason)
    };
    if let Err(locked) = auth.throttle.check(user, peer.ip()) {
        let e = fail("locked_out").detail("scope", locked.key.scope());
        if let Err(e) = auth.audit.append(e).await {
            tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot record a refused sign-in");
        }
        let minutes = (locked.until.duration_since(auth.sessions.now()).as_secs() + 59) / 60;
        return login_response(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many failed sign-ins. Try again in {} minute(s), or ask the help desk.",
                minutes.max(1)
            )),
        );
    }
    let (method, verified) = auth.accounts.sign_in(user, &form.password).await;
    let identity = match verified {
        Ok(i) => i,
        Err(refusal) => {
            let mut entries = vec![fail(refusal.name()).detail("method", method.name())];
            let locks = if refusal.counts_as_failure() {
                auth.throttle.failed(user, peer.ip())
            } else {
                Vec::new()
            };
            for locked in locks {
                entries.push(
                    Entry::new(Action::Lockout)
                        .actor(&Actor {
                            user_id: user_id.clone(),
                            client_ip: Some(ip.clone()),
                            ..Actor::default()
                        })
                        .detail("scope", locked.key.scope())
                        .detail("until", format!("{:.0}", locked.until)),
                );
            }
            for e in entries {
                if let Err(e) = auth.audit.append(e).await {
                    tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot record a failed sign-in");
                }
            }
            return if refusal.counts_as_failure() {
                login_response(&state, StatusCode::UNAUTHORIZED, Some(SIGN_IN_FAILED))
            } else {
                login_response(
                    &state,
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(DIRECTORY_DOWN),
                )
            };
        }
    };
    auth.throttle.succeeded(user);
    // A new id at every sign-in: the browser's earlier session (if any) ends here.
    if let Some(old) = cookie_session(&headers) {
        auth.sessions.end(&old);
    }
    let session = auth.sessions.create(identity, Some(ip));
    let action = if session.identity.break_glass {
        Action::BreakGlassLogin
    } else {
        Action::LoginSuccess
    };
    let e = Entry::new(action)
        .actor(&actor_of(&session))
        .detail("method", method.name());
    if let Err(e) = auth.audit.append(e).await {
        // Fail closed: a sign-in that cannot be recorded does not happen.
        auth.sessions.end(&session.id);
        tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot record a sign-in; refused");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit trail is unavailable",
        )
            .into_response();
    }
    if session.identity.break_glass {
        // Listed for the administrators and auditors until one of them acknowledges it.
        let listed = state
            .store
            .record_break_glass(
                &session.identity.user_id,
                &session.reference,
                auth.sessions.now(),
            )
            .await;
        if let Err(e) = listed {
            auth.sessions.end(&session.id);
            tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot list a break-glass use; sign-in refused");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the box cannot record this emergency access; try again",
            )
                .into_response();
        }
    }
    let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    for cookie in [
        Sessions::cookie(&session.id),
        format!("{LOGIN_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(&cookie) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    res
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = check_post(&headers, &session, &form.csrf) {
        return r;
    }
    state.auth.sessions.end(&session.id);
    let e = Entry::new(Action::Logout)
        .actor(&actor_of(&session))
        .detail("reason", "user");
    if let Err(e) = state.auth.audit.append(e).await {
        tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot record a sign-out");
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, Sessions::clear_cookie()),
            (header::LOCATION, "/login".to_owned()),
        ],
    )
        .into_response()
}

/// The signed-in home page.
pub async fn home(State(state): State<WebState>, Extension(s): Extension<Session>) -> Response {
    let links: String = super::pages::NAV
        .iter()
        .skip(1)
        .filter(|(href, _, _)| {
            super::access::allows(&axum::http::Method::GET, href, s.identity.role)
        })
        .map(|(href, label, about)| {
            format!(
                r#"<li><a href="{href}">{}</a> — {}</li>"#,
                escape(label),
                escape(about)
            )
        })
        .collect();
    let banner = super::oversight::break_glass_banner(&state, &s).await;
    signed_in_page(
        &state,
        &s,
        "phibox",
        &format!(
            r#"{banner}<h1>phibox</h1>
<p>Local AI assistance for clinical notes. Nothing leaves this box.</p>
<ul class="links">{links}</ul>"#
        ),
    )
    .into_response()
}

/// `GET /api/session`: seconds of inactivity left, without counting this request as activity
/// (the page's idle lock polls it; the access layer only peeks for this route); 401 once the
/// session has ended.
pub async fn session_status(
    State(state): State<WebState>,
    Extension(s): Extension<Session>,
) -> Response {
    axum::Json(serde_json::json!({
        "idle_left": state.auth.sessions.idle_left(&s),
        "idle_timeout": state.auth.sessions.idle_timeout().as_secs(),
    }))
    .into_response()
}

/// `POST /api/activity`: the page reports typing or clicking (at most once a minute), which
/// counts as activity like any request.
pub async fn activity(Extension(s): Extension<Session>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    if headers.get("x-csrf-token").and_then(|v| v.to_str().ok()) != Some(s.csrf.as_str()) {
        return StatusCode::FORBIDDEN.into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Ends sessions whose time has passed, every `every`, recording each (runs until the state
/// is dropped by every other holder).
pub async fn sweep(state: WebState, every: std::time::Duration) {
    loop {
        tokio::time::sleep(every).await;
        for ended in state.auth.sessions.sweep() {
            record_timeout(&state, &ended).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn same_origin_needs_a_positive_signal_and_no_cross_site_one() {
        let host = ("host", "box.clinic:443");
        // Fetch (and older browsers): Origin names this site.
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://box.clinic:443")
        ])));
        // A form post under no-referrer: Origin null, fetch metadata says same-origin.
        assert!(same_origin(&headers(&[
            host,
            ("origin", "null"),
            ("sec-fetch-site", "same-origin")
        ])));
        // Refused: another origin, null without metadata, metadata saying otherwise, nothing.
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "https://box.clinic:443"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "null"),
            ("sec-fetch-site", "same-site")
        ])));
        assert!(!same_origin(&headers(&[host])));
        assert!(!same_origin(&headers(&[(
            "origin",
            "https://box.clinic:443"
        )])));
    }
}
