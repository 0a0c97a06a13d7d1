//! The oversight pages: the break-glass banner (on every page of administrators, auditors and
//! privacy officers until one of them acknowledges each use), the audit review report
//! (auditors and privacy officers) and the compliance page (how this box is configured).

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use super::pages::{escape, signed_in_page};
use super::signin::{actor_of, check_post, record_first};
use super::WebState;
use crate::audit::review::{review, ReviewOptions};
use crate::audit::{Action, Entry};
use crate::auth::session::{Session, ABSOLUTE, BREAK_GLASS_ABSOLUTE};
use crate::auth::Role;

/// The roles that see the break-glass banner.
pub const OVERSIGHT: &[Role] = &[Role::Admin, Role::Auditor, Role::PrivacyOfficer];

/// The banner listing unacknowledged break-glass uses (empty for other roles or when none).
pub async fn break_glass_banner(state: &WebState, s: &Session) -> String {
    if !OVERSIGHT.contains(&s.identity.role) {
        return String::new();
    }
    let pending = match state.store.pending_break_glass().await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot read the break-glass uses");
            return r#"<div class="banner emergency" role="alert">The list of break-glass uses cannot be read. Check the box's journal.</div>"#.to_owned();
        }
    };
    if pending.is_empty() {
        return String::new();
    }
    let can_ack = matches!(s.identity.role, Role::Admin | Role::Auditor);
    let items: String = pending
        .iter()
        .map(|u| {
            let ack = if can_ack {
                format!(
                    r#" <form method="post" action="/break-glass/ack" class="inline"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="id" value="{id}"><button type="submit">Acknowledge</button></form>"#,
                    csrf = escape(&s.csrf),
                    id = u.id
                )
            } else {
                String::new()
            };
            format!(
                "<li><strong>{user}</strong> signed in with an emergency account at {at:.0} (session {session}){ack}</li>",
                user = escape(&u.user_id),
                at = u.at,
                session = escape(&u.session_id),
            )
        })
        .collect();
    format!(
        r#"<div class="banner emergency" role="alert" id="break-glass"><p>Break-glass access was used and has not been reviewed:</p><ul>{items}</ul></div>"#
    )
}

#[derive(Debug, Deserialize)]
pub struct AckForm {
    csrf: String,
    id: i64,
}

/// `POST /break-glass/ack`: an administrator or auditor acknowledges one use (recorded first).
pub async fn acknowledge(
    State(state): State<WebState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<AckForm>,
) -> Response {
    if let Err(r) = check_post(&headers, &s, &form.csrf) {
        return r;
    }
    let pending = match state.store.pending_break_glass().await {
        Ok(p) => p,
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            )
                .into_response()
        }
    };
    let Some(used) = pending.into_iter().find(|u| u.id == form.id) else {
        return back_home();
    };
    let e = Entry::new(Action::AdminAction)
        .actor(&actor_of(&s))
        .detail("action", "break_glass_acknowledged")
        .detail("break_glass_user", used.user_id.clone())
        .detail("break_glass_session", used.session_id.clone());
    if let Err(r) = record_first(&state, e).await {
        return r;
    }
    if let Err(e) = state
        .store
        .acknowledge_break_glass(used.id, &s.identity.user_id, state.auth.sessions.now())
        .await
    {
        tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot store a break-glass acknowledgement");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable",
        )
            .into_response();
    }
    back_home()
}

/// The trail's records in a period, read off the async threads; the answer to give if the
/// trail cannot be read.
// The error is the answer itself, handed straight back by the handler (axum's idiom).
#[allow(clippy::result_large_err)]
pub async fn read_records(
    state: &WebState,
    since: Timestamp,
    until: Timestamp,
) -> Result<Vec<crate::audit::Record>, Response> {
    let dir = state.audit_dir.clone();
    let read = tokio::task::spawn_blocking(move || {
        crate::audit::reader::records(&dir, Some(since), Some(until))
    })
    .await;
    match read {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot read the audit trail");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the audit trail cannot be read",
            )
                .into_response())
        }
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    }
}

fn back_home() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response()
}

#[derive(Debug, Deserialize)]
pub struct ReviewQuery {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
}

/// A date (`YYYY-MM-DD`, UTC midnight) or a full timestamp.
fn parse_when(s: &str) -> Option<Timestamp> {
    s.parse::<Timestamp>().ok().or_else(|| {
        s.parse::<jiff::civil::Date>()
            .ok()
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    })
}

/// `GET /review`: the audit review report for a period (default: the last 7 days).
pub async fn review_page(
    State(state): State<WebState>,
    Extension(s): Extension<Session>,
    Query(q): Query<ReviewQuery>,
) -> Response {
    let now = state.auth.sessions.now();
    let until = q.until.as_deref().filter(|v| !v.is_empty());
    let since = q.since.as_deref().filter(|v| !v.is_empty());
    let (Some(until), Some(since)) = (
        until.map_or(Some(now), parse_when),
        since.map_or(Some(now - SignedDuration::from_hours(24 * 7)), parse_when),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            "dates are YYYY-MM-DD or RFC 3339 timestamps",
        )
            .into_response();
    };
    if since >= until {
        return (
            StatusCode::BAD_REQUEST,
            "the period's start must be before its end",
        )
            .into_response();
    }
    // Earlier records serve as the users' baselines for prompt sizes.
    let from = since - SignedDuration::from_hours(24 * 90);
    let records = match read_records(&state, from, until).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let report = review(&records, &ReviewOptions::new(since, until));
    let sections: String = report
        .counts
        .iter()
        .map(|(kind, n)| {
            let rows: String = report
                .findings
                .iter()
                .filter(|f| f.kind == *kind)
                .map(|f| {
                    format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        f.seq,
                        escape(&f.timestamp),
                        escape(&f.action),
                        escape(f.user_id.as_deref().unwrap_or("-")),
                        escape(f.user_role.as_deref().unwrap_or("-")),
                        escape(f.department.as_deref().unwrap_or("-")),
                        escape(f.client_ip.as_deref().unwrap_or("-")),
                        escape(&f.why),
                    )
                })
                .collect();
            format!(
                r#"<h2>{title} ({n})</h2><table class="report"><thead><tr><th>Seq</th><th>Time (UTC)</th><th>Action</th><th>User</th><th>Role</th><th>Department</th><th>Address</th><th>Why</th></tr></thead><tbody>{rows}</tbody></table>"#,
                title = escape(kind.title()),
            )
        })
        .collect();
    let nothing = if report.findings.is_empty() {
        "<p>Nothing to report for this period.</p>"
    } else {
        ""
    };
    let banner = break_glass_banner(&state, &s).await;
    signed_in_page(
        &state,
        &s,
        "Audit review",
        &format!(
            r#"{banner}<h1>Audit review</h1>
<form method="get" action="/review" class="period"><label>From <input name="since" value="{since_d}"></label> <label>To <input name="until" value="{until_d}"></label> <button type="submit">Show</button></form>
<p>{since:.0} – {until:.0}: {reviewed} records reviewed, {found} finding(s). The same report: <code>phibox audit review</code>.</p>
{nothing}{sections}"#,
            since_d = escape(&since.strftime("%Y-%m-%d").to_string()),
            until_d = escape(&until.strftime("%Y-%m-%d").to_string()),
            reviewed = report.records_reviewed,
            found = report.findings.len(),
        ),
    )
    .into_response()
}

/// `GET /compliance`: the settings an auditor asks about, as this box runs them.
pub async fn compliance_page(
    State(state): State<WebState>,
    Extension(s): Extension<Session>,
) -> Response {
    let c = &state.config;
    let idle = state.auth.sessions.idle_timeout().as_mins();
    let idle_note = if idle > 15 {
        format!(
            r#"<strong class="warn">{idle} minutes — longer than the recommended 15 (override: web.allow_long_idle_timeout)</strong>"#
        )
    } else {
        format!("{idle} minutes")
    };
    let directory = match &c.directory {
        Some(d) => format!(
            "{url} ({tls}); access group {group}{nested}",
            url = escape(&d.url),
            tls = if !d.uses_tls() {
                "UNENCRYPTED (dev only)"
            } else if d.starttls {
                "StartTLS"
            } else {
                "LDAPS"
            },
            group = escape(&d.access_group),
            nested = if d.nested_groups {
                ", nested groups"
            } else {
                ""
            },
        ),
        None => "none: local accounts (dev mode)".to_owned(),
    };
    let rows = [
        (
            "Mode",
            if state.dev {
                "DEVELOPMENT (self-signed certificate, unencrypted data directory)".to_owned()
            } else {
                "appliance".to_owned()
            },
        ),
        ("Automatic logoff (idle)", idle_note),
        (
            "Session limit",
            format!(
                "{} hours; break-glass sessions {} minutes",
                ABSOLUTE.as_hours(),
                BREAK_GLASS_ABSOLUTE.as_mins()
            ),
        ),
        ("Sign-in", directory),
        (
            "Failed sign-ins",
            "5 per account or 20 per address within 15 minutes lock it for the rest of the window"
                .to_owned(),
        ),
        (
            "TLS",
            "TLS 1.2 and 1.3, AEAD suites only; HSTS one year; port 80 redirects only".to_owned(),
        ),
        (
            "Prompt limit (minimum necessary)",
            format!("{} characters", state.prompt_cap),
        ),
        (
            "Transcript retention",
            format!("{} days", c.transcripts.retention_days),
        ),
        (
            "Audit trail",
            "append-only, hash-chained, sealed every 15 minutes; kept at least 6 years".to_owned(),
        ),
    ];
    let table: String = rows
        .iter()
        .map(|(k, v)| format!("<tr><th>{}</th><td>{v}</td></tr>", escape(k)))
        .collect();
    let banner = break_glass_banner(&state, &s).await;
    signed_in_page(
        &state,
        &s,
        "Compliance",
        &format!(r#"{banner}<h1>Compliance</h1><table class="settings">{table}</table>"#),
    )
    .into_response()
}
