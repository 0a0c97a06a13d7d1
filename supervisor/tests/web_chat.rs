//! The chat endpoint over real TLS with the real confined worker (a generated model): a signed-in
//! nurse streams an answer; the request and response records carry her session; cross-site,
//! token-less, oversized, over-cap and wrong-template requests are refused with clear answers;
//! roles that do not chat get no chat page. Needs root (the worker's sandbox).

mod support;

use std::sync::Arc;
use std::time::Duration;

use supervisor::audit::Action;
use supervisor::auth::local::{hash_password, LocalUser, LocalUsers};
use supervisor::auth::Role;
use supervisor::chat::Chat;
use supervisor::inference::{spawn_manager, Status};
use support::web::*;
use support::*;

fn accounts() -> LocalUsers {
    let hash = hash_password("pw-for-tests").unwrap();
    let user = |id: &str, role| LocalUser {
        id: id.into(),
        name: id.into(),
        department: Some("nursing".into()),
        role,
        password_hash: hash.clone(),
    };
    LocalUsers::new(
        vec![
            user("nina", Role::Nurse),
            user("nell", Role::Nurse),
            user("adam", Role::Admin),
            user("olga", Role::PrivacyOfficer),
        ],
        false,
    )
    .unwrap()
}

async fn sign_in(a: std::net::SocketAddr, data: &std::path::Path, user: &str) -> (String, String) {
    signed_in(a, data, user, "pw-for-tests", "/chat").await
}

async fn api(
    a: std::net::SocketAddr,
    data: &std::path::Path,
    cookie: &str,
    csrf: Option<&str>,
    origin: bool,
    body: &str,
) -> Reply {
    let host = format!("localhost:{}", a.port());
    let mut req = format!(
        "POST /api/chat HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if origin {
        req.push_str(&format!("Origin: https://{host}\r\n"));
    }
    if let Some(t) = csrf {
        req.push_str(&format!("X-CSRF-Token: {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    https(a, data, &[&rustls::version::TLS13], &req).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nurse_streams_an_answer_and_the_trail_records_it() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let data = t.path();
    let h = spawn_manager(launch("phibox-worker", &tiny_model(data), settings()));
    tokio::time::timeout(
        Duration::from_secs(120),
        h.wait_for(|s| matches!(s, Status::Ready { .. })),
    )
    .await
    .unwrap();
    let mut st = state(data, accounts(), Arc::new(supervisor::clock::SystemClock));
    st.chat = Some(
        Chat::new(h.clone(), st.auth.audit.clone(), "tiny.gguf").with_transcripts(st.store.clone()),
    );
    let store = st.store.clone();
    st.prompt_cap = 200;
    let audit = st.auth.audit.clone();
    let s = serve_app(data, st).await;
    let a = s.https;

    let (cookie, csrf) = sign_in(a, data, "nina").await;
    assert_eq!(csrf.len(), 64);
    let page = browser(a, data, "GET", "/chat", Some(&cookie), None, false).await;
    assert!(page.body.contains(r#"<option value="clinical_summary">"#));
    assert!(!page.body.contains("structured_report"), "not for nurses");
    assert!(page.body.contains("Draft for clinician review"));
    assert!(page
        .body
        .contains(r#"<script src="/assets/chat.js" defer>"#));

    let good = r#"{"template":"clinical_summary","text":"Pt 71M, NSTEMI, PCI to LAD, on DAPT."}"#;
    let r = api(a, data, &cookie, Some(&csrf), true, good).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers["content-type"].starts_with("text/event-stream"));
    assert!(r.body.contains("event: token"), "{}", r.body);
    assert!(r.body.contains("event: done"), "{}", r.body);
    assert!(r.body.contains(r#""finish":"#), "{}", r.body);

    // Refusals, each with its reason.
    assert_eq!(
        api(a, data, &cookie, Some(&csrf), false, good).await.status,
        403
    );
    assert_eq!(api(a, data, &cookie, None, true, good).await.status, 403);
    let other = r#"{"template":"structured_report","text":"x"}"#;
    assert_eq!(
        api(a, data, &cookie, Some(&csrf), true, other).await.status,
        403
    );
    let long = format!(
        r#"{{"template":"clinical_summary","text":"{}"}}"#,
        "x".repeat(201)
    );
    let r = api(a, data, &cookie, Some(&csrf), true, &long).await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("the limit is 200"), "{}", r.body);
    let huge = format!(
        r#"{{"template":"clinical_summary","text":"{}"}}"#,
        "x".repeat(70_000)
    );
    assert_eq!(
        api(a, data, &cookie, Some(&csrf), true, &huge).await.status,
        413
    );

    // An administrator does not chat.
    let (admin, _) = sign_in(a, data, "adam").await;
    assert_eq!(
        browser(a, data, "GET", "/chat", Some(&admin), None, false)
            .await
            .status,
        403
    );

    // Nina's own conversation list holds the turn; nobody else's does.
    let list = browser(a, data, "GET", "/conversations", Some(&cookie), None, false).await;
    assert_eq!(list.status, 200);
    let link = list
        .body
        .split(r#"href="/conversations/"#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a conversation link")
        .to_owned();
    let own = format!("/conversations/{link}");
    let shown = browser(a, data, "GET", &own, Some(&cookie), None, false).await;
    assert_eq!(shown.status, 200);
    assert!(shown.body.contains("NSTEMI, PCI to LAD"), "{}", shown.body);
    assert!(
        shown.body.contains("data-phi"),
        "the idle lock can remove it"
    );
    let (nell, _) = sign_in(a, data, "nell").await;
    assert_eq!(
        browser(a, data, "GET", &own, Some(&nell), None, false)
            .await
            .status,
        404,
        "another nurse cannot open it"
    );

    // The privacy officer retrieves the session's transcript with a reason; it matches the
    // trail. After the stored text is changed, it no longer does.
    let reference = supervisor::auth::session::reference_of(cookie.split_once('=').unwrap().1);
    let (olga, olga_csrf) = {
        let (c, _) = sign_in(a, data, "olga").await;
        let page = browser(a, data, "GET", "/investigate", Some(&c), None, false).await;
        assert_eq!(page.status, 200);
        let csrf = page.body.split(r#"data-csrf=""#).nth(1).unwrap()[..64].to_owned();
        (c, csrf)
    };
    let reason = "Patient complaint 2026-118 about the discharge summary";
    let investigate = |reason: &str| {
        format!(
            "csrf={olga_csrf}&session={reference}&category=patient_complaint&reason={}",
            reason.replace(' ', "+")
        )
    };
    let short = browser(
        a,
        data,
        "POST",
        "/investigate",
        Some(&olga),
        Some(&investigate("curious")),
        true,
    )
    .await;
    assert_eq!(short.status, 422, "a reason is required");
    let r = browser(
        a,
        data,
        "POST",
        "/investigate",
        Some(&olga),
        Some(&investigate(reason)),
        true,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .contains("The transcript matches the audit trail: 1 turn(s)"),
        "{}",
        r.body
    );
    assert!(r.body.contains("NSTEMI, PCI to LAD"));
    store
        .with_blocking(|c| c.execute("UPDATE turns SET response = response || ' (edited)'", []))
        .unwrap();
    let r = browser(
        a,
        data,
        "POST",
        "/investigate",
        Some(&olga),
        Some(&investigate(reason)),
        true,
    )
    .await;
    assert!(r.body.contains("does NOT match"), "{}", r.body);
    assert!(r.body.contains("differs from record"), "{}", r.body);
    // Administrators never read transcripts.
    for path in ["/investigate", "/conversations", &own] {
        assert_eq!(
            browser(a, data, "GET", path, Some(&admin), None, false)
                .await
                .status,
            403,
            "{path}"
        );
    }

    s.stop(Duration::from_secs(2)).await;
    h.shutdown().await;
    audit.close().await.unwrap();
    let rs = audit_records(data);
    let accesses: Vec<_> = rs
        .iter()
        .filter(|r| r.action == Action::TranscriptAccess)
        .collect();
    assert_eq!(accesses.len(), 3, "nina's own view and two investigations");
    assert_eq!(accesses[0].detail["scope"], "own");
    assert_eq!(accesses[1].user_id.as_deref(), Some("olga"));
    assert_eq!(accesses[1].detail["target_session"], reference);
    assert_eq!(accesses[1].detail["category"], "patient_complaint");
    assert!(accesses[1].detail["reason_hash"].starts_with("hmac-sha256:"));
    assert!(
        !audit_bytes(data).contains("2026-118"),
        "no free text in the trail"
    );
    let chat: Vec<&supervisor::audit::Record> = rs
        .iter()
        .filter(|r| {
            matches!(
                r.action,
                Action::ChatRequest | Action::ChatResponseCompleted
            )
        })
        .collect();
    assert_eq!(chat.len(), 2, "one request, one response: {rs:?}");
    let session = chat[0].session_id.clone().unwrap();
    assert_eq!(chat[1].session_id.as_deref(), Some(session.as_str()));
    assert_eq!(chat[0].user_id.as_deref(), Some("nina"));
    assert_eq!(chat[0].client_ip.as_deref(), Some("127.0.0.1"));
    assert!(
        !audit_bytes(data).contains("NSTEMI"),
        "no prompt text in the trail"
    );
}
