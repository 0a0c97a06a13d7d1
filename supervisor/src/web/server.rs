//! Serving: the HTTPS listener (TLS handshake with a deadline, then HTTP/1.1 or HTTP/2 through
//! hyper) and the port-80 redirect listener. Each connection knows its peer address
//! (`ConnectInfo`), which the audit trail records as `client_ip`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listening on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Running listeners; dropping it (or [`Listening::stop`]) stops accepting.
#[derive(Debug)]
pub struct Listening {
    pub https: SocketAddr,
    pub http: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Listening {
    /// Stops accepting and closes open connections after at most `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// HTTP/2 carries the host as the `:authority` pseudo-header, which hyper puts in the URI:
/// give every request a Host header, so origin checks and redirects see one (browsers speak
/// HTTP/2 here; without this every same-origin form post of theirs would be refused).
fn fill_host<B>(req: &mut axum::http::Request<B>) {
    use axum::http::{header::HOST, HeaderValue};
    if req.headers().contains_key(HOST) {
        return;
    }
    if let Some(v) = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(HOST, v);
    }
}

/// Serves one accepted connection (TLS or not) until it closes or the server stops.
async fn connection<S>(io: S, peer: SocketAddr, app: Router, mut stop: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = app.map_request(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        fill_host(&mut req);
        req
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    stop: watch::Receiver<bool>,
) {
    let mut stop_rx = stop.clone();
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop_rx.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (app, stop, tls) = (app.clone(), stop.clone(), tls.clone());
        conns.spawn(async move {
            match tls {
                None => connection(tcp, peer, app, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(stream, peer, app, stop).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake refused")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}

/// Starts the HTTPS listener on `https` and, if given, the redirect listener on `http`.
pub async fn start(
    https: SocketAddr,
    http: Option<SocketAddr>,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
) -> Result<Listening, ServeError> {
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let listener = bind(https).await?;
    let https_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: https,
        source,
    })?;
    tasks.spawn(accept_loop(
        listener,
        Some(TlsAcceptor::from(tls)),
        app,
        stop_rx.clone(),
    ));
    let http_addr = match http {
        Some(addr) => {
            let listener = bind(addr).await?;
            let local = listener
                .local_addr()
                .map_err(|source| ServeError::Bind { addr, source })?;
            let redirect = super::redirect::router(https_addr.port())
                .layer(axum::middleware::from_fn(super::headers::security_headers));
            tasks.spawn(accept_loop(listener, None, redirect, stop_rx));
            Some(local)
        }
        None => None,
    };
    Ok(Listening {
        https: https_addr,
        http: http_addr,
        stop,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::{header::HOST, Request};

    #[test]
    fn http2_requests_get_their_host_from_the_authority() {
        let mut h2 = Request::builder()
            .uri("https://box.clinic:8443/login")
            .body(())
            .unwrap();
        super::fill_host(&mut h2);
        assert_eq!(h2.headers()[HOST], "box.clinic:8443");
        let mut h1 = Request::builder()
            .uri("/login")
            .header(HOST, "a.example")
            .body(())
            .unwrap();
        super::fill_host(&mut h1);
        assert_eq!(h1.headers()[HOST], "a.example");
    }
}
