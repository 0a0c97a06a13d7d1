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
