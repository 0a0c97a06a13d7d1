//! Sign-in over real TLS with local accounts: one generic message for every failure, every
//! attempt audited, a new host-only session cookie at every sign-in, sign-out and the idle
//! timeout ending the session server-side (moved with a controllable clock), cross-site and
//! token-less state changes refused.

mod support;

use std::sync::Arc;

use jiff::SignedDuration;
use supervisor::audit::Action;
use supervisor::auth::local::{hash_password, LocalUser, LocalUsers};
use supervisor::auth::Role;
use supervisor::clock::ManualClock;
use supervisor::web::signin::SIGN_IN_FAILED;
use support::web::*;
use support::*;

fn accounts() -> LocalUsers {
    LocalUsers::new(
        vec![LocalUser {
            id: "jsmith".into(),
            name: "J. Smith".into(),
            department: Some("nursing".into()),
            role: Role::Nurse,
            password_hash: hash_password("correct horse battery").unwrap(),
        }],
        false,
    )
    .unwrap()
}

/// The session cookie (`name=value`) a reply sets.
fn session_cookie(r: &Reply) -> String {
    let c = r
        .cookies
        .iter()
        .find(|c| c.starts_with("__Host-phibox="))
        .unwrap_or_else(|| panic!("no session cookie in {:?}", r.cookies));
    c.split(';').next().unwrap().to_owned()
}

fn csrf_of(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    page[at..at + 64].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sessions_and_sign_out() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path();
    let clock = Arc::new(ManualClock::new("2026-12-01T09:00:00Z".parse().unwrap()));
    let st = state(data, accounts(), clock.clone());
    let audit = st.auth.audit.clone();
    let s = serve_app(data, st).await;
    let a = s.https;

    // Signed out: pages send the browser to the sign-in form.
    let r = browser(a, data, "GET", "/", None, None, false).await;
    assert_eq!((r.status, r.headers["location"].as_str()), (303, "/login"));

    // Cross-site sign-in attempts are refused before any check.
    let good = "user=jsmith&password=correct+horse+battery";
    let r = post_login(a, data, None, good, false).await;
    assert_eq!(r.status, 403);

    // A post without the sign-in form's token (a forged form) is refused.
    let r = browser(a, data, "POST", "/login", None, Some(good), true).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("form has expired"), "{}", r.body);

    // Wrong password, unknown user, empty password: one and the same answer.
    for form in [
        "user=jsmith&password=wrong",
        "user=nobody&password=correct+horse+battery",
        "user=jsmith&password=",
    ] {
        let r = post_login(a, data, None, form, true).await;
        assert_eq!(r.status, 401, "{form}");
        assert!(r.body.contains(SIGN_IN_FAILED), "{form}: {}", r.body);
        assert!(
            !r.cookies.iter().any(|c| c.starts_with("__Host-phibox=")),
            "{form}"
        );
    }

    // The right password: a host-only, secure, HttpOnly, strict cookie with 256 random bits.
    let r = post_login(a, data, None, good, true).await;
    assert_eq!((r.status, r.headers["location"].as_str()), (303, "/"));
    let set = r.cookies[0].clone();
    for part in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(set.contains(part), "{set}");
    }
    let first = session_cookie(&r);
    assert_eq!(first.len(), "__Host-phibox=".len() + 64);
    let home = browser(a, data, "GET", "/", Some(&first), None, false).await;
    assert_eq!(home.status, 200);
    assert!(home
        .body
        .contains("Signed in as <strong>J. Smith</strong> (Nurse, nursing)"));

    // Signing in again gives a new id and ends the old session.
    let r = post_login(a, data, Some(&first), good, true).await;
    let second = session_cookie(&r);
    assert_ne!(first, second);
    let r = browser(a, data, "GET", "/", Some(&first), None, false).await;
    assert_eq!(r.status, 303, "the old id is dead");

    // Sign-out needs this site's origin and the session's token; then the session is gone.
    let home = browser(a, data, "GET", "/", Some(&second), None, false).await;
    let csrf = csrf_of(&home.body);
    let r = browser(
        a,
        data,
        "POST",
        "/logout",
        Some(&second),
        Some(&format!("csrf={csrf}")),
        false,
    )
    .await;
    assert_eq!(r.status, 403, "no Origin");
    let r = browser(
        a,
        data,
        "POST",
        "/logout",
        Some(&second),
        Some(&format!("csrf={}", "0".repeat(64))),
        true,
    )
    .await;
    assert_eq!(r.status, 403, "wrong token");
    let r = browser(
        a,
        data,
        "POST",
        "/logout",
        Some(&second),
        Some(&format!("csrf={csrf}")),
        true,
    )
    .await;
    assert_eq!((r.status, r.headers["location"].as_str()), (303, "/login"));
    assert!(r.cookies[0].contains("Max-Age=0"));
    let r = browser(a, data, "GET", "/", Some(&second), None, false).await;
    assert_eq!(
        r.status, 303,
        "ended server-side, whatever the browser keeps"
    );

    // Idle: 15 minutes without a request end the session.
    let r = post_login(a, data, None, good, true).await;
    let third = session_cookie(&r);
    clock.advance(SignedDuration::from_mins(14));
    assert_eq!(
        browser(a, data, "GET", "/", Some(&third), None, false)
            .await
            .status,
        200
    );
    clock.advance(SignedDuration::from_mins(15));
    let r = browser(a, data, "GET", "/", Some(&third), None, false).await;
    assert_eq!(
        (r.status, r.headers["location"].as_str()),
        (303, "/login?expired=1")
    );
    let r = browser(a, data, "GET", "/login?expired=1", None, None, false).await;
    assert!(r.body.contains("without activity"), "{}", r.body);

    s.stop(std::time::Duration::from_secs(2)).await;
    audit.close().await.unwrap();
    let rs = audit_records(data);
    let trail: Vec<(Action, Option<String>)> = rs
        .iter()
        .filter(|r| r.action != Action::Seal)
        .map(|r| (r.action, r.detail.get("reason").cloned()))
        .collect();
    assert_eq!(
        trail,
        vec![
            (Action::LoginFailure, Some("bad_credentials".into())),
            (Action::LoginFailure, Some("bad_credentials".into())),
            (Action::LoginFailure, Some("empty_password".into())),
            (Action::LoginSuccess, None),
            (Action::LoginSuccess, None),
            (Action::Logout, Some("user".into())),
            (Action::LoginSuccess, None),
            (Action::IdleLogout, Some("idle".into())),
        ]
    );
    let ok = rs
        .iter()
        .find(|r| r.action == Action::LoginSuccess)
        .unwrap();
    assert_eq!(ok.user_id.as_deref(), Some("jsmith"));
    assert_eq!(ok.user_role.as_deref(), Some("nurse"));
    assert_eq!(ok.client_ip.as_deref(), Some("127.0.0.1"));
    // The trail names the session by its public reference, never by the cookie's secret.
    let first_id = first.split_once('=').unwrap().1;
    assert_eq!(
        ok.session_id.as_deref(),
        Some(supervisor::auth::session::reference_of(first_id).as_str())
    );
    assert!(
        !audit_bytes(data).contains(first_id),
        "the bearer id never reaches the trail"
    );
    assert_eq!(
        rs[1].user_id.as_deref(),
        Some("nobody"),
        "the attempted name is kept"
    );
    // No password, right or wrong, reached the trail.
    let raw = audit_bytes(data);
    assert!(
        !raw.contains("correct horse") && !raw.contains("wrong"),
        "{raw}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_the_account_for_fifteen_minutes() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path();
    let clock = Arc::new(ManualClock::new("2026-12-01T09:00:00Z".parse().unwrap()));
    let st = state(data, accounts(), clock.clone());
    let audit = st.auth.audit.clone();
    let s = serve_app(data, st).await;
    let a = s.https;
    for _ in 0..5 {
        let r = post_login(a, data, None, "user=jsmith&password=guess", true).await;
        assert_eq!(r.status, 401);
    }
    // Locked: even the right password is not checked now.
    let good = "user=jsmith&password=correct+horse+battery";
    let r = post_login(a, data, None, good, true).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("Too many failed sign-ins"), "{}", r.body);
    assert!(!r.cookies.iter().any(|c| c.starts_with("__Host-phibox=")));
    clock.advance(SignedDuration::from_mins(16));
    let r = post_login(a, data, None, good, true).await;
    assert_eq!(r.status, 303, "the window has passed");
    s.stop(std::time::Duration::from_secs(2)).await;
    audit.close().await.unwrap();
    let rs = audit_records(data);
    let actions: Vec<(Action, Option<String>)> = rs
        .iter()
        .filter(|r| r.action != Action::Seal)
        .map(|r| {
            (
                r.action,
                r.detail.get("reason").or(r.detail.get("scope")).cloned(),
            )
        })
        .collect();
    let mut want = vec![(Action::LoginFailure, Some("bad_credentials".to_owned())); 5];
    want.push((Action::Lockout, Some("account".into())));
    want.push((Action::LoginFailure, Some("locked_out".into())));
    want.push((Action::LoginSuccess, None));
    assert_eq!(actions, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_can_ask_for_its_idle_time_without_counting_as_activity() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path();
    let clock = Arc::new(ManualClock::new("2026-12-01T09:00:00Z".parse().unwrap()));
    let st = state(data, accounts(), clock.clone());
    let audit = st.auth.audit.clone();
    let s = serve_app(data, st).await;
    let a = s.https;
    let good = "user=jsmith&password=correct+horse+battery";
    let r = post_login(a, data, None, good, true).await;
    let cookie = session_cookie(&r);
    let home = browser(a, data, "GET", "/", Some(&cookie), None, false).await;
    assert!(home
        .body
        .contains(r#"<script src="/assets/session.js" defer>"#));
    let csrf = home.body.split(r#"data-csrf=""#).nth(1).unwrap()[..64].to_owned();
    let left = |r: &Reply| -> i64 {
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["idle_left"]
            .as_i64()
            .unwrap()
    };
    let r = browser(a, data, "GET", "/api/session", Some(&cookie), None, false).await;
    assert_eq!(left(&r), 900);
    clock.advance(SignedDuration::from_mins(10));
    let r = browser(a, data, "GET", "/api/session", Some(&cookie), None, false).await;
    assert_eq!(left(&r), 300, "polling is not activity");
    // Typing reported by the page is activity (same origin, with the token).
    let activity = |origin, token: &str| {
        let cookie = cookie.clone();
        let token = token.to_owned();
        async move {
            let host = format!("localhost:{}", a.port());
            let mut req = format!("POST /api/activity HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nCookie: {cookie}\r\nX-CSRF-Token: {token}\r\nContent-Length: 0\r\n");
            if origin {
                req.push_str(&format!("Origin: https://{host}\r\n"));
            }
            req.push_str("\r\n");
            https(a, data, &[&rustls::version::TLS13], &req)
                .await
                .0
                .status
        }
    };
    assert_eq!(activity(true, &"0".repeat(64)).await, 403);
    assert_eq!(activity(false, &csrf).await, 403);
    assert_eq!(activity(true, &csrf).await, 204);
    let r = browser(a, data, "GET", "/api/session", Some(&cookie), None, false).await;
    assert_eq!(left(&r), 900);
    clock.advance(SignedDuration::from_mins(15));
    let r = browser(a, data, "GET", "/api/session", Some(&cookie), None, false).await;
    assert_eq!(r.status, 401, "{}", r.body);
    s.stop(std::time::Duration::from_secs(2)).await;
    audit.close().await.unwrap();
    assert!(audit_records(data)
        .iter()
        .any(|r| r.action == Action::IdleLogout));
}
