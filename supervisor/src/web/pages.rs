//! Server-rendered pages and the embedded static assets (the box is offline: no CDN).

use axum::extract::State;
use axum::http::{header, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::WebState;
use crate::auth::session::Session;

const CSS: &str = include_str!("assets/app.css");
const CHAT_JS: &str = include_str!("assets/chat.js");
const SESSION_JS: &str = include_str!("assets/session.js");
const RENDER_JS: &str = include_str!("assets/render.js");

pub fn routes(state: WebState) -> Router {
    Router::new()
        .route("/", get(super::signin::home))
        .route(
            "/login",
            get(super::signin::login_form).post(super::signin::login),
        )
        .route("/logout", post(super::signin::logout))
        .route("/chat", get(super::chat::chat_page))
        .route(
            "/api/chat",
            post(super::chat::chat_api)
                .layer(axum::extract::DefaultBodyLimit::max(super::chat::MAX_BODY)),
        )
        .route("/assets/app.css", get(css))
        .route("/assets/chat.js", get(chat_js))
        .route("/assets/session.js", get(session_js))
        .route("/assets/render.js", get(render_js))
        .route("/conversations", get(super::conversations::list))
        .route("/conversations/{id}", get(super::conversations::show))
        .route("/admin", get(super::admin::admin_page))
        .route("/admin/sessions/end", post(super::admin::end_session))
        .route("/break-glass/ack", post(super::oversight::acknowledge))
        .route("/review", get(super::oversight::review_page))
        .route("/compliance", get(super::oversight::compliance_page))
        .route(
            "/investigate",
            get(super::investigate::investigate_form).post(super::investigate::investigate),
        )
        .route("/api/session", get(super::signin::session_status))
        .route("/api/activity", post(super::signin::activity))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::access::enforce,
        ))
        .fallback(not_found)
        .with_state(state)
}

/// HTML-escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page frame: title, stylesheet, the dev banner when in dev mode.
pub fn page(state: &WebState, title: &str, body: &str) -> Html<String> {
    frame(state, title, body, None)
}

/// The signed-in pages' navigation: (route, label, what it is for); each user sees the ones
/// their role may open.
pub const NAV: &[(&str, &str, &str)] = &[
    ("/", "Home", "start page"),
    (
        "/chat",
        "Assistant",
        "summaries, drafts and reports from your notes",
    ),
    (
        "/conversations",
        "My conversations",
        "your earlier questions and answers",
    ),
    (
        "/admin",
        "Administration",
        "signed-in users, ending sessions",
    ),
    ("/review", "Audit review", "the audit trail's review report"),
    (
        "/investigate",
        "Investigations",
        "a session's transcript, checked against the trail",
    ),
    ("/compliance", "Compliance", "how this box is configured"),
];

/// A signed-in page: who is signed in, the navigation for their role, sign-out, the session's
/// CSRF token and the idle-lock script, which removes every `data-phi` element from the page
/// when the session ends for inactivity.
pub fn signed_in_page(state: &WebState, s: &Session, title: &str, body: &str) -> Html<String> {
    let who = &s.identity;
    let nav: String = NAV
        .iter()
        .filter(|(href, _, _)| super::access::allows(&Method::GET, href, who.role))
        .map(|(href, label, _)| format!(r#"<a href="{href}">{}</a>"#, escape(label)))
        .collect::<Vec<_>>()
        .join(" ");
    let emergency = if who.break_glass {
        r#"<div class="banner emergency">Emergency (break-glass) access: every action is recorded and reviewed; this session ends after 60 minutes.</div>"#
    } else {
        ""
    };
    let header = format!(
        r#"{emergency}<header class="top"><nav>{nav}</nav><span>Signed in as <strong>{name}</strong> ({role}{dept})</span>
<form method="post" action="/logout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Sign out</button></form></header>"#,
        name = escape(&who.display_name),
        role = escape(who.role.title()),
        dept = who
            .department
            .as_deref()
            .map(|d| format!(", {}", escape(d)))
            .unwrap_or_default(),
        csrf = escape(&s.csrf),
    );
    frame(state, title, &format!("{header}{body}"), Some(&s.csrf))
}

fn frame(state: &WebState, title: &str, body: &str, csrf: Option<&str>) -> Html<String> {
    let (body_attr, script) = match csrf {
        Some(t) => (
            format!(r#" data-csrf="{}""#, escape(t)),
            r#"<script src="/assets/session.js" defer></script>"#,
        ),
        None => (String::new(), ""),
    };
    let banner = if state.dev {
        r#"<div class="banner dev">Development mode: self-signed certificate, unencrypted data directory. Never enter real patient data.</div>"#
    } else {
        ""
    };
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · phibox</title><link rel="stylesheet" href="/assets/app.css">{script}</head>
<body{body_attr}>{banner}<main>{body}</main></body>
</html>
"#,
        title = escape(title),
    ))
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

async fn chat_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        CHAT_JS,
    )
        .into_response()
}

async fn session_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SESSION_JS,
    )
        .into_response()
}

async fn render_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        RENDER_JS,
    )
        .into_response()
}

async fn not_found(State(state): State<WebState>) -> Response {
    (
        StatusCode::NOT_FOUND,
        page(&state, "Not found", "<h1>Not found</h1>"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            super::escape(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
