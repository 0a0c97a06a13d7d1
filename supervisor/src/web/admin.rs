//! The administrator's page: who is signed in (never what they wrote) and ending a session at
//! once. Sessions are named by their public reference; the cookie's secret never appears.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::oversight::break_glass_banner;
use super::pages::{escape, signed_in_page};
use super::signin::{actor_of, check_post, record_first};
use super::WebState;
use crate::audit::{Action, Entry};
use crate::auth::session::Session;

/// `GET /admin`.
pub async fn admin_page(
    State(state): State<WebState>,
    Extension(s): Extension<Session>,
) -> Response {
    let now = state.auth.sessions.now();
    let rows: String = state
        .auth
        .sessions
        .list()
        .iter()
        .map(|x| {
            let who = &x.identity;
            let end = if x.reference == s.reference {
                "(this session)".to_owned()
            } else {
                format!(
                    r#"<form method="post" action="/admin/sessions/end" class="inline"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="session" value="{r}"><button type="submit">End session</button></form>"#,
                    csrf = escape(&s.csrf),
                    r = escape(&x.reference)
                )
            };
            format!(
                "<tr><td>{user}</td><td>{name}</td><td>{role}{bg}</td><td>{dept}</td><td>{since:.0}</td><td>{idle} min ago</td><td>{ip}</td><td><code>{r}</code></td><td>{end}</td></tr>",
                user = escape(&who.user_id),
                name = escape(&who.display_name),
                role = escape(who.role.title()),
                bg = if who.break_glass { " <strong>(break-glass)</strong>" } else { "" },
                dept = escape(who.department.as_deref().unwrap_or("-")),
                since = x.created,
                idle = now.duration_since(x.last_seen).as_mins(),
                ip = escape(x.client_ip.as_deref().unwrap_or("-")),
                r = escape(&x.reference),
            )
        })
        .collect();
    let banner = break_glass_banner(&state, &s).await;
    let model = super::model_status::section(&state);
    signed_in_page(
        &state,
        &s,
        "Administration",
        &format!(
            r#"{banner}<h1>Administration</h1>
<h2>Signed-in users</h2>
<table class="report" id="sessions"><thead><tr><th>User</th><th>Name</th><th>Role</th><th>Department</th><th>Signed in (UTC)</th><th>Last activity</th><th>Address</th><th>Session</th><th></th></tr></thead><tbody>{rows}</tbody></table>
<p>Ending a session signs the user out at once; their open page locks itself at its next check.</p>
{model}"#
        ),
    )
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct EndForm {
    csrf: String,
    session: String,
}

/// `POST /admin/sessions/end`: ends a session now, recorded as the administrator's action and
/// as the user's sign-out.
pub async fn end_session(
    State(state): State<WebState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<EndForm>,
) -> Response {
    if let Err(r) = check_post(&headers, &s, &form.csrf) {
        return r;
    }
    let Some(target) = state
        .auth
        .sessions
        .list()
        .into_iter()
        .find(|x| x.reference == form.session)
    else {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/admin")]).into_response();
    };
    let e = Entry::new(Action::AdminAction)
        .actor(&actor_of(&s))
        .detail("action", "session_ended")
        .detail("target_user", target.identity.user_id.clone())
        .detail("target_session", target.reference.clone());
    if let Err(r) = record_first(&state, e).await {
        return r;
    }
    if let Some(ended) = state.auth.sessions.end_by_reference(&target.reference) {
        let e = Entry::new(Action::Logout)
            .actor(&actor_of(&ended))
            .detail("reason", "ended_by_admin")
            .detail("by", s.identity.user_id.clone());
        if let Err(e) = state.auth.audit.append(e).await {
            tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot record an ended session");
        }
    }
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/admin")]).into_response()
}
