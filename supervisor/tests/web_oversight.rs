//! The oversight pages over real TLS: a break-glass sign-in shows a banner on every page of
//! administrators, auditors and privacy officers until an administrator or auditor
//! acknowledges it (recorded); the administrator sees who is signed in (by public session
//! reference, never the cookie's secret) and ends a session at once; the auditor's review
//! page shows the trail's report; the compliance page shows the running settings.

mod support;

use std::sync::Arc;
use std::time::Duration;

use supervisor::audit::Action;
use supervisor::auth::local::{hash_password, LocalUser, LocalUsers};
use supervisor::auth::signin::Accounts;
use supervisor::auth::Role;
use supervisor::clock::SystemClock;
use support::web::*;

fn users(break_glass: bool, list: &[(&str, Role)]) -> LocalUsers {
    let hash = hash_password("pw-for-tests").unwrap();
    LocalUsers::new(
        list.iter()
            .map(|(id, role)| LocalUser {
                id: (*id).into(),
                name: format!("{id} name"),
                department: None,
                role: *role,
                password_hash: hash.clone(),
            })
            .collect(),
        break_glass,
    )
    .unwrap()
}

async fn sign_in(a: std::net::SocketAddr, data: &std::path::Path, user: &str) -> (String, String) {
    signed_in(a, data, user, "pw-for-tests", "/").await
}

async fn get(a: std::net::SocketAddr, data: &std::path::Path, cookie: &str, path: &str) -> Reply {
    browser(a, data, "GET", path, Some(cookie), None, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_banner_sessions_review_and_compliance() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path();
    let st = state_with(
        data,
        Accounts {
            directory: None,
            local: Some(users(
                false,
                &[
                    ("adam", Role::Admin),
                    ("aud", Role::Auditor),
                    ("olga", Role::PrivacyOfficer),
                    ("nina", Role::Nurse),
                ],
            )),
            break_glass: Some(users(true, &[("emergency-1", Role::Clinician)])),
        },
        Arc::new(SystemClock),
    );
    let audit = st.auth.audit.clone();
    let s = serve_app(data, st).await;
    let a = s.https;

    let (adam, adam_csrf) = sign_in(a, data, "adam").await;
    let (aud, aud_csrf) = sign_in(a, data, "aud").await;
    let (olga, _) = sign_in(a, data, "olga").await;
    let (nina, _) = sign_in(a, data, "nina").await;
    assert!(!get(a, data, &adam, "/")
        .await
        .body
        .contains(r#"id="break-glass""#));

    // An emergency sign-in: its own pages say so; the oversight roles see the banner on
    // every page; clinical staff do not.
    let (bg, _) = sign_in(a, data, "emergency-1").await;
    assert!(get(a, data, &bg, "/")
        .await
        .body
        .contains("Emergency (break-glass) access"));
    for (who, path) in [
        (&adam, "/"),
        (&adam, "/admin"),
        (&adam, "/compliance"),
        (&aud, "/review"),
        (&aud, "/compliance"),
        (&olga, "/investigate"),
    ] {
        let page = get(a, data, who, path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.body.contains(r#"id="break-glass""#),
            "{path}: {}",
            page.body
        );
        assert!(page.body.contains("<strong>emergency-1</strong>"), "{path}");
    }
    assert!(!get(a, data, &nina, "/")
        .await
        .body
        .contains(r#"id="break-glass""#));
    // The privacy officer sees it but does not acknowledge; administrators and auditors do.
    assert!(!get(a, data, &olga, "/compliance")
        .await
        .body
        .contains("/break-glass/ack"));
    assert!(get(a, data, &aud, "/")
        .await
        .body
        .contains("/break-glass/ack"));

    // Acknowledging needs this site and the session's token; then the banner is gone.
    let ack = |csrf: &str| format!("csrf={csrf}&id=1");
    let r = browser(
        a,
        data,
        "POST",
        "/break-glass/ack",
        Some(&aud),
        Some(&ack(&aud_csrf)),
        false,
    )
    .await;
    assert_eq!(r.status, 403, "cross-site");
    let r = browser(
        a,
        data,
        "POST",
        "/break-glass/ack",
        Some(&aud),
        Some(&ack(&adam_csrf)),
        true,
    )
    .await;
    assert_eq!(r.status, 403, "another session's token");
    let r = browser(
        a,
        data,
        "POST",
        "/break-glass/ack",
        Some(&aud),
        Some(&ack(&aud_csrf)),
        true,
    )
    .await;
    assert_eq!(r.status, 303);
    for (who, path) in [
        (&adam, "/admin"),
        (&aud, "/review"),
        (&olga, "/investigate"),
    ] {
        assert!(
            !get(a, data, who, path)
                .await
                .body
                .contains(r#"id="break-glass""#),
            "{path}"
        );
    }

    // The administrator's list: every live session by reference, never by its secret.
    let nina_id = nina.split_once('=').unwrap().1;
    let nina_ref = supervisor::auth::session::reference_of(nina_id);
    let admin_page = get(a, data, &adam, "/admin").await;
    assert!(admin_page.body.contains(&nina_ref));
    assert!(
        !admin_page.body.contains(nina_id),
        "no session secret on the page"
    );
    assert!(admin_page.body.contains("(break-glass)"));
    // Ending nina's session: her next request finds herself signed out.
    let r = browser(
        a,
        data,
        "POST",
        "/admin/sessions/end",
        Some(&adam),
        Some(&format!("csrf={adam_csrf}&session={nina_ref}")),
        true,
    )
    .await;
    assert_eq!((r.status, r.headers["location"].as_str()), (303, "/admin"));
    let r = get(a, data, &nina, "/").await;
    assert_eq!(r.status, 303);
    assert!(!get(a, data, &adam, "/admin").await.body.contains(&nina_ref));

    // A failed sign-in and the emergency use appear in the auditor's review.
    let r = post_login(a, data, None, "user=nina&password=wrong", true).await;
    assert_eq!(r.status, 401);
    let review = get(a, data, &aud, "/review").await;
    assert_eq!(review.status, 200);
    assert!(
        review.body.contains("Break-glass uses (1)"),
        "{}",
        review.body
    );
    assert!(review.body.contains("Failed logins (1)"), "{}", review.body);
    assert_eq!(
        get(a, data, &aud, "/review?since=yesterday").await.status,
        400
    );

    let compliance = get(a, data, &olga, "/compliance").await;
    for fact in [
        "15 minutes",
        "90 days",
        "TLS 1.2 and 1.3",
        "12 hours; break-glass sessions 60 minutes",
    ] {
        assert!(
            compliance.body.contains(fact),
            "{fact}: {}",
            compliance.body
        );
    }

    s.stop(Duration::from_secs(1)).await;
    audit.close().await.unwrap();
    let rs = support::audit_records(data);
    let admin: Vec<_> = rs
        .iter()
        .filter(|r| r.action == Action::AdminAction)
        .collect();
    assert_eq!(admin.len(), 2, "{admin:?}");
    assert_eq!(admin[0].detail["action"], "break_glass_acknowledged");
    assert_eq!(admin[0].user_id.as_deref(), Some("aud"));
    assert_eq!(admin[0].detail["break_glass_user"], "emergency-1");
    assert_eq!(admin[1].detail["action"], "session_ended");
    assert_eq!(admin[1].detail["target_session"], nina_ref);
    let ended = rs
        .iter()
        .find(|r| {
            r.action == Action::Logout
                && r.detail.get("reason").map(String::as_str) == Some("ended_by_admin")
        })
        .expect("the ended session's record");
    assert_eq!(ended.user_id.as_deref(), Some("nina"));
    assert!(!support::audit_bytes(data).contains(nina_id));
}
