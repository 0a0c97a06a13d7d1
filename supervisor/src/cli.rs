//! The `phibox` command line (admin and auditor tools). Exit codes: 0 success (an intact
//! trail), 1 a negative finding (a damaged trail), 2 a usage or input error.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::audit::keys::SEAL_STATE_FILE;
use crate::audit::{verify, SealKey, VerifyOptions};

#[derive(Debug, Parser)]
#[command(name = "phibox", about = "phibox admin and auditor tools")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Debug, Subcommand)]
enum Top {
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Signed model bundles (made on a workstation, installed from a USB stick).
    #[command(subcommand)]
    Bundle(crate::cli_bundle::BundleCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verifies a trail: exit 0 when intact, 1 naming the first bad seq otherwise.
    Verify {
        /// The audit directory (`/var/lib/phibox/audit`, or a copy).
        dir: PathBuf,
        /// The seal seed the security officer keeps: checks every seal's MAC.
        #[arg(long = "seal-key")]
        seal_key: Option<PathBuf>,
        /// The box's seal state (default: DIR/../secrets/audit-seal-state when present):
        /// detects a cut tail.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Reports off-hours use, large prompts, unexpected departments, failed logins and
    /// lockouts, break-glass uses, USB events and worker crashes in a period.
    Review {
        dir: PathBuf,
        /// Start: a date (midnight in --tz) or an RFC 3339 time.
        #[arg(long)]
        since: String,
        /// End (exclusive; default: now).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Working hours, e.g. 7-19.
        #[arg(long, default_value = "7-19")]
        hours: String,
        /// Count weekends as working days.
        #[arg(long)]
        weekends: bool,
        /// The clinic's time zone (IANA name).
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Prompts longer than this (characters) are always reported.
        #[arg(long, default_value_t = 20_000)]
        large_prompt: u64,
        /// A department expected to use the box (repeat); others are reported.
        #[arg(long = "department")]
        departments: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Csv,
    Json,
}

/// Days of history before `--since` that feed each user's prompt-size baseline.
const BASELINE_DAYS: i64 = 90;

fn parse_time(s: &str, tz: &jiff::tz::TimeZone) -> Result<jiff::Timestamp, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let d: jiff::civil::Date = s
        .parse()
        .map_err(|_| format!("{s:?} is neither a date (2026-11-01) nor an RFC 3339 time"))?;
    d.to_zoned(tz.clone())
        .map(|z| z.timestamp())
        .map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments, clippy::print_stdout, clippy::print_stderr)]
fn review(
    dir: &std::path::Path,
    since: &str,
    until: Option<&str>,
    format: Format,
    hours: &str,
    weekends: bool,
    tz: &str,
    large_prompt: u64,
    departments: Vec<String>,
) -> i32 {
    let fail = |m: String| {
        eprintln!("phibox: {m}");
        2
    };
    let zone = match jiff::tz::TimeZone::get(tz) {
        Ok(z) => z,
        Err(e) => return fail(format!("time zone {tz:?}: {e}")),
    };
    let (since, until) = match (
        parse_time(since, &zone),
        until.map_or(Ok(jiff::Timestamp::now()), |u| parse_time(u, &zone)),
    ) {
        (Ok(s), Ok(u)) if s < u => (s, u),
        (Ok(_), Ok(_)) => return fail("--since must be before --until".into()),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    let Some((start, end)) = hours
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<i8>().ok()?, b.trim().parse::<i8>().ok()?)))
        .filter(|(a, b)| (0..24).contains(a) && (1..=24).contains(b) && a < b)
    else {
        return fail(format!(
            "--hours {hours:?}: expected START-END such as 7-19"
        ));
    };
    let mut opts = crate::audit::review::ReviewOptions::new(since, until);
    opts.work_start_hour = start;
    opts.work_end_hour = end;
    opts.weekends_off = !weekends;
    opts.time_zone = zone;
    opts.large_prompt_chars = large_prompt;
    if !departments.is_empty() {
        opts.expected_departments = Some(departments.into_iter().collect());
    }
    let from = since
        .checked_sub(jiff::SignedDuration::from_hours(24 * BASELINE_DAYS))
        .unwrap_or(since);
    let records = match crate::audit::reader::records(dir, Some(from), Some(until)) {
        Ok(r) => r,
        Err(e) => return fail(sandbox::error_chain::chain(&e)),
    };
    let report = crate::audit::review::review(&records, &opts);
    print!(
        "{}",
        match format {
            Format::Text => report.to_text(),
            Format::Csv => report.to_csv(),
            Format::Json => report.to_json() + "\n",
        }
    );
    0
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {
        Top::Bundle(cmd) => crate::cli_bundle::run(cmd),
        Top::Audit(AuditCommand::Review {
            dir,
            since,
            until,
            format,
            hours,
            weekends,
            tz,
            large_prompt,
            departments,
        }) => review(
            &dir,
            &since,
            until.as_deref(),
            format,
            &hours,
            weekends,
            &tz,
            large_prompt,
            departments,
        ),
        Top::Audit(AuditCommand::Verify {
            dir,
            seal_key,
            state,
        }) => {
            let seed = match seal_key.as_deref().map(SealKey::load_seed).transpose() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("phibox: {}", sandbox::error_chain::chain(&e));
                    return 2;
                }
            };
            let default_state = dir
                .parent()
                .map(|p| p.join("secrets").join(SEAL_STATE_FILE))
                .filter(|p| p.exists());
            let state_path = state.or(default_state);
            let state = match state_path.as_deref().map(SealKey::load_state).transpose() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("phibox: {}", sandbox::error_chain::chain(&e));
                    return 2;
                }
            };
            let checked_seals = seed.is_some();
            let report = verify(&dir, &VerifyOptions { seed, state });
            println!(
                "{} record(s) in {} segment(s), {} seal(s)",
                report.records, report.segments, report.seals
            );
            if checked_seals {
                println!(
                    "seals: {} MAC(s) verified with the seed",
                    report.seals_verified
                );
            } else {
                println!(
                    "seals: not checked (no --seal-key): a re-chained modification would pass"
                );
            }
            if report.tail_checked {
                println!("tail: checked against the box's seal key");
            } else {
                println!("tail: not checked (no seal state): a cut tail would pass");
            }
            if let Some(seq) = report.starts_after_export {
                println!(
                    "the trail starts at seq {seq}: older segments left through a recorded export"
                );
            }
            if report.unsealed_tail > 0 {
                println!(
                    "{} record(s) after the last seal are chained but not yet sealed",
                    report.unsealed_tail
                );
            }
            match report.damage {
                None => {
                    println!("INTACT");
                    0
                }
                Some(d) => {
                    println!("DAMAGED: {d}");
                    1
                }
            }
        }
    }
}
