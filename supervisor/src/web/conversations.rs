//! The user's own conversation list: their earlier turns (within the retention period), each
//! readable again by them and nobody else here (the privacy officer's way is an investigation).
//! Opening one is recorded as a transcript access of their own.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::pages::{escape, page, signed_in_page};
use super::signin::{actor_of, record_first};
use super::templates;
use super::WebState;
use crate::audit::{Action, Entry};
use crate::auth::session::Session;

/// How many turns the list shows.
pub const LIST_LIMIT: u32 = 100;

fn template_title(id: &str) -> &str {
    templates::TEMPLATES
        .iter()
        .find(|t| t.id == id)
        .map_or(id, |t| t.title)
}

/// `GET /conversations`.
pub async fn list(State(state): State<WebState>, Extension(s): Extension<Session>) -> Response {
    let turns = match state
        .store
        .user_turns(&s.identity.user_id, LIST_LIMIT)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot list conversations");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            )
                .into_response();
        }
    };
    let rows: String = turns
        .iter()
        .map(|t| {
            format!(
                r#"<li><a href="/conversations/{id}">{at:.0} · {template}</a> · {finish}</li>"#,
                id = t.id,
                at = t.started,
                template = escape(template_title(&t.template)),
                finish = escape(&t.finish),
            )
        })
        .collect();
    let empty = if turns.is_empty() {
        "<p>No conversations yet.</p>"
    } else {
        ""
    };
    signed_in_page(
        &state,
        &s,
        "My conversations",
        &format!(
            r#"<h1>My conversations</h1>
<p>Kept for {} days, then deleted.</p>{empty}<ul class="conversations">{rows}</ul>"#,
            state.config.transcripts.retention_days
        ),
    )
    .into_response()
}

/// `GET /conversations/{id}`: one of the user's own turns.
pub async fn show(
    State(state): State<WebState>,
    Extension(s): Extension<Session>,
    Path(id): Path<i64>,
) -> Response {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            page(&state, "Not found", "<h1>Not found</h1>"),
        )
            .into_response()
    };
    let turn = match state.store.user_turn(&s.identity.user_id, id).await {
        Ok(Some(t)) => t,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot read a conversation");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            )
                .into_response();
        }
    };
    let e = Entry::new(Action::TranscriptAccess)
        .actor(&actor_of(&s))
        .detail("scope", "own")
        .detail("target_session", turn.session_id.clone())
        .detail("request_seq", turn.request_seq.to_string());
    if let Err(r) = record_first(&state, e).await {
        return r;
    }
    signed_in_page(
        &state,
        &s,
        "Conversation",
        &format!(
            r#"<h1>{template}</h1>
<p>{at:.0} · {finish}</p>
<h2>You asked</h2><pre data-phi>{text}</pre>
<h2>Answer</h2><div class="reply" data-phi data-md>{response}</div>
<p class="notice">Draft for clinician review.</p>
<p><a href="/conversations">All conversations</a></p>
<script src="/assets/render.js" defer></script>"#,
            template = escape(template_title(&turn.template)),
            at = turn.started,
            finish = escape(&turn.finish),
            text = escape(&turn.user_text.0),
            response = escape(&turn.response.0),
        ),
    )
    .into_response()
}
