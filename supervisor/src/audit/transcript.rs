//! Checking a stored transcript against the trail (the privacy officer's investigation page):
//! each turn's user text and response are hashed with the box's key and compared with the
//! session's `chat_request` and `chat_response_*` records, in order. A transcript that was
//! edited after the fact, or records that belong to another text, show as mismatches.

use sandbox::protocol::Phi;

use super::keys::HashKey;
use super::record::{Action, Record};

/// One turn of a stored transcript.
#[derive(Debug, Clone)]
pub struct Turn {
    pub user: Phi,
    pub response: Phi,
}

/// How one turn compares with its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCheck {
    /// The request record's seq, if the session has one for this turn.
    pub request_seq: Option<u64>,
    pub user_matches: bool,
    /// The response record's seq, if any.
    pub response_seq: Option<u64>,
    pub response_matches: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptCheck {
    pub turns: Vec<TurnCheck>,
    /// Requests recorded for the session beyond the transcript's turns.
    pub unmatched_requests: Vec<u64>,
}

impl TranscriptCheck {
    /// Every turn matches its records and no recorded request is left over.
    pub fn matches(&self) -> bool {
        self.unmatched_requests.is_empty()
            && self
                .turns
                .iter()
                .all(|t| t.user_matches && t.response_matches)
    }
}

fn is_response(a: Action) -> bool {
    matches!(
        a,
        Action::ChatResponseCompleted | Action::ChatResponseCancelled | Action::ChatResponseFailed
    )
}

/// Compares a session's transcript with the trail's records (any records: those of other
/// sessions are ignored).
pub fn check(
    key: &HashKey,
    session_id: &str,
    turns: &[Turn],
    records: &[Record],
) -> TranscriptCheck {
    let session: Vec<&Record> = records
        .iter()
        .filter(|r| r.session_id.as_deref() == Some(session_id))
        .collect();
    let requests: Vec<&Record> = session
        .iter()
        .copied()
        .filter(|r| r.action == Action::ChatRequest)
        .collect();
    let response_of = |req: &Record| -> Option<&Record> {
        let seq = req.seq.to_string();
        session
            .iter()
            .copied()
            .find(|r| is_response(r.action) && r.detail.get("request_seq") == Some(&seq))
    };
    let turns_checked = turns
        .iter()
        .enumerate()
        .map(|(i, turn)| {
            let req = requests.get(i).copied();
            let resp = req.and_then(response_of);
            let user_matches = req
                .and_then(|r| r.prompt_hash.as_deref())
                .is_some_and(|h| key.matches(&turn.user.0, h));
            let response_matches = resp
                .and_then(|r| r.response_hash.as_deref())
                .is_some_and(|h| key.matches(&turn.response.0, h));
            TurnCheck {
                request_seq: req.map(|r| r.seq),
                user_matches,
                response_seq: resp.map(|r| r.seq),
                response_matches,
            }
        })
        .collect();
    TranscriptCheck {
        turns: turns_checked,
        unmatched_requests: requests.iter().skip(turns.len()).map(|r| r.seq).collect(),
    }
}
