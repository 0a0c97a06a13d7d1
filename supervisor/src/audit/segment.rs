//! Monthly segment files `audit-YYYY-MM.jsonl` (UTC) and reading them line by line. A closed
//! segment may be stored gzip-compressed as `audit-YYYY-MM.jsonl.gz`: reading decompresses it,
//! and since the chain covers the lines, not the file, verification is unchanged.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;
use jiff::Timestamp;

const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";
/// The suffix a compressed closed segment adds.
pub const GZ: &str = ".gz";
/// Largest decompressed segment read (a month of a very busy box is far below).
const MAX_SEGMENT: u64 = 8 << 30;

/// A month, as in a segment's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i16,
    pub month: i8,
}

impl Month {
    pub fn of(t: Timestamp) -> Month {
        let z = t.to_zoned(TimeZone::UTC);
        Month {
            year: z.year(),
            month: z.month(),
        }
    }

    pub fn file_name(self) -> String {
        format!("{PREFIX}{:04}-{:02}{SUFFIX}", self.year, self.month)
    }

    /// The month a segment file name stands for, if it is one.
    pub fn from_file_name(name: &str) -> Option<Month> {
        let ym = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
        let (y, m) = ym.split_once('-')?;
        if y.len() != 4 || m.len() != 2 {
            return None;
        }
        let month = Month {
            year: y.parse().ok()?,
            month: m.parse().ok()?,
        };
        (1..=12).contains(&month.month).then_some(month)
    }
}

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub month: Month,
    pub path: PathBuf,
    pub compressed: bool,
}

impl Segment {
    pub fn name(&self) -> String {
        let mut n = self.month.file_name();
        if self.compressed {
            n.push_str(GZ);
        }
        n
    }
}

/// The segments in a directory, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments: Vec<Segment> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let (plain, compressed) = match name.strip_suffix(GZ) {
            Some(p) => (p, true),
            None => (name, false),
        };
        if let Some(month) = Month::from_file_name(plain) {
            segments.push(Segment {
                month,
                path: entry.path(),
                compressed,
            });
        }
    }
    // Both forms of a month exist only if compressing it was interrupted: the plain file is
    // the original, the compressed one possibly incomplete.
    segments.sort_by_key(|s| (s.month, s.compressed));
    segments.dedup_by_key(|s| s.month);
    Ok(segments)
}

/// A segment's bytes split into complete lines (without their newline) and a torn rest.
#[derive(Debug, Default)]
pub struct Content {
    /// (byte offset, line) of every newline-terminated line.
    pub lines: Vec<(u64, Vec<u8>)>,
    /// (byte offset, bytes) after the last newline, if any.
    pub torn: Option<(u64, Vec<u8>)>,
}

/// A segment's bytes (decompressed if it is compressed).
pub fn bytes(seg: &Segment) -> io::Result<Vec<u8>> {
    if !seg.compressed {
        return fs::read(&seg.path);
    }
    let mut out = Vec::new();
    let decoder = flate2::read::GzDecoder::new(fs::File::open(&seg.path)?);
    io::Read::read_to_end(&mut io::Read::take(decoder, MAX_SEGMENT + 1), &mut out)?;
    if out.len() as u64 > MAX_SEGMENT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "decompressed segment larger than 8 GiB",
        ));
    }
    Ok(out)
}

/// Reads a segment into lines.
pub fn read(seg: &Segment) -> io::Result<Content> {
    Ok(split(&bytes(seg)?))
}

pub fn split(bytes: &[u8]) -> Content {
    let mut content = Content::default();
    let mut start = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            content.lines.push((start as u64, bytes[start..i].to_vec()));
            start = i + 1;
        }
    }
    if start < bytes.len() {
        content.torn = Some((start as u64, bytes[start..].to_vec()));
    }
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_month() {
        let t: Timestamp = "2026-12-31T23:59:59.999Z".parse().unwrap();
        assert_eq!(Month::of(t).file_name(), "audit-2026-12.jsonl");
        assert_eq!(
            Month::from_file_name("audit-2027-01.jsonl"),
            Some(Month {
                year: 2027,
                month: 1
            })
        );
        for bad in [
            "audit-2027-13.jsonl",
            "audit-27-01.jsonl",
            "audit-2027-01.json",
            "x",
        ] {
            assert_eq!(Month::from_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_rest_without_newline_is_torn() {
        let c = split(b"a\nbc\nde");
        assert_eq!(c.lines, vec![(0, b"a".to_vec()), (2, b"bc".to_vec())]);
        assert_eq!(c.torn, Some((5, b"de".to_vec())));
        assert!(split(b"a\n").torn.is_none());
    }
}
