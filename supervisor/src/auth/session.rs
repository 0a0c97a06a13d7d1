//! Server-side sessions: a 256-bit random id in a `__Host-` cookie (Secure, HttpOnly,
//! SameSite=Strict, Path=/), an idle timeout (15 minutes by default) and an absolute one (12
//! hours; at most 60 minutes for break-glass sessions), a CSRF token per session, a new id at
//! every sign-in, and an immediate end on sign-out or an admin's kill.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

use super::Identity;
use crate::clock::Clock;

/// The session cookie's name; the `__Host-` prefix makes browsers insist on Secure, Path=/ and
/// no Domain.
pub const COOKIE: &str = "__Host-phibox";
/// The sign-in form's CSRF cookie (double submit: the form carries the same value).
pub const LOGIN_COOKIE: &str = "__Host-phibox-login";
pub const DEFAULT_IDLE: SignedDuration = SignedDuration::from_mins(15);
pub const ABSOLUTE: SignedDuration = SignedDuration::from_hours(12);
pub const BREAK_GLASS_ABSOLUTE: SignedDuration = SignedDuration::from_mins(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The bearer secret in the cookie: never shown, never recorded.
    pub id: String,
    /// A public name for the session (audit records, transcripts, the admin's list): a hash
    /// of the id, so that whoever reads the trail cannot take over a live session.
    pub reference: String,
    pub identity: Identity,
    pub csrf: String,
    pub created: Timestamp,
    pub last_seen: Timestamp,
    pub client_ip: Option<String>,
}

/// Why a presented session is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    Unknown,
    /// Ended by the idle timeout (the session is returned for the audit record).
    Idle(Box<Session>),
    Absolute(Box<Session>),
}

/// The session store.
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    clock: Arc<dyn Clock>,
    idle: SignedDuration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

/// A 256-bit random token in hex (session ids, CSRF tokens).
pub fn random_token() -> String {
    random_hex(32)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the system's random source");
    hex::encode(b)
}

/// The public reference of a session id: 128 bits of SHA-256 over a label and the id.
pub fn reference_of(id: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::new()
        .chain_update(b"phibox session reference\0")
        .chain_update(id.as_bytes())
        .finalize();
    hex::encode(&d[..16])
}

impl Sessions {
    pub fn new(clock: Arc<dyn Clock>, idle: SignedDuration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            clock,
            idle,
        }
    }

    pub fn idle_timeout(&self) -> SignedDuration {
        self.idle
    }

    /// The store's clock's time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session (a fresh id: any earlier session of this browser is ended by the
    /// caller).
    pub fn create(&self, identity: Identity, client_ip: Option<String>) -> Session {
        let now = self.clock.now();
        let id = random_hex(32);
        let s = Session {
            reference: reference_of(&id),
            id,
            identity,
            csrf: random_hex(32),
            created: now,
            last_seen: now,
            client_ip,
        };
        self.lock().insert(s.id.clone(), s.clone());
        s
    }

    fn limit(s: &Session) -> SignedDuration {
        if s.identity.break_glass {
            BREAK_GLASS_ABSOLUTE
        } else {
            ABSOLUTE
        }
    }

    /// Looks a session up on a request and counts the request as activity.
    pub fn touch(&self, id: &str) -> Result<Session, Invalid> {
        self.check(id, true)
    }

    /// Looks a session up without counting activity (the page's idle-lock poll).
    pub fn peek(&self, id: &str) -> Result<Session, Invalid> {
        self.check(id, false)
    }

    /// Which timeout, if any, has ended `s` by `now`.
    fn expired(&self, s: &Session, now: Timestamp) -> Option<fn(Box<Session>) -> Invalid> {
        if now.duration_since(s.created) >= Self::limit(s) {
            Some(Invalid::Absolute)
        } else if now.duration_since(s.last_seen) >= self.idle {
            Some(Invalid::Idle)
        } else {
            None
        }
    }

    fn check(&self, id: &str, activity: bool) -> Result<Session, Invalid> {
        let now = self.clock.now();
        let mut map = self.lock();
        let Some(s) = map.get_mut(id) else {
            return Err(Invalid::Unknown);
        };
        if let Some(ended) = self.expired(s, now) {
            let s = map.remove(id).expect("present");
            return Err(ended(Box::new(s)));
        }
        if activity {
            s.last_seen = now;
        }
        Ok(s.clone())
    }

    /// Seconds of idleness left, rounded up (for the page's lock timer): 0 only once the
    /// session has ended, never while a fraction of a second remains.
    pub fn idle_left(&self, s: &Session) -> i64 {
        let left = self.idle - self.clock.now().duration_since(s.last_seen);
        let ms = left.as_millis();
        i64::try_from(ms.div_euclid(1000) + i128::from(ms.rem_euclid(1000) > 0)).unwrap_or(0)
    }

    /// Ends a session now (sign-out, an admin's kill).
    pub fn end(&self, id: &str) -> Option<Session> {
        self.lock().remove(id)
    }

    /// The live sessions, oldest first (those past a timeout are left to the sweeper, which
    /// records them).
    pub fn list(&self) -> Vec<Session> {
        let now = self.clock.now();
        let mut all: Vec<Session> = self
            .lock()
            .values()
            .filter(|s| self.expired(s, now).is_none())
            .cloned()
            .collect();
        all.sort_by(|a, b| {
            a.created
                .cmp(&b.created)
                .then(a.reference.cmp(&b.reference))
        });
        all
    }

    /// Ends the session with this public reference (an administrator's kill).
    pub fn end_by_reference(&self, reference: &str) -> Option<Session> {
        let mut map = self.lock();
        let id = map
            .values()
            .find(|s| s.reference == reference)
            .map(|s| s.id.clone())?;
        map.remove(&id)
    }

    /// Ends every session that has passed a timeout; returns them (for audit records).
    pub fn sweep(&self) -> Vec<Invalid> {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.iter()
            .filter_map(|id| self.check(id, false).err())
            .collect()
    }

    /// The `Set-Cookie` value for a session.
    pub fn cookie(id: &str) -> String {
        format!("{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict")
    }

    /// The `Set-Cookie` value that deletes the cookie.
    pub fn clear_cookie() -> String {
        format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::clock::ManualClock;

    fn who(break_glass: bool) -> Identity {
        Identity {
            user_id: "jsmith".into(),
            display_name: "J. Smith".into(),
            department: None,
            role: Role::Nurse,
            break_glass,
        }
    }

    #[test]
    fn idle_and_absolute_timeouts_end_sessions() {
        let clock = Arc::new(ManualClock::new("2026-12-01T08:00:00Z".parse().unwrap()));
        let s = Sessions::new(clock.clone(), DEFAULT_IDLE);
        let a = s.create(who(false), None);
        assert_eq!(a.id.len(), 64, "256 bits");
        assert_ne!(a.id, s.create(who(false), None).id);
        clock.advance(SignedDuration::from_mins(14));
        assert!(s.touch(&a.id).is_ok());
        clock.advance(SignedDuration::from_mins(14));
        assert!(s.peek(&a.id).is_ok(), "activity reset the idle clock");
        clock.advance(SignedDuration::from_mins(1));
        assert!(matches!(s.touch(&a.id), Err(Invalid::Idle(_))));
        assert_eq!(s.touch(&a.id), Err(Invalid::Unknown), "gone server-side");
        // Absolute: active all day long, still ends at 12 hours.
        let b = s.create(who(false), None);
        for _ in 0..(12 * 6) {
            clock.advance(SignedDuration::from_mins(10));
            if s.touch(&b.id).is_err() {
                break;
            }
        }
        assert_eq!(s.touch(&b.id), Err(Invalid::Unknown));
        // Break-glass: 60 minutes at most.
        let c = s.create(who(true), None);
        for _ in 0..6 {
            clock.advance(SignedDuration::from_mins(10));
            let _ = s.touch(&c.id);
        }
        assert_eq!(s.touch(&c.id), Err(Invalid::Unknown));
    }

    #[test]
    fn cookies_are_host_only_secure_httponly_strict() {
        let c = Sessions::cookie("ab");
        for part in [
            "__Host-phibox=ab",
            "Path=/",
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!c.contains("Domain"));
    }
}
