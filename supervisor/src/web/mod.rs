//! The web UI phiboxd serves itself: HTTPS with rustls (no proxy), the port-80 redirect,
//! security headers on every response, and the pages. Sign-in, roles, sessions and the chat
//! pages build on this (issue 5).

pub mod access;
pub mod admin;
pub mod chat;
pub mod conversations;
pub mod headers;
pub mod investigate;
pub mod model_status;
pub mod oversight;
pub mod pages;
pub mod redirect;
pub mod server;
pub mod signin;
pub mod templates;
pub mod tls;

use std::sync::Arc;

use axum::Router;

use crate::audit::AuditLog;
use crate::auth::session::Sessions;

/// Sign-in and sessions.
#[derive(Debug)]
pub struct Auth {
    pub accounts: crate::auth::signin::Accounts,
    pub sessions: Sessions,
    pub throttle: crate::auth::throttle::Throttle,
    pub audit: AuditLog,
}

/// What the pages need to know.
#[derive(Debug, Clone)]
pub struct WebState {
    /// Dev mode: a banner on every page says the box is not a production appliance.
    pub dev: bool,
    pub auth: Arc<Auth>,
    /// The audited chat path; `None` while no inference is available.
    pub chat: Option<crate::chat::Chat>,
    /// Longest text a chat request may carry, in characters (minimum necessary).
    pub prompt_cap: usize,
    /// Longest answer, in tokens.
    pub reply_tokens: u32,
    /// Transcripts, break-glass uses, investigations.
    pub store: crate::store::Store,
    /// The audit trail's directory (for the review report and investigations).
    pub audit_dir: std::path::PathBuf,
    /// The running configuration (the compliance page shows it).
    pub config: Arc<crate::config::Config>,
    /// Model bundle installs (the admin page shows their progress).
    pub installer: Option<Arc<crate::install::Installer>>,
}

/// The default answer limit: about a page.
pub const DEFAULT_REPLY_TOKENS: u32 = 512;

/// The default prompt cap: about four pages of notes.
pub const DEFAULT_PROMPT_CAP: usize = 12_000;

/// The HTTPS application: every route, with the security headers.
pub fn app(state: WebState) -> Router {
    pages::routes(state).layer(axum::middleware::from_fn(headers::security_headers))
}
