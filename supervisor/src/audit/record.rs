//! One audit record: the setup guide's fields, `seq` and `prev`, an action and a small
//! PHI-free detail map. A record is stored as one line of compact JSON whose bytes are exactly
//! what [`Record::to_line`] produces: the verifier re-serialises every record it reads and
//! treats any other spelling of the same values as damage.

use std::collections::BTreeMap;

use sandbox::protocol::Phi;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::HashKey;

/// `prev` of the first record of a trail.
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. Names are the `action` field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    LoginSuccess,
    LoginFailure,
    Logout,
    IdleLogout,
    Lockout,
    BreakGlassLogin,
    ChatRequest,
    ChatResponseCompleted,
    ChatResponseCancelled,
    ChatResponseFailed,
    TranscriptAccess,
    /// Any administrative change; `detail.what` names it.
    AdminAction,
    UsbInserted,
    UsbRemoved,
    BundleRejected,
    BundleInstalled,
    BundleActivated,
    WorkerCrash,
    WorkerRestart,
    Startup,
    Shutdown,
    UnlockFailure,
    /// A closed segment older than the retention period copied out and removed (`detail`
    /// carries what the verifier needs to start the trail after it).
    AuditExport,
    /// A torn last line found at start-up and moved aside (`detail` says where).
    TornTailRecovered,
    Seal,
}

impl Action {
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One line of the trail. Field order is the serialisation order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub timestamp: String,
    pub user_id: Option<String>,
    pub user_role: Option<String>,
    pub department: Option<String>,
    pub action: Action,
    pub model: Option<String>,
    /// `hmac-sha256:<hex>` of the prompt text under the box's audit key.
    pub prompt_hash: Option<String>,
    pub prompt_length_chars: Option<u64>,
    /// `hmac-sha256:<hex>` of the response text under the box's audit key.
    pub response_hash: Option<String>,
    pub response_length_chars: Option<u64>,
    pub session_id: Option<String>,
    pub client_ip: Option<String>,
    /// Action-specific facts; never prompt or response text.
    pub detail: BTreeMap<String, String>,
    /// `sha256:<hex>` of the previous record's line (without its newline), or [`GENESIS`].
    pub prev: String,
}

impl Record {
    /// The stored line, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a record always serialises")
    }

    /// Parses one line (without its newline) and checks that it is in the canonical form.
    pub fn parse(line: &[u8]) -> Result<Record, ParseError> {
        let record: Record =
            serde_json::from_slice(line).map_err(|e| ParseError::Json(e.to_string()))?;
        if record.to_line().as_bytes() != line {
            return Err(ParseError::NotCanonical);
        }
        Ok(record)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a valid record: {0}")]
    Json(String),
    #[error("not in the form the writer produces (bytes were changed)")]
    NotCanonical,
}

/// `sha256:<hex>` of a stored line: the next record's `prev`.
pub fn line_hash(line: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(line)))
}

/// Who did something, as far as it is known. Fields are null in the record when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub user_id: Option<String>,
    pub user_role: Option<String>,
    pub department: Option<String>,
    pub session_id: Option<String>,
    pub client_ip: Option<String>,
}

/// What a caller asks to record; the writer adds `seq`, `timestamp` and `prev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub action: Action,
    pub actor: Actor,
    pub model: Option<String>,
    pub prompt_hash: Option<String>,
    pub prompt_length_chars: Option<u64>,
    pub response_hash: Option<String>,
    pub response_length_chars: Option<u64>,
    pub detail: BTreeMap<String, String>,
}

impl Entry {
    pub fn new(action: Action) -> Entry {
        Entry {
            action,
            actor: Actor::default(),
            model: None,
            prompt_hash: None,
            prompt_length_chars: None,
            response_hash: None,
            response_length_chars: None,
            detail: BTreeMap::new(),
        }
    }

    pub fn actor(mut self, actor: &Actor) -> Entry {
        self.actor = actor.clone();
        self
    }

    pub fn model(mut self, model: impl Into<String>) -> Entry {
        self.model = Some(model.into());
        self
    }

    /// The prompt's keyed hash and length; the text itself goes nowhere.
    pub fn prompt(mut self, key: &HashKey, text: &Phi) -> Entry {
        self.prompt_hash = Some(key.hash(&text.0));
        self.prompt_length_chars = Some(text.0.chars().count() as u64);
        self
    }

    /// The response's keyed hash and length.
    pub fn response(mut self, key: &HashKey, text: &Phi) -> Entry {
        self.response_hash = Some(key.hash(&text.0));
        self.response_length_chars = Some(text.0.chars().count() as u64);
        self
    }

    /// Adds a PHI-free fact (an error kind, a device serial, a bundle version…).
    pub fn detail(mut self, key: &str, value: impl Into<String>) -> Entry {
        self.detail.insert(key.to_owned(), value.into());
        self
    }

    /// The line this entry would be stored as (placeholder seq, time and prev of the real
    /// sizes): for benchmarks that compare against writing lines of the same length.
    pub fn into_record_for_size(self) -> String {
        self.into_record(1_000_000, "2026-12-01T00:00:00.000Z".into(), GENESIS.into())
            .to_line()
    }

    pub(crate) fn into_record(self, seq: u64, timestamp: String, prev: String) -> Record {
        Record {
            seq,
            timestamp,
            user_id: self.actor.user_id,
            user_role: self.actor.user_role,
            department: self.actor.department,
            action: self.action,
            model: self.model,
            prompt_hash: self.prompt_hash,
            prompt_length_chars: self.prompt_length_chars,
            response_hash: self.response_hash,
            response_length_chars: self.response_length_chars,
            session_id: self.actor.session_id,
            client_ip: self.actor.client_ip,
            detail: self.detail,
            prev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Entry::new(Action::ChatRequest)
            .actor(&Actor {
                user_id: Some("jsmith".into()),
                user_role: Some("nurse".into()),
                ..Actor::default()
            })
            .model("gemma")
            .detail("template", "summary")
            .into_record(7, "2026-12-01T03:04:05.120Z".into(), GENESIS.into())
    }

    #[test]
    fn lines_round_trip_and_have_every_field_of_the_guide() {
        let r = sample();
        let line = r.to_line();
        assert_eq!(Record::parse(line.as_bytes()), Ok(r));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for field in [
            "timestamp",
            "user_id",
            "user_role",
            "department",
            "action",
            "model",
            "prompt_hash",
            "prompt_length_chars",
            "response_length_chars",
            "session_id",
            "client_ip",
            "seq",
            "prev",
        ] {
            assert!(v.get(field).is_some(), "{field} missing from {line}");
        }
        assert_eq!(v["department"], serde_json::Value::Null);
        assert_eq!(v["action"], "chat_request");
        assert!(line.starts_with(r#"{"seq":7,"timestamp":"#), "{line}");
    }

    #[test]
    fn another_spelling_of_the_same_values_is_not_accepted() {
        let line = sample().to_line();
        let spaced = line.replacen(r#""seq":7"#, r#""seq": 7"#, 1);
        assert_eq!(
            Record::parse(spaced.as_bytes()),
            Err(ParseError::NotCanonical)
        );
        let extra = line.replacen('{', r#"{"x":1,"#, 1);
        assert!(matches!(
            Record::parse(extra.as_bytes()),
            Err(ParseError::Json(_))
        ));
    }

    #[test]
    fn action_names_are_snake_case() {
        assert_eq!(
            Action::ChatResponseCancelled.name(),
            "chat_response_cancelled"
        );
        assert_eq!(Action::Seal.name(), "seal");
    }
}
