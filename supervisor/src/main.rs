//! phiboxd: the supervisor daemon. Parses the command line, sets up logging, and runs the
//! requested mode. Only this file uses anyhow.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use supervisor::dev::{self, DevOptions};

/// phibox's supervisor.
#[derive(Debug, Parser)]
#[command(name = "phiboxd", version)]
struct Args {
    /// Run in dev mode: data directory in the working tree, nothing encrypted.
    #[arg(long)]
    dev: bool,
    /// Dev mode's data directory.
    #[arg(long, default_value = "phibox-dev-data")]
    data_dir: PathBuf,
    /// The GGUF model file the worker serves.
    #[arg(long)]
    model: PathBuf,
    /// Start even where the kernel enforces landlock only partially (announced loudly).
    #[arg(long)]
    allow_partial_landlock: bool,
    /// Start, verify the worker's confinement, report and stop.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    supervisor::logging::init();
    if !args.dev {
        eprintln!(
            "phiboxd: appliance mode needs the image's encrypted data volume, which this build \
             cannot unlock yet; run with --dev on a development machine"
        );
        return ExitCode::from(2);
    }
    let opts = DevOptions {
        data_dir: args.data_dir,
        model: args.model,
        allow_partial_landlock: args.allow_partial_landlock,
        check_only: args.check,
    };
    // The start-up summary is for the person at the terminal: stdout, not the log.
    #[allow(clippy::print_stdout)]
    let mut say = |line: &str| println!("phiboxd: {line}");
    match dev::run(&opts, &mut say) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = anyhow::Error::from(e);
            tracing::error!(error = format!("{e:#}"), "phiboxd failed");
            eprintln!("phiboxd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
