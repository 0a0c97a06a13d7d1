//! A minimal HTTPS client for the web tests: real TLS (trusting only the data directory's
//! certificate), raw HTTP/1.1 requests, parsed replies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    /// Every `Set-Cookie` value.
    pub cookies: Vec<String>,
    pub body: String,
}

pub fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut headers = HashMap::new();
    let mut cookies = Vec::new();
    for (k, v) in lines.filter_map(|l| l.split_once(':')) {
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
        if k == "set-cookie" {
            cookies.push(v.clone());
        }
        headers.insert(k, v);
    }
    Reply {
        status,
        headers,
        cookies,
        body: body.to_owned(),
    }
}

pub fn client_config(
    data: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(data.join("tls/chain.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Sends one request over TLS (the given protocol versions) and reads the whole reply.
pub async fn https(
    addr: SocketAddr,
    data: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
    request: &str,
) -> (Reply, rustls::ProtocolVersion) {
    let connector = tokio_rustls::TlsConnector::from(client_config(data, versions));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let version = tls.get_ref().1.protocol_version().unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    (parse(&raw), version)
}

pub async fn https_get(
    addr: SocketAddr,
    data: &Path,
    path: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (Reply, rustls::ProtocolVersion) {
    https(
        addr,
        data,
        versions,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// A request as a browser on this site sends it: Host, Origin, optional cookie and form body.
pub async fn browser(
    addr: SocketAddr,
    data: &Path,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    origin: bool,
) -> Reply {
    let host = format!("localhost:{}", addr.port());
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if origin {
        req.push_str(&format!("Origin: https://{host}\r\n"));
    }
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    let body = form.unwrap_or("");
    if form.is_some() {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    https(addr, data, &[&rustls::version::TLS13], &req).await.0
}

pub async fn plain(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw)).await;
    raw
}

/// A web state for tests: the given local accounts and clock, a fresh audit trail in `data`.
pub fn state(
    data: &Path,
    users: supervisor::auth::local::LocalUsers,
    clock: Arc<dyn supervisor::clock::Clock>,
) -> supervisor::web::WebState {
    state_with(
        data,
        supervisor::auth::signin::Accounts {
            local: Some(users),
            ..Default::default()
        },
        clock,
    )
}

/// A web state for tests with any account sources.
pub fn state_with(
    data: &Path,
    accounts: supervisor::auth::signin::Accounts,
    clock: Arc<dyn supervisor::clock::Clock>,
) -> supervisor::web::WebState {
    state_idle(
        data,
        accounts,
        clock,
        supervisor::auth::session::DEFAULT_IDLE,
    )
}

/// A web state with a chosen idle timeout.
pub fn state_idle(
    data: &Path,
    accounts: supervisor::auth::signin::Accounts,
    clock: Arc<dyn supervisor::clock::Clock>,
    idle: jiff::SignedDuration,
) -> supervisor::web::WebState {
    supervisor::web::WebState {
        dev: true,
        chat: None,
        prompt_cap: supervisor::web::DEFAULT_PROMPT_CAP,
        reply_tokens: supervisor::web::DEFAULT_REPLY_TOKENS,
        store: supervisor::store::Store::open(&data.join(supervisor::store::FILE)).unwrap(),
        audit_dir: data.join("audit"),
        config: Arc::new(supervisor::config::Config::default()),
        installer: None,
        auth: Arc::new(supervisor::web::Auth {
            accounts,
            sessions: supervisor::auth::session::Sessions::new(clock.clone(), idle),
            throttle: supervisor::auth::throttle::Throttle::new(clock),
            audit: super::audit_log(data),
        }),
    }
}

/// Serves `state`'s app over HTTPS on a free loopback port with dev mode's certificate in
/// `data` (no redirect listener).
pub async fn serve_app(
    data: &Path,
    state: supervisor::web::WebState,
) -> supervisor::web::server::Listening {
    let (config, _) = supervisor::web::tls::for_data_dir(data, true).unwrap();
    supervisor::web::server::start(
        "127.0.0.1:0".parse().unwrap(),
        None,
        config,
        supervisor::web::app(state),
    )
    .await
    .unwrap()
}

/// Submits the sign-in form as a browser does: it first loads `/login`, which sets the form's
/// token cookie and hidden field, then posts `form` with the token (and `cookie`, if given).
pub async fn post_login(
    addr: SocketAddr,
    data: &Path,
    cookie: Option<&str>,
    form: &str,
    origin: bool,
) -> Reply {
    let page = browser(addr, data, "GET", "/login", None, None, false).await;
    let token_cookie = page
        .cookies
        .iter()
        .find(|c| c.starts_with("__Host-phibox-login="))
        .expect("the sign-in page sets its token cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let token = token_cookie.split_once('=').unwrap().1.to_owned();
    let cookies = match cookie {
        Some(c) => format!("{c}; {token_cookie}"),
        None => token_cookie,
    };
    browser(
        addr,
        data,
        "POST",
        "/login",
        Some(&cookies),
        Some(&format!("{form}&login_token={token}")),
        origin,
    )
    .await
}

/// Signs `user` in with `password` through the form (asserting it worked) and loads `page`;
/// returns the session cookie (`name=value`) and the CSRF token that page carries (empty if
/// the page has none, e.g. a role's refusal).
pub async fn signed_in(
    addr: SocketAddr,
    data: &Path,
    user: &str,
    password: &str,
    page: &str,
) -> (String, String) {
    let r = post_login(
        addr,
        data,
        None,
        &format!("user={user}&password={password}"),
        true,
    )
    .await;
    assert_eq!(r.status, 303, "{user}: {}", r.body);
    let cookie = r.cookies[0].split(';').next().unwrap().to_owned();
    let shown = browser(addr, data, "GET", page, Some(&cookie), None, false).await;
    let csrf = shown
        .body
        .split(r#"data-csrf=""#)
        .nth(1)
        .map(|s| s[..64].to_owned())
        .unwrap_or_default();
    (cookie, csrf)
}
