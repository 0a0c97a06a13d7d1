//! Reading a trail's records for review and investigations (verification has its own, stricter
//! walk in `verify`). A torn last line is skipped: it is not a record yet.

use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::record::Record;
use super::segment::{self, Month};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}; run `phibox audit verify`")]
    Record {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Every record of the segments that can hold records from `since` to `until` (all with
/// `None`), in trail order. Callers filter on the records' timestamps.
pub fn records(
    dir: &Path,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
) -> Result<Vec<Record>, ReadError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReadError::Io { path, source }
    };
    let first = since.map(Month::of);
    let last = until.map(Month::of);
    let mut out = Vec::new();
    for seg in segment::list(dir).map_err(io(dir))? {
        // A segment may end with the next month's rotation seal; it never starts earlier.
        if last.is_some_and(|l| seg.month > l) || first.is_some_and(|f| seg.month < prev(f)) {
            continue;
        }
        let content = segment::read(&seg).map_err(io(&seg.path))?;
        for (i, (_, line)) in content.lines.iter().enumerate() {
            out.push(Record::parse(line).map_err(|e| ReadError::Record {
                path: seg.path.clone(),
                line: i + 1,
                reason: e.to_string(),
            })?);
        }
    }
    Ok(out)
}

fn prev(m: Month) -> Month {
    if m.month == 1 {
        Month {
            year: m.year - 1,
            month: 12,
        }
    } else {
        Month {
            year: m.year,
            month: m.month - 1,
        }
    }
}
