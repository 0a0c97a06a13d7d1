//! Retention: HIPAA's six years. No code path deletes a record younger than the retention
//! period: the only way a segment leaves the box is [`export_oldest`], which copies the oldest
//! closed segment out, checks the copy, records the export in the trail (durably, with what the
//! verifier needs to start the trail after it), and only then removes the segment.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::attr;
use super::record::{line_hash, Action, Entry, Record};
use super::segment::{self, Month};
use super::writer::{AuditError, AuditLog};

/// The shortest retention HIPAA allows (45 CFR 164.316(b)(2)).
pub const MIN_YEARS: i16 = 6;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("audit retention of {0} years is below the legal minimum of {MIN_YEARS}; it needs an explicit override")]
    BelowMinimum(i16),
    #[error("audit retention must be at least one year")]
    Invalid,
    #[error("nothing to export: only the open segment is left")]
    NothingClosed,
    #[error(
        "{segment} holds records younger than the retention period; it may leave from {releasable}"
    )]
    TooYoung {
        segment: String,
        releasable: Timestamp,
    },
    #[error("{segment} is damaged ({reason}); run `phibox audit verify` before exporting")]
    Damaged { segment: String, reason: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the copy at {0} does not match the segment")]
    CopyMismatch(PathBuf),
    #[error(transparent)]
    Attr(#[from] attr::AttrError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RetentionError + '_ {
    move |source| RetentionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How long records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    years: i16,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { years: MIN_YEARS }
    }
}

impl Retention {
    /// `years` below [`MIN_YEARS`] only with `override_minimum` (which the compliance page
    /// shows).
    pub fn new(years: i16, override_minimum: bool) -> Result<Retention, RetentionError> {
        if years < 1 {
            return Err(RetentionError::Invalid);
        }
        if years < MIN_YEARS && !override_minimum {
            return Err(RetentionError::BelowMinimum(years));
        }
        Ok(Retention { years })
    }

    pub fn years(&self) -> i16 {
        self.years
    }

    /// When a segment's newest possible record is `years` old.
    pub fn releasable(&self, month: Month) -> Timestamp {
        let next = Date::new(month.year, month.month, 1)
            .ok()
            .and_then(|d| d.checked_add(jiff::Span::new().months(1)).ok());
        next.and_then(|d| d.checked_add(jiff::Span::new().years(self.years)).ok())
            .and_then(|d| d.to_zoned(TimeZone::UTC).ok())
            .map_or(Timestamp::MAX, |z| z.timestamp())
    }
}

/// What an export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub segment: String,
    pub copy: PathBuf,
    pub records: u64,
    /// The seq of the export record.
    pub recorded_as: u64,
}

/// Exports the oldest closed segment to `dest` (a directory, e.g. on an archive medium) if it
/// is older than the retention period, records the export, then removes the segment.
pub async fn export_oldest(
    log: &AuditLog,
    dir: &Path,
    dest: &Path,
    retention: &Retention,
    now: Timestamp,
) -> Result<Exported, RetentionError> {
    let segments = segment::list(dir).map_err(io(dir))?;
    if segments.len() < 2 {
        return Err(RetentionError::NothingClosed);
    }
    let oldest = &segments[0];
    let releasable = retention.releasable(oldest.month);
    if now < releasable {
        return Err(RetentionError::TooYoung {
            segment: oldest.name(),
            releasable,
        });
    }
    let raw = fs::read(&oldest.path).map_err(io(&oldest.path))?;
    let plain = if oldest.compressed {
        segment::bytes(oldest).map_err(io(&oldest.path))?
    } else {
        raw.clone()
    };
    let content = segment::split(&plain);
    let damaged = |reason: String| RetentionError::Damaged {
        segment: oldest.name(),
        reason,
    };
    if content.torn.is_some() {
        return Err(damaged("a torn line".into()));
    }
    let records: Vec<Record> = content
        .lines
        .iter()
        .map(|(_, l)| Record::parse(l).map_err(|e| damaged(e.to_string())))
        .collect::<Result<_, _>>()?;
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Err(damaged("empty".into()));
    };
    let last_line = &content.lines[content.lines.len() - 1].1;
    let seals = records.iter().filter(|r| r.action == Action::Seal).count() as u64;
    let next_seal_index = records
        .iter()
        .rev()
        .find(|r| r.action == Action::Seal)
        .and_then(|r| r.detail.get("key_index")?.parse::<u64>().ok())
        .map_or(0, |i| i + 1);
    let digest = hex::encode(Sha256::digest(&raw));

    // The copy, durable and checked, before anything is recorded or removed.
    fs::create_dir_all(dest).map_err(io(dest))?;
    let copy = dest.join(oldest.name());
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&copy)
        .map_err(io(&copy))?;
    f.write_all(&raw).map_err(io(&copy))?;
    f.sync_all().map_err(io(&copy))?;
    drop(f);
    File::open(dest)
        .and_then(|d| d.sync_all())
        .map_err(io(dest))?;
    let back = fs::read(&copy).map_err(io(&copy))?;
    if hex::encode(Sha256::digest(&back)) != digest {
        return Err(RetentionError::CopyMismatch(copy));
    }

    let appended = log
        .append(
            Entry::new(Action::AuditExport)
                .detail("segment", oldest.name())
                .detail("records", records.len().to_string())
                .detail("first_seq", first.seq.to_string())
                .detail("next_seq", (last.seq + 1).to_string())
                .detail("next_prev", line_hash(last_line))
                .detail("next_seal_index", next_seal_index.to_string())
                .detail("seals", seals.to_string())
                .detail("sha256", digest)
                .detail("retention_years", retention.years().to_string()),
        )
        .await?;
    attr::clear_append_only(&oldest.path)?;
    fs::remove_file(&oldest.path).map_err(io(&oldest.path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(Exported {
        segment: oldest.name(),
        copy,
        records: records.len() as u64,
        recorded_as: appended.seq,
    })
}

/// Compresses every closed segment that is not compressed yet (gzip); returns their names.
/// The lines, and so the chain and the seals, are unchanged: the verifier and the reader
/// decompress. Each step is crash-safe: the plain file stays authoritative until the
/// compressed one is complete, synced and read back identical.
pub fn compress_closed(dir: &Path) -> Result<Vec<String>, RetentionError> {
    let segments = segment::list(dir).map_err(io(dir))?;
    let mut done = Vec::new();
    let closed = segments.len().saturating_sub(1);
    for seg in segments.iter().take(closed).filter(|s| !s.compressed) {
        let plain = fs::read(&seg.path).map_err(io(&seg.path))?;
        if segment::split(&plain).torn.is_some() {
            return Err(RetentionError::Damaged {
                segment: seg.name(),
                reason: "a torn line".into(),
            });
        }
        let gz = dir.join(format!("{}{}", seg.month.file_name(), segment::GZ));
        let tmp = gz.with_extension("gz.tmp");
        if gz.exists() {
            // Left by an interrupted run; the plain file is the original.
            attr::clear_append_only(&gz)?;
            fs::remove_file(&gz).map_err(io(&gz))?;
        }
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::best());
        enc.write_all(&plain).map_err(io(&tmp))?;
        let file = enc.finish().map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        let back = segment::bytes(&segment::Segment {
            month: seg.month,
            path: tmp.clone(),
            compressed: true,
        })
        .map_err(io(&tmp))?;
        if back != plain {
            let _ = fs::remove_file(&tmp);
            return Err(RetentionError::CopyMismatch(tmp));
        }
        fs::rename(&tmp, &gz).map_err(io(&gz))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        attr::clear_append_only(&seg.path)?;
        fs::remove_file(&seg.path).map_err(io(&seg.path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&gz, fs::Permissions::from_mode(0o400)).map_err(io(&gz))?;
        attr::set_append_only(&gz)?;
        done.push(seg.name());
    }
    Ok(done)
}
