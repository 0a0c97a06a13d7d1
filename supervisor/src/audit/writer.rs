//! The audit writer: one thread owns the trail. Callers hand it entries and get an answer only
//! once their record is on disk (`fdatasync`); every entry waiting when the thread gets to the
//! disk goes into the same write and the same `fdatasync` (group commit). The thread also seals
//! the chain every `seal_interval`, at month rotation and at shutdown.
//!
//! After any write or sync error the writer stops accepting records (fail closed): a caller
//! that needs a durable record before acting (a chat request) must then refuse to act.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::oneshot;

use super::keys::{HashKey, KeyError, SealKey, HMAC_KEY_FILE, SEAL_SEED_FILE, SEAL_STATE_FILE};
use super::record::{line_hash, Action, Entry, Record, GENESIS};
use super::segment::{self, Month, Segment};
use crate::clock::Clock;

/// Where torn last lines are kept, under the audit directory.
pub const TORN_DIR: &str = "torn";
/// Most entries one group commit takes.
const MAX_GROUP: usize = 4096;
/// The longest the writer sleeps before looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: record {line} does not parse: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "the audit trail has records but its secrets are missing ({0}); restore them from backup"
    )]
    SecretsMissing(PathBuf),
    #[error(
        "the audit trail ends at seal {trail} but the seal key is at {state}: the tail of the \
         trail is missing; run `phibox audit verify`"
    )]
    TrailBehindKey { trail: u64, state: u64 },
    #[error("the audit trail holds seal {trail} but the seal key is only at {state}: the key state was rolled back")]
    KeyBehindTrail { trail: u64, state: u64 },
    #[error("the audit trail is not provisioned (no secrets in {0})")]
    NotProvisioned(PathBuf),
    #[error("the audit writer has stopped after an earlier error; nothing more can be recorded")]
    Stopped,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the trail lives and how it behaves.
#[derive(Clone)]
pub struct Options {
    /// The segment directory (`<data>/audit`).
    pub dir: PathBuf,
    /// The secrets directory (`<data>/secrets`).
    pub secrets: PathBuf,
    /// Dev mode: create missing secrets for an empty trail, writing the seal seed to a file.
    /// On the appliance provisioning happens once, at first boot.
    pub provision: bool,
    pub seal_interval: SignedDuration,
    pub clock: Arc<dyn Clock>,
    /// Set the append-only attribute on closed segments (`chattr +a`). Only tests that play an
    /// intruder rewriting closed segments turn it off.
    pub append_only: bool,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("dir", &self.dir)
            .field("secrets", &self.secrets)
            .field("provision", &self.provision)
            .field("seal_interval", &self.seal_interval)
            .field("append_only", &self.append_only)
            .finish_non_exhaustive()
    }
}

impl Options {
    pub fn new(data_dir: &Path, clock: Arc<dyn Clock>) -> Options {
        Options {
            dir: data_dir.join("audit"),
            secrets: data_dir.join("secrets"),
            provision: false,
            seal_interval: SignedDuration::from_mins(15),
            clock,
            append_only: true,
        }
    }
}

/// An acknowledged record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
}

/// What opening the trail found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opened {
    /// Records already in the trail.
    pub records: u64,
    /// A torn last line was moved to this file (and a record says so).
    pub torn_moved_to: Option<PathBuf>,
    /// The secrets were created now (an empty trail in dev mode).
    pub provisioned: bool,
}

enum Command {
    Append(Box<Entry>, oneshot::Sender<Result<Appended, AuditError>>),
    /// Look at the clock now (tests move a manual clock, then tick).
    Tick(oneshot::Sender<()>),
    Close(oneshot::Sender<Result<(), AuditError>>),
}

/// The handle: clone it freely.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Command>,
    hash_key: Arc<HashKey>,
    clock: Arc<dyn Clock>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

/// The writer thread's state.
struct Writer {
    opts: Options,
    file: Option<(Month, File)>,
    next_seq: u64,
    head: String,
    seal_key: SealKey,
    unsealed: u64,
    last_seal: Timestamp,
    failed: bool,
}

fn timestamp(t: Timestamp) -> String {
    format!("{t:.3}")
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// The last seal's (key index, seq) in a segment's records, if any.
fn last_seal(records: &[Record]) -> Option<(u64, u64)> {
    records
        .iter()
        .rev()
        .find(|r| r.action == Action::Seal)
        .and_then(|r| Some((r.detail.get("key_index")?.parse().ok()?, r.seq)))
}

fn parse_all(path: &Path, lines: &[(u64, Vec<u8>)]) -> Result<Vec<Record>, AuditError> {
    lines
        .iter()
        .enumerate()
        .map(|(i, (_, l))| {
            Record::parse(l).map_err(|e| AuditError::Corrupt {
                path: path.to_path_buf(),
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Opens a month's segment for appending, creating it (and syncing the directory) if new.
fn open_segment(dir: &Path, month: Month) -> Result<File, AuditError> {
    let path = dir.join(month.file_name());
    let existed = path.exists();
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    if !existed {
        sync_dir(dir)?;
    }
    Ok(file)
}

impl AuditLog {
    /// Opens (or, in dev mode, creates) the trail: moves a torn last line aside and records that,
    /// checks the seal key against the trail, and starts the writer thread.
    pub fn open(opts: Options) -> Result<(AuditLog, Opened), AuditError> {
        for d in [&opts.dir, &opts.secrets] {
            fs::create_dir_all(d).map_err(io_err(d))?;
            fs::set_permissions(d, fs::Permissions::from_mode(0o700)).map_err(io_err(d))?;
        }
        let segments = segment::list(&opts.dir).map_err(io_err(&opts.dir))?;
        let mut opened = Opened::default();
        let mut torn: Option<(Segment, u64, Vec<u8>)> = None;
        // The newest segment gives the head; the newest seal may sit one segment further back
        // (a new month's segment starts unsealed).
        let mut head = None;
        let mut last_seal = None;
        for (k, seg) in segments.iter().enumerate().rev() {
            let content = segment::read(seg).map_err(io_err(&seg.path))?;
            if k + 1 == segments.len() {
                if let Some((offset, bytes)) = content.torn.clone() {
                    torn = Some((seg.clone(), offset, bytes));
                }
            }
            let records = parse_all(&seg.path, &content.lines)?;
            if head.is_none() {
                if let Some((r, (_, line))) = records.last().zip(content.lines.last()) {
                    head = Some((r.seq, line_hash(line)));
                }
            }
            if last_seal.is_none() {
                last_seal = self::last_seal(&records);
            }
            if head.is_some() && last_seal.is_some() {
                break;
            }
        }
        opened.records = head.as_ref().map_or(0, |(seq, _)| seq + 1);
        let hmac_path = opts.secrets.join(HMAC_KEY_FILE);
        let state_path = opts.secrets.join(SEAL_STATE_FILE);
        if !hmac_path.exists() || !state_path.exists() {
            if head.is_some() {
                return Err(AuditError::SecretsMissing(opts.secrets.clone()));
            }
            if !opts.provision {
                return Err(AuditError::NotProvisioned(opts.secrets.clone()));
            }
            let seed = super::keys::provision(&opts.secrets)?;
            seed.save_seed(&opts.secrets.join(SEAL_SEED_FILE))?;
            opened.provisioned = true;
        }
        let hash_key = HashKey::load(&hmac_path)?;
        let mut seal_key = SealKey::load_state(&state_path)?;
        let expected = last_seal.map_or(0, |(i, _)| i + 1);
        if seal_key.index() + 1 == expected {
            // Stopped between writing a seal and evolving the key: finish the evolution.
            seal_key.evolve();
            seal_key.save_state(&state_path)?;
        } else if seal_key.index() > expected {
            return Err(AuditError::TrailBehindKey {
                trail: expected,
                state: seal_key.index(),
            });
        } else if seal_key.index() < expected {
            return Err(AuditError::KeyBehindTrail {
                trail: expected - 1,
                state: seal_key.index(),
            });
        }
        let now = opts.clock.now();
        let (next_seq, head) = head.map_or((0, GENESIS.to_owned()), |(s, h)| (s + 1, h));
        // Records a crash left after the last seal are sealed by the next seal.
        let sealed_up_to = last_seal.map_or(0, |(_, seq)| seq + 1);
        // New records continue the newest segment (rotation moves on from it when due).
        let file = match segments.last() {
            Some(seg) => Some((seg.month, open_segment(&opts.dir, seg.month)?)),
            None => None,
        };
        let mut writer = Writer {
            opts: opts.clone(),
            file,
            next_seq,
            head,
            seal_key,
            unsealed: next_seq - sealed_up_to,
            last_seal: now,
            failed: false,
        };
        writer.record_leftover_pending()?;
        if let Some((seg, offset, bytes)) = torn {
            opened.torn_moved_to = Some(writer.move_torn_aside(&seg, offset, &bytes)?);
        }
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(io_err(&opts.dir))?;
        Ok((
            AuditLog {
                tx,
                hash_key: Arc::new(hash_key),
                clock: opts.clock.clone(),
                thread: Arc::new(Mutex::new(Some(thread))),
            },
            opened,
        ))
    }

    /// The trail's clock (records' timestamps), for things stored beside the trail.
    pub fn now(&self) -> jiff::Timestamp {
        self.clock.now()
    }

    /// The key of prompt and response hashes.
    pub fn hash_key(&self) -> &HashKey {
        &self.hash_key
    }

    /// Records an entry; returns once it is on disk.
    pub async fn append(&self, entry: Entry) -> Result<Appended, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Append(Box::new(entry), tx))
            .map_err(|_| AuditError::Stopped)?;
        rx.await.map_err(|_| AuditError::Stopped)?
    }

    /// [`AuditLog::append`] for code outside the async runtime.
    pub fn append_blocking(&self, entry: Entry) -> Result<Appended, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Append(Box::new(entry), tx))
            .map_err(|_| AuditError::Stopped)?;
        rx.blocking_recv().map_err(|_| AuditError::Stopped)?
    }

    /// Makes the writer look at its clock now (a seal may be due); returns when it has.
    pub fn tick_blocking(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Tick(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }

    /// Seals the trail (reason `shutdown`) and stops the writer.
    pub fn close_blocking(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Close(tx))
            .map_err(|_| AuditError::Stopped)?;
        let result = rx.blocking_recv().map_err(|_| AuditError::Stopped)?;
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        result
    }

    /// [`AuditLog::close_blocking`] from async code.
    pub async fn close(&self) -> Result<(), AuditError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.close_blocking())
            .await
            .unwrap_or(Err(AuditError::Stopped))
    }
}

impl Writer {
    fn run(&mut self, rx: &mpsc::Receiver<Command>) {
        loop {
            let wait = self.until_seal().min(MAX_SLEEP);
            let first = match rx.recv_timeout(wait) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => {
                    self.seal_if_due();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.guarded(|w| w.seal("shutdown"));
                    return;
                }
            };
            let mut appends = Vec::new();
            // The first command that is not an append ends the group; it runs after the commit.
            let mut other = None;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(e, ack) => appends.push((*e, ack)),
                    cmd => {
                        other = Some(cmd);
                        break;
                    }
                }
                if appends.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            if !appends.is_empty() {
                self.commit(appends);
            }
            match other {
                Some(Command::Close(ack)) => {
                    let r = self.guarded(|w| w.seal("shutdown"));
                    let _ = ack.send(r);
                    return;
                }
                Some(Command::Tick(ack)) => {
                    self.seal_if_due();
                    let _ = ack.send(());
                }
                _ => self.seal_if_due(),
            }
        }
    }

    fn until_seal(&self) -> Duration {
        let due = self
            .last_seal
            .checked_add(self.opts.seal_interval)
            .unwrap_or(Timestamp::MAX);
        let left = due.duration_since(self.opts.clock.now());
        Duration::try_from(left).unwrap_or(Duration::ZERO)
    }

    fn seal_if_due(&mut self) {
        if self.unsealed > 0 && self.until_seal().is_zero() {
            let _ = self.guarded(|w| w.seal("interval"));
        }
    }

    /// Runs a disk operation unless an earlier one failed; a failure stops the writer.
    fn guarded(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        if self.failed {
            return Err(AuditError::Stopped);
        }
        let r = f(self);
        if let Err(e) = &r {
            tracing::error!(error = %sandbox::error_chain::chain(e), "audit trail write failed; recording stops");
            self.failed = true;
        }
        r
    }

    fn commit(&mut self, appends: Vec<(Entry, oneshot::Sender<Result<Appended, AuditError>>)>) {
        let mut acks = Vec::with_capacity(appends.len());
        let mut entries = Vec::with_capacity(appends.len());
        for (e, ack) in appends {
            entries.push(e);
            acks.push(ack);
        }
        let mut seqs = Vec::with_capacity(entries.len());
        let r = self.guarded(|w| {
            let mut buf = Vec::new();
            for e in entries {
                let now = w.opts.clock.now();
                w.switch_month(Month::of(now), &mut buf)?;
                seqs.push(w.push(e, now, &mut buf));
            }
            w.write_and_sync(&buf)
        });
        for (i, ack) in acks.into_iter().enumerate() {
            let answer = match (&r, seqs.get(i)) {
                (Ok(()), Some(&seq)) => Ok(Appended { seq }),
                _ => Err(AuditError::Stopped),
            };
            let _ = ack.send(answer);
        }
    }

    /// Adds an entry's line to `buf`; returns its seq.
    fn push(&mut self, e: Entry, now: Timestamp, buf: &mut Vec<u8>) -> u64 {
        let seq = self.next_seq;
        let line = e
            .into_record(seq, timestamp(now), self.head.clone())
            .to_line();
        self.head = line_hash(line.as_bytes());
        self.next_seq += 1;
        self.unsealed += 1;
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        seq
    }

    /// Before writing a record of `month`: if the open segment is an older month, flushes
    /// `buf` into it, seals and closes it.
    fn switch_month(&mut self, month: Month, buf: &mut Vec<u8>) -> Result<(), AuditError> {
        match &self.file {
            // Months only move forward: after a clock step back, records stay in the newest
            // segment so that file order remains chain order.
            Some((m, _)) if *m >= month => return Ok(()),
            Some(_) => {
                self.write_and_sync(buf)?;
                buf.clear();
                self.seal("rotation")?;
                if let Some((old, f)) = self.file.take() {
                    drop(f);
                    let path = self.opts.dir.join(old.file_name());
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o400))
                        .map_err(io_err(&path))?;
                    if self.opts.append_only {
                        match super::attr::set_append_only(&path) {
                            Ok(super::attr::Outcome::Set) => {}
                            Ok(super::attr::Outcome::Unsupported) => tracing::warn!(
                                segment = %path.display(),
                                "no append-only attribute on this filesystem; the closed segment is read-only only"
                            ),
                            Err(e) => tracing::warn!(
                                error = %e,
                                "closed audit segment left without the append-only attribute"
                            ),
                        }
                    }
                }
            }
            None => {}
        }
        self.file = Some((month, open_segment(&self.opts.dir, month)?));
        Ok(())
    }

    fn write_and_sync(&mut self, buf: &[u8]) -> Result<(), AuditError> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some((month, file)) = self.file.as_mut() else {
            unreachable!("a segment is open before records are added");
        };
        let path = self.opts.dir.join(month.file_name());
        file.write_all(buf).map_err(io_err(&path))?;
        file.sync_data().map_err(io_err(&path))
    }

    /// Appends a seal record (MAC of the chain under k_i), makes it durable, then evolves the
    /// key and stores k_{i+1} in place of k_i.
    fn seal(&mut self, reason: &str) -> Result<(), AuditError> {
        if self.unsealed == 0 {
            return Ok(());
        }
        let now = self.opts.clock.now();
        if self.file.is_none() {
            let mut none = Vec::new();
            self.switch_month(Month::of(now), &mut none)?;
        }
        let index = self.seal_key.index();
        let mut record = Entry::new(Action::Seal)
            .detail("key_index", index.to_string())
            .detail("reason", reason)
            .detail("mac", "")
            .into_record(self.next_seq, timestamp(now), self.head.clone());
        let mac = self.seal_key.mac(record.to_line().as_bytes());
        record.detail.insert("mac".into(), mac);
        let line = record.to_line();
        let mut buf = line.clone().into_bytes();
        buf.push(b'\n');
        self.write_and_sync(&buf)?;
        self.head = line_hash(line.as_bytes());
        self.next_seq += 1;
        self.unsealed = 0;
        self.last_seal = now;
        self.seal_key.evolve();
        self.seal_key
            .save_state(&self.opts.secrets.join(SEAL_STATE_FILE))?;
        Ok(())
    }

    /// Copies a torn last line to `audit/torn/` (as `.pending`), cuts it from the segment,
    /// records that, and only then drops the `.pending` suffix: a crash anywhere in between
    /// leaves either the torn line in place or a pending copy that the next start records.
    fn move_torn_aside(
        &mut self,
        seg: &Segment,
        offset: u64,
        bytes: &[u8],
    ) -> Result<PathBuf, AuditError> {
        let dir = self.opts.dir.join(TORN_DIR);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let stamp = self.opts.clock.now().as_millisecond();
        let aside = dir.join(format!("{}.{offset}.{stamp}.torn", seg.name()));
        let pending = aside.with_extension("torn.pending");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o400)
            .open(&pending)
            .map_err(io_err(&pending))?;
        f.write_all(bytes).map_err(io_err(&pending))?;
        f.sync_all().map_err(io_err(&pending))?;
        sync_dir(&dir)?;
        let file = OpenOptions::new()
            .write(true)
            .open(&seg.path)
            .map_err(io_err(&seg.path))?;
        file.set_len(offset).map_err(io_err(&seg.path))?;
        file.sync_all().map_err(io_err(&seg.path))?;
        drop(file);
        self.record_torn(&pending, Some((seg, offset)), bytes.len() as u64)
    }

    /// Records a `.pending` torn copy a crash left unrecorded (found at start-up).
    fn record_leftover_pending(&mut self) -> Result<(), AuditError> {
        let dir = self.opts.dir.join(TORN_DIR);
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut pending: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pending"))
            .collect();
        pending.sort();
        for p in pending {
            let len = fs::metadata(&p).map_err(io_err(&p))?.len();
            self.record_torn(&p, None, len)?;
        }
        Ok(())
    }

    /// Appends the `torn_tail_recovered` record for a pending copy, then renames it final.
    fn record_torn(
        &mut self,
        pending: &Path,
        cut: Option<(&Segment, u64)>,
        len: u64,
    ) -> Result<PathBuf, AuditError> {
        let aside = pending.with_extension("");
        let mut entry = Entry::new(Action::TornTailRecovered)
            .detail("bytes", len.to_string())
            .detail(
                "moved_to",
                aside
                    .strip_prefix(&self.opts.dir)
                    .unwrap_or(&aside)
                    .display()
                    .to_string(),
            );
        match cut {
            Some((seg, offset)) => {
                entry = entry
                    .detail("segment", seg.name())
                    .detail("offset", offset.to_string());
            }
            None => entry = entry.detail("recorded_after_restart", "true"),
        }
        let now = self.opts.clock.now();
        let mut buf = Vec::new();
        self.switch_month(Month::of(now), &mut buf)?;
        self.push(entry, now, &mut buf);
        self.write_and_sync(&buf)?;
        fs::rename(pending, &aside).map_err(io_err(&aside))?;
        sync_dir(aside.parent().unwrap_or(&self.opts.dir))?;
        Ok(aside)
    }
}
