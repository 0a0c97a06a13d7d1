//! Who may use which route: one table, enforced by one middleware before any handler runs, and
//! walked by the tests for every role and for anonymous requests. A route missing from the
//! table is refused (fail closed). Handlers still check what only they can (CSRF tokens,
//! templates per role). The middleware hands the signed-in session to the handlers as a
//! request extension (`Extension<Session>`), having counted the request as activity.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::signin::{cookie_session, record_timeout};
use super::WebState;
use crate::auth::session::Invalid;
use crate::auth::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in user.
    SignedIn,
    /// Signed-in users with one of these roles.
    Roles(&'static [Role]),
}

/// The roles that chat with the assistant.
pub const CLINICAL: &[Role] = &[Role::Clinician, Role::Nurse];

/// (method, route, access) for every route the UI serves.
pub const POLICY: &[(Method, &str, Access)] = &[
    (Method::GET, "/", Access::SignedIn),
    (Method::GET, "/login", Access::Public),
    (Method::POST, "/login", Access::Public),
    (Method::POST, "/logout", Access::SignedIn),
    (Method::GET, "/chat", Access::Roles(CLINICAL)),
    (Method::POST, "/api/chat", Access::Roles(CLINICAL)),
    (Method::GET, "/api/session", Access::SignedIn),
    (Method::POST, "/api/activity", Access::SignedIn),
    (Method::GET, "/assets/app.css", Access::Public),
    (Method::GET, "/assets/chat.js", Access::Public),
    (Method::GET, "/assets/session.js", Access::Public),
    (Method::GET, "/assets/render.js", Access::Public),
    (Method::GET, "/conversations", Access::Roles(CLINICAL)),
    (Method::GET, "/conversations/{id}", Access::Roles(CLINICAL)),
    (Method::GET, "/admin", Access::Roles(&[Role::Admin])),
    (
        Method::POST,
        "/admin/sessions/end",
        Access::Roles(&[Role::Admin]),
    ),
    (
        Method::POST,
        "/break-glass/ack",
        Access::Roles(&[Role::Admin, Role::Auditor]),
    ),
    (
        Method::GET,
        "/review",
        Access::Roles(&[Role::Auditor, Role::PrivacyOfficer]),
    ),
    (
        Method::GET,
        "/investigate",
        Access::Roles(&[Role::PrivacyOfficer]),
    ),
    (
        Method::POST,
        "/investigate",
        Access::Roles(&[Role::PrivacyOfficer]),
    ),
    (
        Method::GET,
        "/compliance",
        Access::Roles(&[Role::Admin, Role::Auditor, Role::PrivacyOfficer]),
    ),
];

/// The route the open page polls for the idle time left: looking is not activity.
pub const IDLE_POLL: &str = "/api/session";

/// The rule for a request, if the table has one.
pub fn rule(method: &Method, route: &str) -> Option<Access> {
    POLICY
        .iter()
        .find(|(m, r, _)| m == method && *r == route)
        .map(|(_, _, a)| *a)
}

/// Whether a signed-in user of `role` may use a route (the table's answer).
pub fn allows(method: &Method, route: &str, role: Role) -> bool {
    match rule(method, route) {
        Some(Access::Public | Access::SignedIn) => true,
        Some(Access::Roles(roles)) => roles.contains(&role),
        None => false,
    }
}

fn api(route: &str) -> bool {
    route.starts_with("/api/")
}

fn refuse(route: &str, status: StatusCode, message: &str) -> Response {
    if api(route) {
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    } else {
        (status, message.to_owned()).into_response()
    }
}

fn sign_in_first(route: &str, expired: bool) -> Response {
    if api(route) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({ "error": "sign in first", "expired": expired })),
        )
            .into_response();
    }
    Redirect::to(if expired {
        "/login?expired=1"
    } else {
        "/login"
    })
    .into_response()
}

/// The middleware (a route layer, so that the matched route is known).
pub async fn enforce(State(state): State<WebState>, req: Request, next: Next) -> Response {
    let Some(route) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    let Some(access) = rule(req.method(), &route) else {
        tracing::error!(%route, method = %req.method(), "a route without an access rule was refused");
        return refuse(&route, StatusCode::FORBIDDEN, "not allowed");
    };
    if access == Access::Public {
        return next.run(req).await;
    }
    // Every request counts as activity except the page's idle poll, which only looks.
    let look = |id: String| {
        if route == IDLE_POLL {
            state.auth.sessions.peek(&id)
        } else {
            state.auth.sessions.touch(&id)
        }
    };
    let session = match cookie_session(req.headers()).map(look) {
        Some(Ok(s)) => s,
        Some(Err(invalid)) => {
            let expired = !matches!(invalid, Invalid::Unknown);
            record_timeout(&state, &invalid).await;
            return sign_in_first(&route, expired);
        }
        None => return sign_in_first(&route, false),
    };
    if let Access::Roles(roles) = access {
        if !roles.contains(&session.identity.role) {
            return refuse(
                &route,
                StatusCode::FORBIDDEN,
                "your role does not give access to this page",
            );
        }
    }
    let mut req = req;
    req.extensions_mut().insert(session);
    let mut res = next.run(req).await;
    if !api(&route) {
        res.headers_mut()
            .entry(header::VARY)
            .or_insert(header::HeaderValue::from_static("Cookie"));
    }
    res
}
