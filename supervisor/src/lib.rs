//! phiboxd, the appliance's supervisor: a direct child of systemd that owns the data volume, the
//! audit trail, the web UI and the confined inference worker. Privileged operations (namespaces,
//! mounts) stay behind the `sandbox` crate's narrow interface so that web-facing code can later
//! move into an unprivileged process.
//!
//! What exists so far: the inference manager and dev mode, which starts the confined worker,
//! proves its confinement from outside, runs a self-test generation and reports what it did.
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod cli_bundle;
pub mod clock;
pub mod config;
pub mod confinement_report;
pub mod dev;
pub mod inference;
pub mod install;
pub mod logging;
pub mod notify;
pub mod programs;
pub mod reaper;
pub mod store;
pub mod usb;
pub mod web;
