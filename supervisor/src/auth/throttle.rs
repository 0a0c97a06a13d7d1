//! Brute-force protection for sign-in: failures are counted per account name (whether or not
//! the account exists, so the answer tells nothing about it) and per client address within a
//! sliding window; at the limit further attempts are refused until the window has passed. The
//! caller records each lockout in the audit trail.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

use crate::clock::Clock;

pub const WINDOW: SignedDuration = SignedDuration::from_mins(15);
/// Failures per account name within the window before it is locked.
pub const PER_ACCOUNT: usize = 5;
/// Failures per client address within the window before it is locked (a shared workstation
/// may see a few users mistype; a guessing script many names).
pub const PER_ADDRESS: usize = 20;
/// Keys kept at most; the oldest are dropped beyond (memory stays bounded under a flood).
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Account(String),
    Address(IpAddr),
}

impl Key {
    pub fn scope(&self) -> &'static str {
        match self {
            Key::Account(_) => "account",
            Key::Address(_) => "address",
        }
    }
}

/// A refusal: which key is locked and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    pub key: Key,
    pub until: Timestamp,
}

pub struct Throttle {
    clock: Arc<dyn Clock>,
    failures: Mutex<HashMap<Key, VecDeque<Timestamp>>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Throttle")
    }
}

fn limit(k: &Key) -> usize {
    match k {
        Key::Account(_) => PER_ACCOUNT,
        Key::Address(_) => PER_ADDRESS,
    }
}

impl Throttle {
    pub fn new(clock: Arc<dyn Clock>) -> Throttle {
        Throttle {
            clock,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(account: &str, addr: IpAddr) -> [Key; 2] {
        [Key::Account(account.to_lowercase()), Key::Address(addr)]
    }

    /// Whether an attempt may be checked at all.
    pub fn check(&self, account: &str, addr: IpAddr) -> Result<(), Locked> {
        let now = self.clock.now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for key in Self::keys(account, addr) {
            if let Some(times) = map.get_mut(&key) {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= WINDOW)
                {
                    times.pop_front();
                }
                if times.len() >= limit(&key) {
                    let until = times[times.len() - limit(&key)]
                        .checked_add(WINDOW)
                        .unwrap_or(Timestamp::MAX);
                    return Err(Locked { key, until });
                }
            }
        }
        Ok(())
    }

    /// Counts a failure; returns the keys this failure has just locked (for lockout records).
    pub fn failed(&self, account: &str, addr: IpAddr) -> Vec<Locked> {
        let now = self.clock.now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS {
            map.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < WINDOW)
            });
        }
        let mut locked = Vec::new();
        for key in Self::keys(account, addr) {
            let times = map.entry(key.clone()).or_default();
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= WINDOW)
            {
                times.pop_front();
            }
            times.push_back(now);
            if times.len() == limit(&key) {
                locked.push(Locked {
                    key,
                    until: now.checked_add(WINDOW).unwrap_or(Timestamp::MAX),
                });
            }
        }
        locked
    }

    /// A successful sign-in clears the account's failures (not the address's).
    pub fn succeeded(&self, account: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Key::Account(account.to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn five_failures_lock_an_account_for_the_window() {
        let clock = Arc::new(ManualClock::new("2026-12-01T09:00:00Z".parse().unwrap()));
        let t = Throttle::new(clock.clone());
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        for i in 0..5 {
            assert!(t.check("jsmith", ip).is_ok(), "attempt {i}");
            let locked = t.failed("JSmith", ip);
            assert_eq!(locked.len(), usize::from(i == 4), "attempt {i}: {locked:?}");
            clock.advance(SignedDuration::from_mins(1));
        }
        let l = t.check("jsmith", ip).unwrap_err();
        assert_eq!(l.key.scope(), "account");
        assert!(
            t.check("other", ip).is_ok(),
            "another account from the same place"
        );
        clock.advance(SignedDuration::from_mins(11)); // the first failure leaves the window
        assert!(t.check("jsmith", ip).is_ok());
    }

    #[test]
    fn an_address_guessing_many_names_is_locked() {
        let clock = Arc::new(ManualClock::new("2026-12-01T09:00:00Z".parse().unwrap()));
        let t = Throttle::new(clock);
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        for i in 0..PER_ADDRESS {
            t.failed(&format!("user{i}"), ip);
        }
        assert_eq!(t.check("fresh", ip).unwrap_err().key, Key::Address(ip));
        assert!(t.check("fresh", "10.0.0.10".parse().unwrap()).is_ok());
    }
}
