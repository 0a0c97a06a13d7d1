//! phiboxd: the supervisor daemon. Parses the command line, reads the configuration, sets up
//! logging and the process's role under systemd, and runs the requested mode. Only this file
//! uses anyhow.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use supervisor::config::Config;
use supervisor::dev::{self, DevOptions};

/// phibox's supervisor.
#[derive(Debug, Parser)]
#[command(name = "phiboxd", version)]
struct Args {
    /// Run in dev mode: data directory in the working tree, nothing encrypted.
    #[arg(long)]
    dev: bool,
    /// The configuration file (TOML). Dev mode runs on the defaults without one.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Dev mode's data directory.
    #[arg(long, default_value = "phibox-dev-data")]
    data_dir: PathBuf,
    /// The GGUF model file the worker serves (overrides worker.model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Start even where the kernel enforces landlock only partially (announced loudly).
    #[arg(long)]
    allow_partial_landlock: bool,
    /// Start, verify the worker's confinement, run the self-test and stop.
    #[arg(long)]
    check: bool,
    /// The web UI's HTTPS address (overrides web.https).
    #[arg(long)]
    https: Option<std::net::SocketAddr>,
    /// The redirect-only HTTP address (overrides web.http).
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.web.https = args.https.or(config.web.https);
    config.web.http = args.http.or(config.web.http);
    if !args.dev {
        anyhow::bail!(
            "appliance mode needs the image's encrypted data volume, which this build cannot \
             unlock yet; run with --dev on a development machine"
        );
    }
    // Orphans below phiboxd (a worker whose launcher died) come back to it, not to PID 1.
    supervisor::reaper::become_subreaper()?;
    let opts = DevOptions {
        data_dir: args.data_dir,
        model: args.model,
        config,
        allow_partial_landlock: args.allow_partial_landlock,
        check_only: args.check,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The start-up summary is for the person at the terminal: stdout, not the log.
    #[allow(clippy::print_stdout)]
    let mut say = |line: &str| println!("phiboxd: {line}");
    runtime.block_on(dev::run(opts, &mut say))?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    supervisor::logging::init();
    let dev = args.dev;
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "phiboxd failed");
            eprintln!("phiboxd: error: {e:#}");
            // 2: refused to start in this mode or with this configuration.
            if !dev
                || e.downcast_ref::<supervisor::config::ConfigError>()
                    .is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
