//! Capped exponential back-off between worker restarts. It starts over once a worker has
//! served for a while, so a box that crashes once a week restarts at once, and one that
//! crashes in a loop slows down to the cap.

use std::time::{Duration, Instant};

/// How long a worker must have been ready for the back-off to start over.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    ready_since: Option<Instant>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
            ready_since: None,
        }
    }

    /// The worker reported ready at `now`.
    pub fn ready(&mut self, now: Instant) {
        self.ready_since = Some(now);
    }

    /// The worker ended at `now`: the delay before the next start.
    pub fn failed(&mut self, now: Instant) -> Duration {
        if self
            .ready_since
            .take()
            .is_some_and(|t| now.duration_since(t) >= HEALTHY_AFTER)
        {
            self.next = self.initial;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over_after_a_healthy_run() {
        let t0 = Instant::now();
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        let delays: Vec<u128> = (0..6).map(|_| b.failed(t0).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 4000, 4000]);
        // A short run does not reset it.
        b.ready(t0);
        assert_eq!(b.failed(t0 + Duration::from_secs(5)).as_millis(), 4000);
        // A long one does.
        b.ready(t0);
        assert_eq!(b.failed(t0 + HEALTHY_AFTER).as_millis(), 500);
        assert_eq!(b.failed(t0).as_millis(), 1000);
    }
}
