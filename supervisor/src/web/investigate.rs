//! The privacy officer's investigation: a session's transcript, retrieved by the session's
//! reference (from the audit review) with a stated reason, and checked turn by turn against the
//! trail's keyed hashes. The retrieval is recorded before anything is shown (category, the
//! reason's keyed hash and length; the reason's text stays beside the transcripts).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use jiff::SignedDuration;
use sandbox::protocol::Phi;
use serde::Deserialize;

use super::oversight::break_glass_banner;
use super::pages::{escape, signed_in_page};
use super::signin::{actor_of, check_post, record_first};
use super::WebState;
use crate::audit::transcript::{check, Turn};
use crate::audit::{Action, Entry};
use crate::auth::session::Session;
use crate::store::investigations::Category;

/// Shortest and longest stated reason, in characters.
pub const REASON_MIN: usize = 20;
pub const REASON_MAX: usize = 2000;

fn form_html(s: &Session, session: &str, message: Option<&str>) -> String {
    let options: String = Category::ALL
        .iter()
        .map(|c| {
            format!(
                r#"<option value="{}">{}</option>"#,
                c.name(),
                escape(c.title())
            )
        })
        .collect();
    let note = message
        .map(|m| format!(r#"<p class="notice" role="alert">{}</p>"#, escape(m)))
        .unwrap_or_default();
    format!(
        r#"<h1>Investigations</h1>{note}
<p>Retrieving a transcript is recorded in the audit trail with your reason. Find the session's reference in the audit review.</p>
<form method="post" action="/investigate" class="investigate">
<input type="hidden" name="csrf" value="{csrf}">
<label>Session reference <input name="session" value="{session}" required pattern="[0-9a-f]{{32}}" size="34"></label>
<label>Category <select name="category">{options}</select></label>
<label>Reason (at least {REASON_MIN} characters: case number, complaint, request) <textarea name="reason" rows="3" minlength="{REASON_MIN}" maxlength="{REASON_MAX}" required></textarea></label>
<button type="submit">Retrieve the transcript</button>
</form>"#,
        csrf = escape(&s.csrf),
        session = escape(session),
    )
}

/// `GET /investigate`.
pub async fn investigate_form(
    State(state): State<WebState>,
    Extension(s): Extension<Session>,
) -> Response {
    let banner = break_glass_banner(&state, &s).await;
    signed_in_page(
        &state,
        &s,
        "Investigations",
        &format!("{banner}{}", form_html(&s, "", None)),
    )
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct InvestigateForm {
    csrf: String,
    session: String,
    category: String,
    reason: String,
}

/// `POST /investigate`: records the retrieval, then shows the transcript and its check.
pub async fn investigate(
    State(state): State<WebState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<InvestigateForm>,
) -> Response {
    if let Err(r) = check_post(&headers, &s, &form.csrf) {
        return r;
    }
    let session = form.session.trim().to_ascii_lowercase();
    let refuse = |message: &str| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            signed_in_page(
                &state,
                &s,
                "Investigations",
                &form_html(&s, &session, Some(message)),
            ),
        )
            .into_response()
    };
    if session.len() != 32 || !session.bytes().all(|b| b.is_ascii_hexdigit()) {
        return refuse(
            "A session reference is 32 hexadecimal characters, as the audit review shows it.",
        );
    }
    let Some(category) = Category::parse(&form.category) else {
        return refuse("Choose a category.");
    };
    let reason = Phi(form.reason.trim().to_owned());
    let chars = reason.0.chars().count();
    if !(REASON_MIN..=REASON_MAX).contains(&chars) {
        return refuse(&format!(
            "State the reason in {REASON_MIN} to {REASON_MAX} characters."
        ));
    }
    let now = state.auth.sessions.now();
    let id = match state
        .store
        .record_investigation(now, &s.identity.user_id, &session, category, &reason)
        .await
    {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot store an investigation");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            )
                .into_response();
        }
    };
    let key = state.auth.audit.hash_key();
    let e = Entry::new(Action::TranscriptAccess)
        .actor(&actor_of(&s))
        .detail("target_session", session.clone())
        .detail("category", category.name())
        .detail("reason_hash", key.hash(&reason.0))
        .detail("reason_length_chars", chars.to_string())
        .detail("investigation", id.to_string());
    if let Err(r) = record_first(&state, e).await {
        return r;
    }

    let turns = match state.store.session_turns(&session).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot read a transcript");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            )
                .into_response();
        }
    };
    // The session's records: sessions last at most 12 hours, so a day around its turns holds
    // them; without turns, the retention period.
    let (since, until) = match (turns.first(), turns.last()) {
        (Some(a), Some(b)) => (
            a.started - SignedDuration::from_hours(1),
            b.started + SignedDuration::from_hours(24),
        ),
        _ => (
            now - SignedDuration::from_hours(
                24 * i64::from(state.config.transcripts.retention_days + 1),
            ),
            now,
        ),
    };
    let records = match super::oversight::read_records(&state, since, until).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let checked = check(
        key,
        &session,
        &turns
            .iter()
            .map(|t| Turn {
                user: t.user_text.clone(),
                response: t.response.clone(),
            })
            .collect::<Vec<_>>(),
        &records,
    );
    let verdict = if turns.is_empty() && checked.unmatched_requests.is_empty() {
        r#"<p class="notice">No transcript and no chat records for this session (it did not chat, or its transcript is past the retention period).</p>"#.to_owned()
    } else if checked.matches() {
        format!(
            r#"<p class="ok" id="verdict">The transcript matches the audit trail: {} turn(s), each request and response hash equal.</p>"#,
            turns.len()
        )
    } else {
        format!(
            r#"<p class="warn" id="verdict">The transcript does NOT match the audit trail.{}</p>"#,
            if checked.unmatched_requests.is_empty() {
                String::new()
            } else {
                format!(
                    " Requests recorded without a stored turn: seq {}.",
                    checked
                        .unmatched_requests
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )
    };
    let body: String = turns
        .iter()
        .zip(&checked.turns)
        .map(|(t, c)| {
            let mark = |ok: bool, seq: Option<u64>| match (ok, seq) {
                (true, Some(n)) => format!(r#"<span class="ok">matches record {n}</span>"#),
                (false, Some(n)) => format!(r#"<span class="warn">differs from record {n}</span>"#),
                _ => r#"<span class="warn">no record</span>"#.to_owned(),
            };
            format!(
                r#"<article class="turn"><h3>{at:.0} · {user} · {template} · {finish}</h3>
<h4>Request ({req})</h4><pre data-phi>{text}</pre>
<h4>Response ({resp})</h4><pre data-phi>{response}</pre></article>"#,
                at = t.started,
                user = escape(&t.user_id),
                template = escape(&t.template),
                finish = escape(&t.finish),
                req = mark(c.user_matches, c.request_seq),
                resp = mark(c.response_matches, c.response_seq),
                text = escape(&t.user_text.0),
                response = escape(&t.response.0),
            )
        })
        .collect();
    signed_in_page(
        &state,
        &s,
        "Investigation",
        &format!(
            r#"<h1>Investigation {id}</h1>
<p>Session <code>{session}</code> · {category} · retrieval recorded in the audit trail.</p>
{verdict}{body}"#,
            category = escape(category.title()),
        ),
    )
    .into_response()
}
