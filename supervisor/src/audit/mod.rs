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
