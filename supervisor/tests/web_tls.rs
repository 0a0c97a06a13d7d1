//! The web server's transport: real TLS handshakes on loopback. TLS 1.3 and 1.2 with AEAD
//! suites work; TLS 1.1, a TLS 1.2 CBC suite (tried with the openssl tool) and plaintext HTTP on
//! the HTTPS port do not; port 80 only redirects; every route carries the security headers.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use supervisor::web::{self, server, tls};
use support::web::*;

async fn serve(data: &Path) -> server::Listening {
    let (config, generated) = tls::for_data_dir(data, true).unwrap();
    assert!(generated);
    server::start(
        "127.0.0.1:0".parse().unwrap(),
        Some("127.0.0.1:0".parse().unwrap()),
        config,
        web::app(state(
            data,
            supervisor::auth::local::LocalUsers::new(vec![], false).unwrap(),
            Arc::new(supervisor::clock::SystemClock),
        )),
    )
    .await
    .unwrap()
}

/// `openssl s_client` with extra arguments; true if a session was established.
fn openssl_connects(addr: SocketAddr, args: &[&str]) -> bool {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl tool (Debian package openssl)");
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("Cipher is") && !text.contains("Cipher is (NONE)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_modern_tls_and_only_https() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path()).await;
    let (r, v) = https_get(s.https, t.path(), "/login", &[&rustls::version::TLS13]).await;
    assert_eq!((r.status, v), (200, rustls::ProtocolVersion::TLSv1_3));
    let (r, v) = https_get(s.https, t.path(), "/login", &[&rustls::version::TLS12]).await;
    assert_eq!((r.status, v), (200, rustls::ProtocolVersion::TLSv1_2));
    assert!(
        r.body.contains("Development mode"),
        "the dev banner: {}",
        r.body
    );

    let https = s.https;
    let results = tokio::task::spawn_blocking(move || {
        (
            openssl_connects(https, &["-tls1_3"]),
            openssl_connects(
                https,
                &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
            ),
            openssl_connects(https, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]),
            openssl_connects(
                https,
                &[
                    "-tls1_2",
                    "-cipher",
                    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA",
                ],
            ),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        results,
        (true, true, false, false),
        "(TLS 1.3, TLS 1.2 GCM, TLS 1.1, TLS 1.2 CBC)"
    );

    // Plaintext HTTP on the HTTPS port gets no HTTP answer.
    let raw = plain(s.https, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(
        !raw.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );

    // Port 80 answers only with a 301 to HTTPS, path and query kept.
    let http = s.http.unwrap();
    let r = parse(
        &plain(
            http,
            "GET /chat?x=1 HTTP/1.1\r\nHost: box.clinic:80\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers["location"],
        format!("https://box.clinic:{}/chat?x=1", s.https.port())
    );
    let r = parse(&plain(http, "POST /login HTTP/1.1\r\nHost: box.clinic\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await);
    assert_eq!(r.status, 301);
    let r = parse(&plain(http, "GET / HTTP/1.0\r\n\r\n").await);
    assert_eq!(r.status, 400, "no Host, no redirect");
    s.stop(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_carries_the_security_headers() {
    let t = tempfile::tempdir().unwrap();
    let s = serve(t.path()).await;
    let mut routes: Vec<&str> = web::access::POLICY
        .iter()
        .filter(|(m, _, _)| *m == axum::http::Method::GET)
        .map(|(_, r, _)| *r)
        .collect();
    routes.push("/no-such-page");
    for route in routes {
        let (r, _) = https_get(s.https, t.path(), route, &[&rustls::version::TLS13]).await;
        let h = &r.headers;
        assert_eq!(
            h.get("strict-transport-security").map(String::as_str),
            Some("max-age=31536000; includeSubDomains"),
            "{route}"
        );
        let csp = &h["content-security-policy"];
        assert!(csp.contains("default-src 'self'"), "{route}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{route}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{route}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{route}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{route}");
        if route.starts_with("/assets/") {
            assert!(!h["cache-control"].contains("no-store"), "{route}");
        } else {
            assert_eq!(h["cache-control"], "no-store", "{route}");
        }
    }
    // The redirect's answers carry them too.
    let r = parse(
        &plain(
            s.http.unwrap(),
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    s.stop(Duration::from_secs(2)).await;
}

#[test]
fn certificates_come_from_the_data_directory_and_keys_must_be_private() {
    let t = tempfile::tempdir().unwrap();
    // The appliance never generates its own: without the clinic's files it refuses.
    assert!(matches!(
        tls::for_data_dir(t.path(), false),
        Err(tls::TlsError::Missing { .. })
    ));
    tls::ensure_dev_certificate(&t.path().join("tls")).unwrap();
    assert!(
        tls::for_data_dir(t.path(), false).is_ok(),
        "PEM files present"
    );
    use std::os::unix::fs::PermissionsExt;
    let key = t.path().join("tls/key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        tls::for_data_dir(t.path(), false),
        Err(tls::TlsError::KeyExposed { .. })
    ));
}
