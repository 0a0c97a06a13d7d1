//! Security headers on every response: HSTS, a CSP that allows only the box's own scripts and
//! styles (no inline script) and no framing, no MIME sniffing, no referrer, and `no-store` on
//! everything but the embedded static assets (any page may show PHI).

use axum::extract::Request;
use axum::http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY,
    STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::middleware::Next;
use axum::response::Response;

pub const HSTS: &str = "max-age=31536000; includeSubDomains";
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; \
     frame-ancestors 'none'";
/// Where the embedded static assets are served (cacheable: they hold no PHI).
pub const ASSETS: &str = "/assets/";

pub async fn security_headers(req: Request, next: Next) -> Response {
    let assets = req.uri().path().starts_with(ASSETS);
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(if assets {
            "private, max-age=3600"
        } else {
            "no-store"
        }),
    );
    res
}
