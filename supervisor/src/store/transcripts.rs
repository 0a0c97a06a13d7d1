//! Conversation transcripts: each chat turn's exact user message and response, kept for
//! investigations (the privacy officer compares them with the trail's keyed hashes) and for the
//! user's own conversation list, deleted once older than the retention setting.

use jiff::Timestamp;
use rusqlite::{params, Row};
use sandbox::protocol::Phi;

use super::{micros, timestamp, Store, StoreError};

/// A turn to store.
#[derive(Debug, Clone)]
pub struct NewTurn {
    pub session_id: String,
    pub user_id: String,
    pub started: Timestamp,
    pub template: String,
    /// The user message exactly as hashed into the request record.
    pub user_text: Phi,
    pub response: Phi,
    /// `end_of_text`, `length`, `stop_string`, `cancelled` or `failed`.
    pub finish: String,
    /// The `chat_request` record's seq.
    pub request_seq: u64,
}

/// A stored turn.
#[derive(Debug, Clone)]
pub struct StoredTurn {
    pub id: i64,
    pub session_id: String,
    pub user_id: String,
    pub started: Timestamp,
    pub template: String,
    pub user_text: Phi,
    pub response: Phi,
    pub finish: String,
    pub request_seq: u64,
}

const COLUMNS: &str =
    "id, session_id, user_id, started_us, template, user_text, response, finish, request_seq";

fn turn(r: &Row<'_>) -> rusqlite::Result<StoredTurn> {
    Ok(StoredTurn {
        id: r.get(0)?,
        session_id: r.get(1)?,
        user_id: r.get(2)?,
        started: timestamp(r.get(3)?),
        template: r.get(4)?,
        user_text: Phi(r.get(5)?),
        response: Phi(r.get(6)?),
        finish: r.get(7)?,
        request_seq: r.get::<_, i64>(8)?.max(0) as u64,
    })
}

impl Store {
    /// Stores a turn (durable when this returns); its id.
    pub async fn save_turn(&self, t: NewTurn) -> Result<i64, StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO turns (session_id, user_id, started_us, template, user_text, \
                 response, finish, request_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    t.session_id,
                    t.user_id,
                    micros(t.started),
                    t.template,
                    t.user_text.0,
                    t.response.0,
                    t.finish,
                    t.request_seq as i64
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// The turns matching `condition` (SQL over the table's columns, with `?1`, `?2`…).
    async fn turns_where(
        &self,
        condition: &'static str,
        params: Vec<rusqlite::types::Value>,
    ) -> Result<Vec<StoredTurn>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare(&format!("SELECT {COLUMNS} FROM turns WHERE {condition}"))?;
            let rows = st.query_map(rusqlite::params_from_iter(params), turn)?;
            rows.collect()
        })
        .await
    }

    /// A session's turns, oldest first.
    pub async fn session_turns(&self, session_id: &str) -> Result<Vec<StoredTurn>, StoreError> {
        self.turns_where(
            "session_id = ?1 ORDER BY id",
            vec![session_id.to_owned().into()],
        )
        .await
    }

    /// A user's own turns, newest first, at most `limit`.
    pub async fn user_turns(
        &self,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<StoredTurn>, StoreError> {
        self.turns_where(
            "user_id = ?1 ORDER BY started_us DESC, id DESC LIMIT ?2",
            vec![user_id.to_owned().into(), i64::from(limit).into()],
        )
        .await
    }

    /// One turn, only if it is `user_id`'s.
    pub async fn user_turn(
        &self,
        user_id: &str,
        id: i64,
    ) -> Result<Option<StoredTurn>, StoreError> {
        let found = self
            .turns_where(
                "id = ?1 AND user_id = ?2",
                vec![id.into(), user_id.to_owned().into()],
            )
            .await?;
        Ok(found.into_iter().next())
    }

    /// Deletes the turns that started before `cutoff`; how many.
    pub async fn purge_turns_before(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        self.with(move |c| c.execute("DELETE FROM turns WHERE started_us < ?1", [micros(cutoff)]))
            .await
    }
}

/// Deletes transcripts older than the retention, now and every `every`; each deletion that
/// removes something is recorded (`admin_action`, `transcripts_purged`, how many).
pub async fn keep_within(
    store: Store,
    audit: crate::audit::AuditLog,
    retention_days: u32,
    every: std::time::Duration,
) {
    loop {
        let cutoff = audit
            .now()
            .checked_sub(jiff::SignedDuration::from_hours(
                24 * i64::from(retention_days),
            ))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        match store.purge_turns_before(cutoff).await {
            Ok(0) => {}
            Ok(n) => {
                let e = crate::audit::Entry::new(crate::audit::Action::AdminAction)
                    .detail("action", "transcripts_purged")
                    .detail("turns", n.to_string())
                    .detail("retention_days", retention_days.to_string());
                if let Err(e) = audit.append(e).await {
                    tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot record a transcript purge");
                }
            }
            Err(e) => {
                tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot delete expired transcripts");
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(session: &str, user: &str, at: &str, text: &str) -> NewTurn {
        NewTurn {
            session_id: session.into(),
            user_id: user.into(),
            started: at.parse().unwrap(),
            template: "clinical_summary".into(),
            user_text: Phi(text.into()),
            response: Phi(format!("answer to {text}")),
            finish: "end_of_text".into(),
            request_seq: 7,
        }
    }

    #[tokio::test]
    async fn turns_by_session_by_user_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join(super::super::FILE)).unwrap();
        s.save_turn(new("s1", "alice", "2026-01-01T10:00:00Z", "one"))
            .await
            .unwrap();
        let second = s
            .save_turn(new("s1", "alice", "2026-03-01T10:00:00Z", "two"))
            .await
            .unwrap();
        s.save_turn(new("s2", "bob", "2026-03-02T10:00:00Z", "three"))
            .await
            .unwrap();

        let s1 = s.session_turns("s1").await.unwrap();
        assert_eq!(s1.len(), 2);
        assert_eq!(s1[0].user_text.0, "one");
        assert_eq!(s1[1].response.0, "answer to two");
        assert_eq!(s1[0].request_seq, 7);

        let mine = s.user_turns("alice", 10).await.unwrap();
        assert_eq!(
            mine.iter()
                .map(|t| t.user_text.0.as_str())
                .collect::<Vec<_>>(),
            ["two", "one"]
        );
        assert!(
            s.user_turn("bob", second).await.unwrap().is_none(),
            "not bob's"
        );
        assert!(s.user_turn("alice", second).await.unwrap().is_some());

        let gone = s
            .purge_turns_before("2026-02-01T00:00:00Z".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(gone, 1);
        assert_eq!(s.session_turns("s1").await.unwrap().len(), 1);
    }
}
