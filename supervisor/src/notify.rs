//! systemd integration: `READY=1` once serving, `STOPPING=1` on shutdown, and watchdog pings
//! only while the inference manager answers, so a wedged supervisor is restarted by systemd.
//! Without `NOTIFY_SOCKET` (not under systemd) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::inference::InferenceHandle;

pub fn ready() {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!(error = %e, "sd_notify READY failed");
    }
}

pub fn stopping() {
    if let Err(e) = sd_notify::notify(&[NotifyState::Stopping]) {
        tracing::warn!(error = %e, "sd_notify STOPPING failed");
    }
}

/// Pings the watchdog at half its interval while `handle` answers; returns if no watchdog is
/// configured.
pub async fn watchdog(handle: InferenceHandle) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = interval / 2;
    loop {
        tokio::time::sleep(period).await;
        let alive = tokio::time::timeout(Duration::from_secs(5).min(period), handle.ping())
            .await
            .unwrap_or(false);
        if alive {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        } else {
            tracing::error!("the inference manager does not answer; withholding the watchdog ping");
        }
    }
}
