//! Offline verification of a trail: every line canonical, `seq` gap-free from 0, every `prev`
//! the hash of the line before (across segments), seal key indices consecutive, and, with the
//! seal seed, every seal's MAC and the box's current seal key. The first damage found is
//! reported with the first `seq` it concerns.
//!
//! What each check catches: a changed byte breaks the line's canonical form, its JSON, or the
//! next record's `prev` (or, for the last record, which is a seal at shutdown, its MAC); a
//! deleted record or segment leaves a gap in `seq`; swapped or inserted records break the order
//! of `seq`; records changed with the chain recomputed break the next seal's MAC (the old keys
//! are gone); a cut tail leaves the trail's last seal behind the box's seal key, whose index an
//! intruder cannot move back without the erased earlier key.

use std::path::{Path, PathBuf};

use super::keys::SealKey;
use super::record::{line_hash, Action, ParseError, Record, GENESIS};
use super::segment;

/// The kinds of damage, as printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// A line that is not a record in the writer's form.
    Malformed,
    /// A record whose content differs from what the next record chained.
    Modified,
    /// Records missing (a deleted record or segment).
    Missing,
    /// Records out of order or duplicated (swapped or inserted).
    Reordered,
    /// The trail does not start at seq 0.
    MissingStart,
    /// A seal whose MAC does not match: records before it were changed and re-chained.
    BadSeal,
    /// A seal key index out of sequence.
    SealOrder,
    /// The trail ends before the box's seal key says it does.
    TruncatedTail,
    /// A last line without its newline (an interrupted write not yet recovered).
    TornLine,
    /// The seal state does not derive from the seed (forged or from another box).
    ForeignState,
    /// A segment could not be read.
    Unreadable,
}

impl DamageKind {
    pub fn name(self) -> &'static str {
        match self {
            DamageKind::Malformed => "malformed record",
            DamageKind::Modified => "modified record",
            DamageKind::Missing => "missing records",
            DamageKind::Reordered => "reordered or inserted records",
            DamageKind::MissingStart => "missing start",
            DamageKind::BadSeal => "bad seal",
            DamageKind::SealOrder => "seal out of order",
            DamageKind::TruncatedTail => "truncated tail",
            DamageKind::TornLine => "torn last line",
            DamageKind::ForeignState => "foreign seal state",
            DamageKind::Unreadable => "unreadable segment",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub kind: DamageKind,
    /// The first seq the damage concerns.
    pub seq: u64,
    pub segment: Option<PathBuf>,
    /// 1-based line in the segment.
    pub line: Option<usize>,
    pub explanation: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "first bad seq {}: {}", self.seq, self.kind.name())?;
        if let Some(s) = &self.segment {
            write!(f, " (found at {}", s.display())?;
            if let Some(l) = self.line {
                write!(f, " line {l}")?;
            }
            write!(f, ")")?;
        }
        write!(f, ": {}", self.explanation)
    }
}

/// What to verify against.
#[derive(Debug, Default)]
pub struct VerifyOptions {
    /// k_0, the seed the security officer keeps: enables the seal MAC checks.
    pub seed: Option<SealKey>,
    /// The box's current seal key (`secrets/audit-seal-state`): enables the tail check.
    pub state: Option<SealKey>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub segments: usize,
    pub records: u64,
    /// Seals whose MAC was checked (0 without the seed).
    pub seals_verified: u64,
    pub seals: u64,
    /// Records after the last seal: chained, not yet sealed.
    pub unsealed_tail: u64,
    /// Whether the tail was checked against the seal state.
    pub tail_checked: bool,
    /// The trail starts at this seq after an audited export of older segments.
    pub starts_after_export: Option<u64>,
    pub damage: Option<Damage>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.damage.is_none()
    }
}

struct Walk {
    next_seq: u64,
    prev: String,
    seals: u64,
    seals_verified: u64,
    last_seal_seq: Option<u64>,
    /// The seed advanced to the next expected seal index.
    key: Option<SealKey>,
}

fn damage(kind: DamageKind, seq: u64, explanation: impl Into<String>) -> Damage {
    Damage {
        kind,
        seq,
        segment: None,
        line: None,
        explanation: explanation.into(),
    }
}

impl Walk {
    /// Checks one record (already canonical) in order; `later` are the lines after it in the
    /// same segment (to tell reordering from deletion).
    fn record(
        &mut self,
        r: &Record,
        line: &[u8],
        later: &[Result<Record, ParseError>],
    ) -> Result<(), Damage> {
        let expected = self.next_seq;
        if r.seq != expected {
            // Looked at only on a mismatch: verifying stays linear in the trail's length.
            let comes_later = || later.iter().flatten().any(|l| l.seq == expected);
            if r.seq < expected || comes_later() {
                return Err(damage(
                    DamageKind::Reordered,
                    expected.min(r.seq),
                    format!("seq {} where {expected} was expected", r.seq),
                ));
            }
            if expected == 0 {
                return Err(damage(
                    DamageKind::MissingStart,
                    0,
                    format!("the trail starts at seq {}, not 0", r.seq),
                ));
            }
            return Err(damage(
                DamageKind::Missing,
                expected,
                if r.seq - 1 == expected {
                    format!("seq {expected} missing (a deleted record)")
                } else {
                    format!(
                        "seq {expected}..{} missing (deleted records or a deleted segment)",
                        r.seq - 1
                    )
                },
            ));
        }
        if r.prev != self.prev {
            let (seq, what) = if expected == 0 {
                (
                    0,
                    "the first record's prev is not the genesis value".to_owned(),
                )
            } else {
                (
                    expected - 1,
                    format!(
                        "seq {expected} chains to a different seq {} than the one stored: seq {} was changed",
                        expected - 1,
                        expected - 1
                    ),
                )
            };
            return Err(damage(DamageKind::Modified, seq, what));
        }
        if r.action == Action::Seal {
            self.seal(r)?;
        }
        self.prev = line_hash(line);
        self.next_seq += 1;
        Ok(())
    }

    fn seal(&mut self, r: &Record) -> Result<(), Damage> {
        let first_covered = self.last_seal_seq.map_or(0, |s| s + 1);
        let index: Option<u64> = r.detail.get("key_index").and_then(|v| v.parse().ok());
        if index != Some(self.seals) {
            return Err(damage(
                DamageKind::SealOrder,
                r.seq,
                format!(
                    "seal with key index {:?} where {} was expected",
                    r.detail.get("key_index"),
                    self.seals
                ),
            ));
        }
        if let Some(key) = self.key.as_mut() {
            let mut blank = r.clone();
            blank.detail.insert("mac".into(), String::new());
            let want = key.mac(blank.to_line().as_bytes());
            if r.detail.get("mac") != Some(&want) {
                return Err(damage(
                    DamageKind::BadSeal,
                    first_covered,
                    format!(
                        "the seal at seq {} (key index {}) does not match: seq {first_covered}..{} were changed and the chain recomputed, or the seal itself was altered",
                        r.seq,
                        self.seals,
                        r.seq
                    ),
                ));
            }
            key.evolve();
            self.seals_verified += 1;
        }
        self.seals += 1;
        self.last_seal_seq = Some(r.seq);
        Ok(())
    }
}

/// Verifies the trail in `dir`.
pub fn verify(dir: &Path, opts: &VerifyOptions) -> Report {
    let mut report = Report::default();
    let segments = match segment::list(dir) {
        Ok(s) => s,
        Err(e) => {
            report.damage = Some(damage(
                DamageKind::Unreadable,
                0,
                format!("{}: {e}", dir.display()),
            ));
            return report;
        }
    };
    report.segments = segments.len();
    let mut walk = Walk {
        next_seq: 0,
        prev: GENESIS.to_owned(),
        seals: 0,
        seals_verified: 0,
        last_seal_seq: None,
        key: opts.seed.as_ref().and_then(|s| s.advanced_to(0)),
    };
    let result = (|| -> Result<(), Damage> {
        for (k, seg) in segments.iter().enumerate() {
            let at = |mut d: Damage, line: usize| {
                d.segment = Some(seg.path.clone());
                d.line = Some(line);
                d
            };
            let content = segment::read(seg)
                .map_err(|e| damage(DamageKind::Unreadable, walk.next_seq, e.to_string()))?;
            let parsed: Vec<_> = content
                .lines
                .iter()
                .map(|(_, l)| Record::parse(l))
                .collect();
            // The first record of a trail whose older segments were exported (and recorded).
            // Only such a trail is searched for export records (a second read of every segment).
            let starts_late = match (k, parsed.first()) {
                (0, Some(Ok(r))) if r.seq > 0 => Some(r),
                _ => None,
            };
            if let Some(r) = starts_late {
                if let Some(a) = export_anchors(&segments)
                    .into_iter()
                    .find(|a| a.next_seq == r.seq && a.next_prev == r.prev)
                {
                    walk.next_seq = a.next_seq;
                    walk.prev = a.next_prev;
                    walk.seals = a.next_seal_index;
                    walk.last_seal_seq = Some(a.next_seq - 1);
                    walk.key = opts
                        .seed
                        .as_ref()
                        .and_then(|s| s.advanced_to(a.next_seal_index));
                    report.starts_after_export = Some(a.next_seq);
                }
            }
            for (i, r) in parsed.iter().enumerate() {
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        let kind = match e {
                            ParseError::NotCanonical => DamageKind::Modified,
                            ParseError::Json(_) => DamageKind::Malformed,
                        };
                        return Err(at(damage(kind, walk.next_seq, e.to_string()), i + 1));
                    }
                };
                walk.record(r, &content.lines[i].1, &parsed[i + 1..])
                    .map_err(|d| at(d, i + 1))?;
            }
            if let Some((offset, bytes)) = &content.torn {
                let what = if k + 1 == segments.len() {
                    "an interrupted write; phiboxd moves it aside at its next start"
                } else {
                    "inside the trail, not at its end"
                };
                return Err(at(
                    damage(
                        DamageKind::TornLine,
                        walk.next_seq,
                        format!(
                            "{} bytes without a newline at offset {offset}: {what}",
                            bytes.len()
                        ),
                    ),
                    content.lines.len() + 1,
                ));
            }
        }
        Ok(())
    })();
    report.records = walk.next_seq;
    report.seals = walk.seals;
    report.seals_verified = walk.seals_verified;
    report.unsealed_tail = walk.next_seq - walk.last_seal_seq.map_or(0, |s| s + 1);
    if let Err(d) = result {
        report.damage = Some(d);
        return report;
    }
    report.damage = check_tail(&walk, opts, &mut report);
    report
}

/// Where the trail may start after an audited export.
struct Anchor {
    next_seq: u64,
    next_prev: String,
    next_seal_index: u64,
}

/// The `audit_export` records anywhere in the trail (they are checked in the walk like any
/// record; here they only say where a trail without its oldest segments may start).
fn export_anchors(segments: &[segment::Segment]) -> Vec<Anchor> {
    const MARK: &[u8] = b"\"action\":\"audit_export\"";
    let mut out = Vec::new();
    for seg in segments {
        let Ok(content) = segment::read(seg) else {
            continue;
        };
        for (_, line) in &content.lines {
            if !line.windows(MARK.len()).any(|w| w == MARK) {
                continue;
            }
            let Ok(r) = Record::parse(line) else { continue };
            let num = |k: &str| r.detail.get(k).and_then(|v| v.parse().ok());
            if let (Some(next_seq), Some(next_prev), Some(next_seal_index)) = (
                num("next_seq"),
                r.detail.get("next_prev").cloned(),
                num("next_seal_index"),
            ) {
                out.push(Anchor {
                    next_seq,
                    next_prev,
                    next_seal_index,
                });
            }
        }
    }
    out
}

/// Compares the trail's last seal with the box's seal key.
fn check_tail(walk: &Walk, opts: &VerifyOptions, report: &mut Report) -> Option<Damage> {
    let state = opts.state.as_ref()?;
    if let Some(seed) = &opts.seed {
        let genuine = seed
            .advanced_to(state.index())
            .is_some_and(|k| k.same_as(state));
        if !genuine {
            return Some(damage(
                DamageKind::ForeignState,
                walk.next_seq,
                format!(
                    "the seal state (index {}) does not derive from this seed: another box's, or forged",
                    state.index()
                ),
            ));
        }
    }
    report.tail_checked = true;
    // After seal i the key is at i + 1; right after a crash between the two steps, at i.
    if state.index() > walk.seals {
        return Some(damage(
            DamageKind::TruncatedTail,
            walk.next_seq,
            format!(
                "the box's seal key is at index {}, so seals up to {} were written, but the trail holds {} seal(s) and ends at seq {}: its tail was cut",
                state.index(),
                state.index() - 1,
                walk.seals,
                walk.next_seq.saturating_sub(1)
            ),
        ));
    }
    if state.index() + 1 < walk.seals {
        return Some(damage(
            DamageKind::ForeignState,
            walk.next_seq,
            format!(
                "the seal state (index {}) is behind the trail's {} seals: it was rolled back",
                state.index(),
                walk.seals
            ),
        ));
    }
    None
}
