//! Directory sign-in against a real OpenLDAP slapd with a generated clinic directory: members
//! and outsiders, roles from groups, wrong and empty passwords (the empty one never reaching
//! the directory), injection attempts that must leave the filter as configured, an
//! unreachable, silent or untrusted directory, and the same through the web sign-in form with
//! the break-glass accounts still working while the directory is down.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use supervisor::audit::Action;
use supervisor::auth::directory::{Directory, DirectoryConfig};
use supervisor::auth::local::{hash_password, LocalUser, LocalUsers};
use supervisor::auth::signin::Accounts;
use supervisor::auth::{Refusal, Role};
use supervisor::clock::ManualClock;
use supervisor::web::signin::{DIRECTORY_DOWN, SIGN_IN_FAILED};
use support::slapd::{person, Slapd};
use support::web::*;

fn directory(c: DirectoryConfig) -> Directory {
    Directory::new(c, false).unwrap()
}

/// The filters slapd logged for its searches, in order.
fn logged_filters(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once(" filter=\"").map(|(_, f)| f))
        .map(|f| f.trim_end_matches('"').to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_sign_in_with_their_directory_attributes_and_roles() {
    let t = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(t.path()).await;
    let alice = person("alice");
    for (how, config) in [
        ("ldaps", slapd.config()),
        ("starttls", {
            let mut c = slapd.config();
            c.url = slapd.ldap_url.clone();
            c.starttls = true;
            c
        }),
    ] {
        let d = directory(config);
        let who = d.authenticate("alice", alice.password).await.unwrap();
        assert_eq!(who.user_id, "alice", "{how}");
        assert_eq!(who.display_name, alice.name, "{how}");
        assert_eq!(who.department.as_deref(), Some(alice.department), "{how}");
        assert_eq!(who.role, Role::Clinician, "{how}");
        assert!(!who.break_glass);
    }
    let d = directory(slapd.config());
    let carol = d
        .authenticate("carol", person("carol").password)
        .await
        .unwrap();
    assert_eq!(carol.role, Role::PrivacyOfficer);

    // The user was bound with their own DN (the one the search returned) after the service.
    let log = slapd.log();
    assert!(
        log.contains(r#"BIND dn="uid=alice,ou=people,dc=clinic,dc=test" method=128"#),
        "{log}"
    );
    assert!(log.contains(r#"BIND dn="cn=phibox,ou=services,dc=clinic,dc=test" method=128"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_wrong_and_empty_passwords_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(t.path()).await;
    let d = directory(slapd.config());
    // Right password, but not in the access group / in no role group.
    assert_eq!(
        d.authenticate("bob", person("bob").password).await,
        Err(Refusal::NotInGroup)
    );
    assert_eq!(
        d.authenticate("dave", person("dave").password).await,
        Err(Refusal::NoRole)
    );
    // Not in the group: never bound with the typed password.
    assert!(!slapd.log().contains(r#"BIND dn="uid=bob,"#));
    assert_eq!(
        d.authenticate("alice", "not alice's").await,
        Err(Refusal::BadPassword)
    );
    assert_eq!(
        d.authenticate("nobody", "whatever").await,
        Err(Refusal::UnknownUser)
    );
    // An empty password is refused before anything is sent: no new connection at all.
    let connections = slapd.log().matches("ACCEPT from").count();
    assert_eq!(
        d.authenticate("alice", "").await,
        Err(Refusal::EmptyPassword)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(slapd.log().matches("ACCEPT from").count(), connections);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_attempts_do_not_change_the_filter() {
    let t = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(t.path()).await;
    let d = directory(slapd.config());
    let pw = person("alice").password;
    // Each of these, unescaped, would have matched alice (or every entry) and signed in.
    let attempts = [
        "ali*",
        "*",
        "alice)(uid=*",
        "*)(objectClass=*",
        "alic\\65",
        "alice\0",
        "alice)(|(uid=*",
    ];
    for typed in attempts {
        assert_eq!(
            d.authenticate(typed, pw).await,
            Err(Refusal::UnknownUser),
            "{typed:?}"
        );
    }
    // The entry whose uid really is "al*" is found by its literal name, and only by it.
    let star = d.authenticate("al*", "star pw").await.unwrap();
    assert_eq!(star.user_id, "al*");

    // slapd saw every search with the configured structure: one AND of two equality tests,
    // the typed text inside one value.
    let filters = logged_filters(&slapd.log());
    assert_eq!(filters.len(), attempts.len() + 1, "{filters:?}");
    for f in &filters {
        assert!(
            f.starts_with("(&(objectClass=inetOrgPerson)(uid=") && f.ends_with("))"),
            "{f}"
        );
        assert_eq!(f.matches('(').count(), 3, "{f}");
        assert_eq!(f.matches(')').count(), 3, "{f}");
        assert!(!f.contains('*'), "a wildcard reached the directory: {f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_silent_or_untrusted_directory_is_a_refusal_not_a_hang() {
    let t = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(t.path()).await;
    let pw = person("alice").password;
    let quick = |mut c: DirectoryConfig| {
        c.timeout_secs = 1;
        directory(c)
    };

    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut c = slapd.config();
    c.url = format!("ldaps://127.0.0.1:{port}");
    assert_eq!(
        quick(c).authenticate("alice", pw).await,
        Err(Refusal::DirectoryUnavailable)
    );

    // Something listening that never answers: bounded by the timeouts.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut c = slapd.config();
    c.url = format!("ldaps://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        }
    });
    let started = Instant::now();
    assert_eq!(
        quick(c).authenticate("alice", pw).await,
        Err(Refusal::DirectoryUnavailable)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    held.abort();

    // A certificate from a CA we were not told to trust: TLS verification is real.
    let other = tempfile::tempdir().unwrap();
    let other_ca = {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = p.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let f = other.path().join("other-ca.pem");
        std::fs::write(&f, ca.pem()).unwrap();
        f
    };
    let mut c = slapd.config();
    c.ca_file = Some(other_ca);
    assert_eq!(
        quick(c).authenticate("alice", pw).await,
        Err(Refusal::DirectoryUnavailable)
    );

    // The service account's password is wrong: refused, never a sign-in.
    let wrong = t.path().join("wrong-service-password");
    std::fs::write(&wrong, "nope\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut c = slapd.config();
    c.bind_password_file = wrong;
    assert_eq!(
        quick(c).authenticate("alice", pw).await,
        Err(Refusal::DirectoryUnavailable)
    );

    // Plain LDAP works only with the dev flag in dev mode (and then it really is plain).
    let mut c = slapd.config();
    c.url = slapd.ldap_url.clone();
    c.ca_file = None;
    c.allow_plaintext = true;
    assert!(Directory::new(c.clone(), false).is_err());
    let plain = Directory::new(c, true).unwrap();
    assert_eq!(
        plain.authenticate("alice", pw).await.unwrap().user_id,
        "alice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_group_mode_fails_closed_on_a_directory_without_the_in_chain_rule() {
    // OpenLDAP does not implement AD's LDAP_MATCHING_RULE_IN_CHAIN: the filter matches
    // nothing there, so nested mode must refuse rather than let anyone in. (Against AD the
    // same search returns the entry for members of nested groups.)
    let t = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(t.path()).await;
    let mut c = slapd.config();
    c.nested_groups = true;
    assert_eq!(
        directory(c)
            .authenticate("alice", person("alice").password)
            .await,
        Err(Refusal::NotInGroup)
    );
    // The membership was asked of the directory (slapd logs the unknown rule as undefined).
    assert!(slapd
        .log()
        .contains(r#"SRCH base="uid=alice,ou=people,dc=clinic,dc=test" scope=0"#));
}

fn break_glass() -> LocalUsers {
    LocalUsers::new(
        vec![LocalUser {
            id: "emergency-1".into(),
            name: "Emergency account 1".into(),
            department: None,
            role: Role::Clinician,
            password_hash: hash_password("sealed envelope 1").unwrap(),
        }],
        true,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_sign_in_through_the_directory_and_break_glass_when_it_is_down() {
    let t = tempfile::tempdir().unwrap();
    let slapd = Slapd::start(&t.path().join("ldap").tap_mkdir()).await;
    let data = t.path().join("data").tap_mkdir();
    let clock = Arc::new(ManualClock::new("2026-12-01T09:00:00Z".parse().unwrap()));
    let st = state_with(
        &data,
        Accounts {
            directory: Some(directory(slapd.config())),
            local: None,
            break_glass: Some(break_glass()),
        },
        clock.clone(),
    );
    let s = serve_app(&data, st.clone()).await;
    let a = s.https;
    let form = |u: &str, p: &str| format!("user={}&password={}", enc(u), enc(p));

    // alice signs in; her page shows her directory name, role and department.
    let r = post_login(
        a,
        &data,
        None,
        &form("alice", person("alice").password),
        true,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r.cookies[0].split(';').next().unwrap().to_owned();
    let home = browser(a, &data, "GET", "/", Some(&cookie), None, false).await;
    assert!(
        home.body
            .contains("Signed in as <strong>Dr Alice Adams</strong> (Clinician, cardiology)"),
        "{}",
        home.body
    );

    // bob (not in the group) and a wrong password get the one generic message.
    for f in [
        form("bob", person("bob").password),
        form("alice", "wrong"),
        form("ali*", person("alice").password),
    ] {
        let r = post_login(a, &data, None, &f, true).await;
        assert_eq!(r.status, 401, "{f}");
        assert!(r.body.contains(SIGN_IN_FAILED));
    }

    // The directory goes away: members are told so (not counted as failures), while the
    // break-glass account still works.
    drop(slapd);
    for _ in 0..6 {
        let r = post_login(
            a,
            &data,
            None,
            &form("alice", person("alice").password),
            true,
        )
        .await;
        assert_eq!(r.status, 503);
        assert!(r.body.contains(DIRECTORY_DOWN), "{}", r.body);
    }
    let r = post_login(
        a,
        &data,
        None,
        &form("emergency-1", "sealed envelope 1"),
        true,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let bg = r.cookies[0].split(';').next().unwrap().to_owned();
    assert_eq!(
        browser(a, &data, "GET", "/", Some(&bg), None, false)
            .await
            .status,
        200
    );
    // The emergency session ends after 60 minutes however active it is.
    for _ in 0..6 {
        clock.advance(jiff::SignedDuration::from_mins(10));
        browser(a, &data, "GET", "/", Some(&bg), None, false).await;
    }
    clock.advance(jiff::SignedDuration::from_secs(1));
    assert_eq!(
        browser(a, &data, "GET", "/", Some(&bg), None, false)
            .await
            .status,
        303
    );

    // The trail: who, how, and why each attempt failed.
    let records = support::audit_records(&data);
    let of = |action: Action| records.iter().filter(move |r| r.action == action);
    let ok: Vec<_> = of(Action::LoginSuccess).collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].user_id.as_deref(), Some("alice"));
    assert_eq!(ok[0].department.as_deref(), Some("cardiology"));
    assert_eq!(ok[0].detail["method"], "directory");
    let reasons: Vec<&str> = of(Action::LoginFailure)
        .map(|r| r.detail["reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "not_in_group",
            "bad_password",
            "unknown_user",
            "directory_unavailable",
            "directory_unavailable",
            "directory_unavailable",
            "directory_unavailable",
            "directory_unavailable",
            "directory_unavailable",
        ]
    );
    let bg: Vec<_> = of(Action::BreakGlassLogin).collect();
    assert_eq!(bg.len(), 1);
    assert_eq!(bg[0].user_id.as_deref(), Some("emergency-1"));
    assert_eq!(bg[0].detail["method"], "break_glass");
    assert_eq!(
        of(Action::Lockout).count(),
        0,
        "an outage is not a brute-force attempt"
    );
    s.stop(Duration::from_secs(1)).await;
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

trait Mkdir {
    fn tap_mkdir(self) -> Self;
}

impl Mkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
