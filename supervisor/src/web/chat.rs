//! The chat page and its streaming endpoint. `POST /api/chat` takes `{template, text}` as JSON
//! (same origin, the session's CSRF token in `X-CSRF-Token`, bodies over 64 KiB refused with
//! 413, text over the prompt cap explained with 422, never truncated) and answers with a
//! `text/event-stream`: `token` events carrying JSON strings, then `done` or `error`. It runs
//! through [`crate::chat::Chat`], so the request record is durable before inference starts and
//! the response record before the final event; a browser that goes away (the stop button)
//! cancels the generation, recorded as cancelled.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sandbox::protocol::{Message, Phi, Role as MsgRole, Sampling};
use serde::Deserialize;

use super::pages::{escape, page, signed_in_page};
use super::signin::{actor_of, same_origin};
use super::templates;
use super::WebState;
use crate::auth::session::Session;
use crate::chat::ChatError;
use crate::inference::StreamItem;

/// Largest request body of the chat endpoint.
pub const MAX_BODY: usize = 64 * 1024;

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

pub async fn chat_page(
    State(state): State<WebState>,
    Extension(s): Extension<Session>,
) -> Response {
    let options: String = templates::for_role(s.identity.role)
        .map(|t| format!(r#"<option value="{}">{}</option>"#, t.id, escape(t.title)))
        .collect();
    if options.is_empty() {
        return (
            StatusCode::FORBIDDEN,
            page(
                &state,
                "Chat",
                "<h1>Chat</h1><p>Your role does not use the assistant.</p>",
            ),
        )
            .into_response();
    }
    let cap = state.prompt_cap;
    signed_in_page(
        &state,
        &s,
        "Chat",
        &format!(
            r#"<h1>Chat</h1>
<p class="notice">Every answer is a draft for clinician review. Enter only what the task needs.</p>
<form id="chat" data-csrf="{csrf}">
<label>Template <select name="template">{options}</select></label>
<label>Text <textarea name="text" rows="10" maxlength="{cap}" required data-phi></textarea></label>
<button type="submit" id="send">Send</button> <button type="button" id="stop" disabled>Stop</button>
</form>
<p id="status" role="status"></p>
<section id="reply" class="reply" aria-live="polite" data-phi></section>
<p class="notice">Draft for clinician review.</p>
<script src="/assets/render.js" defer></script>
<script src="/assets/chat.js" defer></script>"#,
            csrf = escape(&s.csrf),
        ),
    )
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    template: String,
    text: String,
}

fn event(name: &str, data: &serde_json::Value) -> Result<Event, Infallible> {
    Ok(Event::default().event(name).data(data.to_string()))
}

pub async fn chat_api(
    State(state): State<WebState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !same_origin(&headers) {
        return json_error(StatusCode::FORBIDDEN, "cross-site request refused");
    }
    let token = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    if token != Some(s.csrf.as_str()) {
        return json_error(StatusCode::FORBIDDEN, "the page has expired; reload it");
    }
    let Json(req) = match body {
        Ok(b) => b,
        Err(rejection) => return json_error(rejection.status(), "the request is not valid"),
    };
    let Some(template) = templates::find(&req.template, s.identity.role) else {
        return json_error(
            StatusCode::FORBIDDEN,
            "this template is not available to your role",
        );
    };
    let chars = req.text.chars().count();
    if req.text.trim().is_empty() {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, "the text is empty");
    }
    if chars > state.prompt_cap {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "the text has {chars} characters; the limit is {} (minimum necessary: paste only \
                 the part of the record the task needs)",
                state.prompt_cap
            ),
        );
    }
    let Some(chat) = state.chat.clone() else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "inference is not available",
        );
    };
    let messages = vec![Message {
        role: MsgRole::User,
        content: Phi(format!("{}\n\n{}", template.instruction, req.text)),
    }];
    let sampling = Sampling {
        max_tokens: state.reply_tokens,
        ..Sampling::default()
    };
    let stream = match chat
        .start(&actor_of(&s), template.id, messages, sampling)
        .await
    {
        Ok(stream) => stream,
        Err(ChatError::Audit(_)) => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the audit trail is unavailable",
            )
        }
        Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let events = futures_util::stream::unfold(Some(stream), |st| async move {
        let mut s = st?;
        let item = s.next().await?;
        let (ev, more) = match item {
            Ok(StreamItem::Token(t)) => (event("token", &serde_json::Value::String(t.0)), true),
            Ok(StreamItem::Done { finish, usage }) => (
                event(
                    "done",
                    &serde_json::json!({
                        "finish": finish.name(),
                        "tokens": usage.generated_tokens,
                    }),
                ),
                false,
            ),
            Ok(StreamItem::Failed(e)) => (
                event("error", &serde_json::Value::String(e.to_string())),
                false,
            ),
            Err(e) => (
                event(
                    "error",
                    &serde_json::Value::String(sandbox::error_chain::chain(&e)),
                ),
                false,
            ),
        };
        Some((ev, more.then_some(s)))
    });
    Sse::new(events).into_response()
}
