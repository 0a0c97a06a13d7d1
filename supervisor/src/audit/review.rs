//! The privacy officer's weekly and monthly review (the setup guide's "Ongoing compliance"):
//! off-hours use, unusually large prompts (against the user's own baseline and an absolute
//! threshold), use from departments not expected to use the box, failed logins and lockouts,
//! break-glass uses, USB events and worker crashes. A library call (the web UI shows the same
//! report) and `phibox audit review`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Serialize;

use super::record::{Action, Record};

/// What counts as unusual.
#[derive(Debug, Clone)]
pub struct ReviewOptions {
    pub since: Timestamp,
    pub until: Timestamp,
    /// Working hours in the clinic's time zone: [start, end).
    pub work_start_hour: i8,
    pub work_end_hour: i8,
    /// Saturdays and Sundays are off-hours.
    pub weekends_off: bool,
    pub time_zone: TimeZone,
    /// A prompt longer than this is always reported.
    pub large_prompt_chars: u64,
    /// A prompt longer than this many times the user's median is reported…
    pub baseline_factor: f64,
    /// …once the user has at least this many earlier prompts.
    pub baseline_min_samples: usize,
    /// Departments expected to use the box; `None`: not checked.
    pub expected_departments: Option<BTreeSet<String>>,
}

impl ReviewOptions {
    pub fn new(since: Timestamp, until: Timestamp) -> ReviewOptions {
        ReviewOptions {
            since,
            until,
            work_start_hour: 7,
            work_end_hour: 19,
            weekends_off: true,
            time_zone: TimeZone::UTC,
            large_prompt_chars: 20_000,
            baseline_factor: 4.0,
            baseline_min_samples: 5,
            expected_departments: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    OffHours,
    LargePrompt,
    UnexpectedDepartment,
    FailedLogin,
    Lockout,
    BreakGlass,
    UsbEvent,
    WorkerCrash,
}

impl FindingKind {
    pub fn title(self) -> &'static str {
        match self {
            FindingKind::OffHours => "Off-hours use",
            FindingKind::LargePrompt => "Unusually large prompts",
            FindingKind::UnexpectedDepartment => "Use from unexpected departments",
            FindingKind::FailedLogin => "Failed logins",
            FindingKind::Lockout => "Lockouts",
            FindingKind::BreakGlass => "Break-glass uses",
            FindingKind::UsbEvent => "USB events",
            FindingKind::WorkerCrash => "Inference worker crashes",
        }
    }

    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub seq: u64,
    pub timestamp: String,
    pub action: String,
    pub user_id: Option<String>,
    pub user_role: Option<String>,
    pub department: Option<String>,
    pub client_ip: Option<String>,
    /// Why it is reported (PHI-free).
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReviewReport {
    pub since: String,
    pub until: String,
    pub records_reviewed: u64,
    pub counts: BTreeMap<FindingKind, usize>,
    pub findings: Vec<Finding>,
}

fn user_activity(a: Action) -> bool {
    matches!(
        a,
        Action::ChatRequest
            | Action::LoginSuccess
            | Action::BreakGlassLogin
            | Action::TranscriptAccess
            | Action::AdminAction
    )
}

fn median(v: &mut [u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// Reviews `records` (in trail order; records before `since` serve only as baselines).
pub fn review(records: &[Record], opts: &ReviewOptions) -> ReviewReport {
    let mut findings = Vec::new();
    let mut reviewed = 0u64;
    // Each user's earlier prompt lengths, in order.
    let mut history: HashMap<&str, Vec<u64>> = HashMap::new();
    for r in records {
        let Ok(t) = r.timestamp.parse::<Timestamp>() else {
            continue;
        };
        if t >= opts.until {
            break;
        }
        let in_window = t >= opts.since;
        let mut report = |kind: FindingKind, why: String| {
            findings.push(Finding {
                kind,
                seq: r.seq,
                timestamp: r.timestamp.clone(),
                action: r.action.name(),
                user_id: r.user_id.clone(),
                user_role: r.user_role.clone(),
                department: r.department.clone(),
                client_ip: r.client_ip.clone(),
                why,
            })
        };
        if in_window {
            reviewed += 1;
            if user_activity(r.action) {
                let local = t.to_zoned(opts.time_zone.clone());
                let hour = local.hour();
                let weekend = matches!(local.weekday(), Weekday::Saturday | Weekday::Sunday);
                if hour < opts.work_start_hour
                    || hour >= opts.work_end_hour
                    || (opts.weekends_off && weekend)
                {
                    report(
                        FindingKind::OffHours,
                        format!(
                            "{:?} {:02}:{:02} local time, outside {:02}:00–{:02}:00{}",
                            local.weekday(),
                            hour,
                            local.minute(),
                            opts.work_start_hour,
                            opts.work_end_hour,
                            if opts.weekends_off {
                                " on weekdays"
                            } else {
                                ""
                            }
                        ),
                    );
                }
                if let (Some(expected), Some(d)) = (&opts.expected_departments, &r.department) {
                    if !expected.contains(d) {
                        report(
                            FindingKind::UnexpectedDepartment,
                            format!("department {d} is not among those expected to use the box"),
                        );
                    }
                }
            }
            match r.action {
                Action::LoginFailure => report(
                    FindingKind::FailedLogin,
                    r.detail.get("reason").cloned().unwrap_or_default(),
                ),
                Action::Lockout => report(FindingKind::Lockout, String::new()),
                Action::BreakGlassLogin => {
                    report(FindingKind::BreakGlass, "emergency access used".into())
                }
                Action::UsbInserted | Action::UsbRemoved => report(
                    FindingKind::UsbEvent,
                    ["vendor", "product", "serial"]
                        .iter()
                        .filter_map(|k| r.detail.get(*k).map(|v| format!("{k} {v}")))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                Action::WorkerCrash => report(
                    FindingKind::WorkerCrash,
                    r.detail.get("kind").cloned().unwrap_or_default(),
                ),
                _ => {}
            }
        }
        if r.action == Action::ChatRequest {
            if let Some(len) = r.prompt_length_chars {
                let user = r.user_id.as_deref().unwrap_or("");
                let earlier = history.entry(user).or_default();
                if in_window {
                    let mut sorted = earlier.clone();
                    let base = median(&mut sorted);
                    if len > opts.large_prompt_chars {
                        report(
                            FindingKind::LargePrompt,
                            format!(
                                "{len} characters, above the absolute threshold of {}",
                                opts.large_prompt_chars
                            ),
                        );
                    } else if let Some(m) =
                        base.filter(|_| earlier.len() >= opts.baseline_min_samples)
                    {
                        if len as f64 > opts.baseline_factor * (m.max(1) as f64) {
                            report(
                                FindingKind::LargePrompt,
                                format!(
                                    "{len} characters, {:.1}× this user's median of {m} over {} earlier prompts",
                                    len as f64 / m.max(1) as f64,
                                    earlier.len()
                                ),
                            );
                        }
                    }
                }
                earlier.push(len);
            }
        }
    }
    let mut counts = BTreeMap::new();
    for f in &findings {
        *counts.entry(f.kind).or_insert(0) += 1;
    }
    ReviewReport {
        since: format!("{:.0}", opts.since),
        until: format!("{:.0}", opts.until),
        records_reviewed: reviewed,
        counts,
        findings,
    }
}

impl ReviewReport {
    /// A plain-text report, one section per kind.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "Audit review {} – {}: {} records reviewed, {} finding(s)\n",
            self.since,
            self.until,
            self.records_reviewed,
            self.findings.len()
        );
        for (kind, n) in &self.counts {
            s.push_str(&format!("\n{} ({n})\n", kind.title()));
            for f in self.findings.iter().filter(|f| f.kind == *kind) {
                s.push_str(&format!(
                    "  seq {} {} {} user {} role {} dept {} ip {}: {}\n",
                    f.seq,
                    f.timestamp,
                    f.action,
                    f.user_id.as_deref().unwrap_or("-"),
                    f.user_role.as_deref().unwrap_or("-"),
                    f.department.as_deref().unwrap_or("-"),
                    f.client_ip.as_deref().unwrap_or("-"),
                    f.why
                ));
            }
        }
        if self.findings.is_empty() {
            s.push_str("\nNothing to report.\n");
        }
        s
    }

    /// CSV with a header row (RFC 4180 quoting).
    pub fn to_csv(&self) -> String {
        fn q(v: &str) -> String {
            if v.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v.to_owned()
            }
        }
        let mut s =
            String::from("kind,seq,timestamp,action,user_id,user_role,department,client_ip,why\n");
        for f in &self.findings {
            let cols = [
                f.kind.name(),
                f.seq.to_string(),
                f.timestamp.clone(),
                f.action.clone(),
                f.user_id.clone().unwrap_or_default(),
                f.user_role.clone().unwrap_or_default(),
                f.department.clone().unwrap_or_default(),
                f.client_ip.clone().unwrap_or_default(),
                f.why.clone(),
            ];
            s.push_str(&cols.iter().map(|c| q(c)).collect::<Vec<_>>().join(","));
            s.push('\n');
        }
        s
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }
}
