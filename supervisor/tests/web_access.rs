//! The access table (`web::access::POLICY`) proved route by route: every route, for anonymous
//! requests and for each role, is exactly allowed or refused as the table says — and the table
//! says what the product intends (asserted below for the routes that matter most).

mod support;

use std::sync::Arc;

use axum::http::Method;
use supervisor::auth::local::{hash_password, LocalUser, LocalUsers};
use supervisor::auth::Role;
use supervisor::web::access::{rule, Access, POLICY};
use support::web::*;

const ROLES: [Role; 5] = [
    Role::Clinician,
    Role::Nurse,
    Role::Admin,
    Role::PrivacyOfficer,
    Role::Auditor,
];

fn accounts() -> LocalUsers {
    let hash = hash_password("pw").unwrap();
    LocalUsers::new(
        ROLES
            .iter()
            .map(|r| LocalUser {
                id: r.name().into(),
                name: r.title().into(),
                department: None,
                role: *r,
                password_hash: hash.clone(),
            })
            .collect(),
        false,
    )
    .unwrap()
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Allowed,
    SignInFirst,
    RoleRefused,
}

fn outcome(r: &Reply) -> Outcome {
    let clears_cookie = r.cookies.iter().any(|c| c.contains("Max-Age=0"));
    let to_login = r.status == 303
        && r.headers
            .get("location")
            .is_some_and(|l| l.starts_with("/login"))
        && !clears_cookie;
    if to_login || (r.status == 401 && r.body.contains("sign in first")) {
        Outcome::SignInFirst
    } else if r.status == 403 && r.body.contains("your role does not give access") {
        Outcome::RoleRefused
    } else {
        Outcome::Allowed
    }
}

#[test]
fn the_table_says_what_the_product_intends() {
    assert_eq!(rule(&Method::GET, "/login"), Some(Access::Public));
    assert_eq!(rule(&Method::GET, "/"), Some(Access::SignedIn));
    // Only clinical roles chat; administrators manage the box and never see conversations.
    assert_eq!(
        rule(&Method::POST, "/api/chat"),
        Some(Access::Roles(&[Role::Clinician, Role::Nurse]))
    );
    assert_eq!(
        rule(&Method::GET, "/chat"),
        rule(&Method::POST, "/api/chat")
    );
    // Transcripts: users read only their own; only the privacy officer investigates, and an
    // administrator can do neither.
    assert_eq!(
        rule(&Method::POST, "/investigate"),
        Some(Access::Roles(&[Role::PrivacyOfficer]))
    );
    for route in ["/investigate", "/conversations", "/conversations/{id}"] {
        match rule(&Method::GET, route) {
            Some(Access::Roles(roles)) => assert!(!roles.contains(&Role::Admin), "{route}"),
            other => panic!("{route}: {other:?}"),
        }
    }
    assert_eq!(
        rule(&Method::DELETE, "/"),
        None,
        "not in the table: refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_for_every_role_and_anonymous() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path();
    let st = state(data, accounts(), Arc::new(supervisor::clock::SystemClock));
    let s = serve_app(data, st).await;
    let a = s.https;
    let mut checked = 0;
    for (method, route, access) in POLICY {
        for actor in std::iter::once(None).chain(ROLES.iter().copied().map(Some)) {
            // A fresh session per request: signing out must not spoil the next check.
            let (cookie, csrf) = match actor {
                None => (String::new(), "0".repeat(64)),
                Some(role) => {
                    let form = format!("user={}&password=pw", role.name());
                    let r = post_login(a, data, None, &form, true).await;
                    assert_eq!(r.status, 303, "{role:?}");
                    let cookie = r.cookies[0].split(';').next().unwrap().to_owned();
                    let home = browser(a, data, "GET", "/", Some(&cookie), None, false).await;
                    let csrf = home.body.split(r#"data-csrf=""#).nth(1).unwrap()[..64].to_owned();
                    (cookie, csrf)
                }
            };
            let host = format!("localhost:{}", a.port());
            let path = route.replace("{id}", "1");
            let (ctype, body) = match *route {
                "/login" => (
                    "application/x-www-form-urlencoded",
                    "user=nobody&password=x".to_owned(),
                ),
                "/logout" => ("application/x-www-form-urlencoded", format!("csrf={csrf}")),
                "/api/chat" => (
                    "application/json",
                    r#"{"template":"clinical_summary","text":"x"}"#.to_owned(),
                ),
                _ => ("text/plain", String::new()),
            };
            let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nOrigin: https://{host}\r\nX-CSRF-Token: {csrf}\r\n");
            if !cookie.is_empty() {
                req.push_str(&format!("Cookie: {cookie}\r\n"));
            }
            if *method == Method::POST {
                req.push_str(&format!(
                    "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
                    body.len()
                ));
            }
            req.push_str("\r\n");
            if *method == Method::POST {
                req.push_str(&body);
            }
            let r = https(a, data, &[&rustls::version::TLS13], &req).await.0;
            let want = match (access, actor) {
                (Access::Public, _) => Outcome::Allowed,
                (_, None) => Outcome::SignInFirst,
                (Access::SignedIn, Some(_)) => Outcome::Allowed,
                (Access::Roles(roles), Some(role)) if roles.contains(&role) => Outcome::Allowed,
                (Access::Roles(_), Some(_)) => Outcome::RoleRefused,
            };
            assert_eq!(
                outcome(&r),
                want,
                "{method} {route} as {actor:?}: {} {:?} {}",
                r.status,
                r.headers.get("location"),
                r.body
            );
            checked += 1;
        }
    }
    assert_eq!(checked, POLICY.len() * 6);
    s.stop(std::time::Duration::from_secs(2)).await;
}
