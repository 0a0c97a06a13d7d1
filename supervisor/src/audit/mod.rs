//! The audit trail: every interaction recorded, durable before it is acted on, PHI-free,
//! hash-chained across monthly segments and sealed with forward-secure keys (see
//! docs/audit.md). Used by every other part of the supervisor through [`AuditLog`].

pub mod attr;
pub mod keys;
pub mod reader;
pub mod record;
pub mod retention;
pub mod review;
pub mod segment;
pub mod transcript;
pub mod verify;
pub mod writer;

pub use keys::{HashKey, SealKey};
pub use record::{Action, Actor, Entry, Record};
pub use verify::{verify, Damage, DamageKind, Report, VerifyOptions};
pub use writer::{Appended, AuditError, AuditLog, Opened, Options};

/// The checks the `audit_segment` fuzz target runs (and the tests replay its corpus through).
pub mod fuzzing {
    use super::record::{line_hash, Record};
    use super::segment;

    /// Splits arbitrary bytes as a segment and parses every line: never panics, and a line
    /// that parses is exactly the writer's serialisation of what it parsed to.
    pub fn segment(data: &[u8]) {
        let content = segment::split(data);
        let mut total = content.torn.as_ref().map_or(0, |(_, t)| t.len());
        for (offset, line) in &content.lines {
            assert!(*offset as usize + line.len() < data.len() + 1);
            total += line.len() + 1;
            if let Ok(r) = Record::parse(line) {
                assert_eq!(r.to_line().as_bytes(), line.as_slice());
                let _ = line_hash(line);
                let _ = r.action.name();
            }
        }
        assert_eq!(total, data.len());
    }
}
