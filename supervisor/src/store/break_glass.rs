//! Break-glass uses waiting for acknowledgement: every emergency sign-in is listed in a banner
//! on the administrators' and auditors' pages until one of them acknowledges it.

use jiff::Timestamp;
use rusqlite::params;

use super::{micros, timestamp, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassUse {
    pub id: i64,
    pub user_id: String,
    pub session_id: String,
    pub at: Timestamp,
}

impl Store {
    pub async fn record_break_glass(
        &self,
        user_id: &str,
        session_id: &str,
        at: Timestamp,
    ) -> Result<i64, StoreError> {
        let (u, s) = (user_id.to_owned(), session_id.to_owned());
        self.with(move |c| {
            c.execute(
                "INSERT INTO break_glass (user_id, session_id, at_us) VALUES (?1, ?2, ?3)",
                params![u, s, micros(at)],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// The uses nobody has acknowledged yet, oldest first.
    pub async fn pending_break_glass(&self) -> Result<Vec<BreakGlassUse>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, user_id, session_id, at_us FROM break_glass \
                 WHERE acknowledged_by IS NULL ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(BreakGlassUse {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    session_id: r.get(2)?,
                    at: timestamp(r.get(3)?),
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Marks a use acknowledged by `by`; the use if it was pending (None: unknown or done).
    pub async fn acknowledge_break_glass(
        &self,
        id: i64,
        by: &str,
        at: Timestamp,
    ) -> Result<Option<BreakGlassUse>, StoreError> {
        let by = by.to_owned();
        self.with(move |c| {
            let tx = c.transaction()?;
            let found = tx
                .query_row(
                    "SELECT id, user_id, session_id, at_us FROM break_glass \
                     WHERE id = ?1 AND acknowledged_by IS NULL",
                    [id],
                    |r| {
                        Ok(BreakGlassUse {
                            id: r.get(0)?,
                            user_id: r.get(1)?,
                            session_id: r.get(2)?,
                            at: timestamp(r.get(3)?),
                        })
                    },
                )
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            if found.is_some() {
                tx.execute(
                    "UPDATE break_glass SET acknowledged_by = ?1, acknowledged_us = ?2 WHERE id = ?3",
                    params![by, micros(at), id],
                )?;
            }
            tx.commit()?;
            Ok(found)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn uses_stay_pending_until_acknowledged_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join(super::super::FILE)).unwrap();
        let at: Timestamp = "2026-12-01T03:00:00Z".parse().unwrap();
        let a = s.record_break_glass("emergency-1", "s1", at).await.unwrap();
        s.record_break_glass("emergency-2", "s2", at).await.unwrap();
        assert_eq!(s.pending_break_glass().await.unwrap().len(), 2);
        let done = s.acknowledge_break_glass(a, "admin", at).await.unwrap();
        assert_eq!(done.unwrap().user_id, "emergency-1");
        assert!(s
            .acknowledge_break_glass(a, "admin", at)
            .await
            .unwrap()
            .is_none());
        assert!(s
            .acknowledge_break_glass(999, "admin", at)
            .await
            .unwrap()
            .is_none());
        let left = s.pending_break_glass().await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].user_id, "emergency-2");
    }
}
