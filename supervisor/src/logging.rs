//! Logging: to the journal through tracing-journald when phiboxd runs under systemd with a
//! journal, else to stderr. Never log PHI: prompt and response text has no place in any event.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Where the log went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Journal,
    Stderr,
}

/// Installs the global subscriber; `RUST_LOG`-style filtering via `PHIBOX_LOG`.
pub fn init() -> Sink {
    let filter = EnvFilter::try_from_env("PHIBOX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // systemd sets JOURNAL_STREAM for services whose output goes to the journal.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(layer) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter)
                .with(layer.with_syslog_identifier("phiboxd".into()))
                .init();
            return Sink::Journal;
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    Sink::Stderr
}
