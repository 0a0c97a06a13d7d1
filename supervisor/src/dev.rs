//! Dev mode (`phiboxd --dev`): the same code as the appliance on a laptop or CI machine, with a
//! data directory in the working tree instead of the encrypted volume. It never weakens the
//! confinement silently: a partial landlock needs an explicit flag and is announced loudly.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

use crate::confinement_report::{self, ReportError};
use crate::programs::{ProgramError, Programs};
use crate::worker::{self, WorkerConfig, WorkerError};

/// The stand-in worker program until the llama.cpp worker exists.
pub const WORKER_PROGRAM: &str = "phibox-sandbox-probe";

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("phiboxd must run as root to confine the worker (namespaces, mounts, uid switch)")]
    NotRoot,
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Programs(#[from] ProgramError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Confinement(#[from] ReportError),
    #[error("waiting for a stop signal")]
    Signals(#[source] nix::Error),
}

/// Dev-mode settings.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub data_dir: PathBuf,
    pub model: PathBuf,
    pub allow_partial_landlock: bool,
    /// Stop right after the report instead of waiting for a signal.
    pub check_only: bool,
}

fn prepare_data_dir(path: &Path) -> Result<(), DevError> {
    let err = |source| DevError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Runs phibox in dev mode; returns when stopped by SIGINT/SIGTERM (or at once with
/// `check_only`). `say` receives the human-readable summary lines.
pub fn run(opts: &DevOptions, say: &mut dyn FnMut(&str)) -> Result<(), DevError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DevError::NotRoot);
    }
    // Block the stop signals first, so that one arriving during start-up is not lost.
    let mut stop = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        stop.add(s);
    }
    stop.thread_block().map_err(DevError::Signals)?;

    say("WARNING: dev mode: the data directory is NOT encrypted; never put real patient data here");
    prepare_data_dir(&opts.data_dir)?;
    say(&format!(
        "data directory {} (mode 0700)",
        opts.data_dir.display()
    ));
    let programs = Programs::beside_self(WORKER_PROGRAM)?;
    if opts.allow_partial_landlock {
        say("WARNING: --allow-partial-landlock: the worker may run with a weaker landlock than required");
        tracing::warn!("landlock override requested: the worker may run partially confined");
    }
    let cfg = WorkerConfig {
        programs,
        model: opts.model.clone(),
        uid: worker::DEV_UID,
        gid: worker::DEV_GID,
        allow_partial_landlock: opts.allow_partial_landlock,
        ready_timeout: Duration::from_secs(60),
    };
    let w = worker::start(&cfg)?;
    tracing::info!(pid = w.child.pid().as_raw(), "confined worker started");
    say(&format!(
        "started the confined worker stand-in ({WORKER_PROGRAM}); it read the model {} ({} bytes) at {} inside its sandbox",
        opts.model.display(),
        w.ready.model_bytes,
        worker::MODEL_PATH_INSIDE
    ));
    let report = match confinement_report::check(w.child.pid(), w.plan.root.len()) {
        Ok(r) => r,
        Err(e) => {
            w.stop(Duration::from_secs(1));
            return Err(e.into());
        }
    };
    say("confinement verified from outside:");
    let mut lines = report.lines();
    if !w.child.warnings().is_empty() {
        lines.pop();
        for warning in w.child.warnings() {
            lines.push(format!("WARNING: {warning}"));
        }
    }
    for line in lines {
        say(&format!("  - {line}"));
    }
    if opts.check_only {
        w.stop(Duration::from_secs(5));
        say("check complete; stopped");
        return Ok(());
    }
    say("phibox is running (no web UI yet); stop with Ctrl-C");
    let sig = stop.wait().map_err(DevError::Signals)?;
    tracing::info!(signal = ?sig, "stopping");
    let end = w.stop(Duration::from_secs(5));
    say(&format!("stopped on {sig:?}; worker ended: {end:?}"));
    Ok(())
}
