//! What an admin standing at the box sees of an install: the phase, bytes copied, rate and
//! time left, and at the end either "you can remove the stick" or the refusal. Published on a
//! watch channel (the admin page reads it) and written to the journal, at most every few
//! seconds while copying.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How often the journal hears about a running copy.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// The phase of the current or last install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Verifying,
    Copying,
    Checking,
    Probing,
    Activating,
    /// Waiting for in-flight chats to finish and the new model to serve.
    Switching,
    /// Finished: the model `label` serves (or already did).
    Done {
        label: String,
        message: String,
    },
    Refused {
        reason: String,
        message: String,
    },
}

/// A snapshot of the install.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    /// `name version (sequence N)` once the manifest is verified.
    pub bundle: Option<String>,
    pub done: u64,
    pub total: u64,
    /// Bytes per second since the copy started.
    pub rate: f64,
    pub seconds_left: Option<u64>,
    /// True when the stick is no longer needed (after a refusal or once the copy is checked).
    pub stick_free: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            phase: Phase::Idle,
            bundle: None,
            done: 0,
            total: 0,
            rate: 0.0,
            seconds_left: None,
            stick_free: true,
        }
    }
}

/// Turns installer callbacks into progress snapshots and journal lines.
#[derive(Debug)]
pub struct Tracker {
    tx: watch::Sender<Progress>,
    copy_started: Option<Instant>,
    last_log: Option<Instant>,
}

impl Tracker {
    pub fn new(tx: watch::Sender<Progress>) -> Tracker {
        Tracker {
            tx,
            copy_started: None,
            last_log: None,
        }
    }

    pub fn phase(&self, phase: Phase) {
        self.tx.send_modify(|p| {
            p.stick_free = matches!(
                phase,
                Phase::Probing
                    | Phase::Activating
                    | Phase::Switching
                    | Phase::Done { .. }
                    | Phase::Refused { .. }
            );
            p.phase = phase;
        });
    }

    pub fn start(&self) {
        self.tx.send_replace(Progress {
            phase: Phase::Verifying,
            stick_free: false,
            ..Progress::default()
        });
    }

    pub fn bundle(&self, label: String) {
        self.tx.send_modify(|p| p.bundle = Some(label));
    }

    /// Bytes copied so far.
    pub fn copied(&mut self, done: u64, total: u64) {
        let now = Instant::now();
        let started = *self.copy_started.get_or_insert(now);
        let secs = now.duration_since(started).as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let seconds_left =
            (rate > 0.0).then(|| ((total - done.min(total)) as f64 / rate).ceil() as u64);
        self.tx.send_modify(|p| {
            p.phase = Phase::Copying;
            p.done = done;
            p.total = total;
            p.rate = rate;
            p.seconds_left = seconds_left;
        });
        let due = self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY);
        if due || done == total {
            self.last_log = Some(now);
            tracing::info!(
                copied_mib = done >> 20,
                total_mib = total >> 20,
                mib_per_s = format!("{:.1}", rate / f64::from(1u32 << 20)),
                seconds_left = seconds_left.unwrap_or(0),
                "installing a model bundle"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_time_left_follow_the_copy() {
        let (tx, rx) = watch::channel(Progress::default());
        let mut t = Tracker::new(tx);
        t.start();
        assert!(!rx.borrow().stick_free);
        t.copied(0, 1000);
        std::thread::sleep(Duration::from_millis(50));
        t.copied(500, 1000);
        let p = rx.borrow().clone();
        assert_eq!((p.done, p.total), (500, 1000));
        assert!(p.rate > 0.0);
        let left = p.seconds_left.unwrap();
        assert!(left >= 1, "{left}");
        t.phase(Phase::Probing);
        assert!(rx.borrow().stick_free);
    }
}
