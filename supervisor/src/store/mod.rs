//! The box's own database on the data volume (SQLite through rusqlite): conversation
//! transcripts kept for investigations under a retention setting, the break-glass uses waiting
//! for acknowledgement, and the privacy officer's stated reasons. WAL with
//! `synchronous=FULL`: a write that returned survives a power cut. The file is 0600 (SQLite
//! gives its WAL the same mode). The text columns hold PHI: this file lives only on the
//! encrypted data volume, and nothing here logs a column's value.

pub mod break_glass;
pub mod investigations;
pub mod transcripts;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

/// The database file's name in the data directory.
pub const FILE: &str = "phibox.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the database {path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} is of a newer schema ({found}) than this phiboxd knows ({known})"
    )]
    Newer {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("a database task failed")]
    Task,
}

/// Schema migrations, in order; `user_version` counts those applied.
const MIGRATIONS: &[&str] = &["CREATE TABLE turns (
        id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        started_us INTEGER NOT NULL,
        template TEXT NOT NULL,
        user_text TEXT NOT NULL,
        response TEXT NOT NULL,
        finish TEXT NOT NULL,
        request_seq INTEGER NOT NULL
    );
    CREATE INDEX turns_by_session ON turns (session_id, id);
    CREATE INDEX turns_by_user ON turns (user_id, started_us);
    CREATE INDEX turns_by_time ON turns (started_us);
    CREATE TABLE break_glass (
        id INTEGER PRIMARY KEY,
        user_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        at_us INTEGER NOT NULL,
        acknowledged_by TEXT,
        acknowledged_us INTEGER
    );
    CREATE TABLE investigations (
        id INTEGER PRIMARY KEY,
        at_us INTEGER NOT NULL,
        officer TEXT NOT NULL,
        session_id TEXT NOT NULL,
        category TEXT NOT NULL,
        reason TEXT NOT NULL
    );"];

/// The database. Cheap to clone; one connection, used from blocking threads.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating, mode 0600) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let sql = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(sql(rusqlite::Error::InvalidQuery));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(sql)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::Newer {
                path: path.to_path_buf(),
                found: version,
                known,
            });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(sql)?;
            tx.execute_batch(m).map_err(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path.to_path_buf()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection (on this thread).
    pub fn with_blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(|source| StoreError::Sqlite {
            path: self.path.to_path_buf(),
            source,
        })
    }

    /// Runs `f` on the connection on a blocking thread.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.with_blocking(f))
            .await
            .map_err(|_| StoreError::Task)?
    }
}

/// Microseconds since the epoch, as the tables keep times.
pub fn micros(t: jiff::Timestamp) -> i64 {
    t.as_microsecond()
}

/// The inverse of [`micros`].
pub fn timestamp(us: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(us).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_in_wal_mode_with_full_sync_and_private_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let s = Store::open(&path).unwrap();
        let (mode, sync): (String, i64) = s
            .with_blocking(|c| {
                Ok((
                    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                    c.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
                ))
            })
            .unwrap();
        assert_eq!((mode.as_str(), sync), ("wal", 2));
        let perms = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(perms, 0o600);
        drop(s);
        // Reopening does not migrate again.
        Store::open(&path).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let s = Store::open(&path).unwrap();
        s.with_blocking(|c| c.pragma_update(None, "user_version", 99))
            .unwrap();
        drop(s);
        let e = Store::open(&path).unwrap_err().to_string();
        assert!(e.contains("newer schema"), "{e}");
    }
}
