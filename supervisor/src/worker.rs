//! Starting the confined worker and waiting for it to say it is ready. Until the llama.cpp
//! worker exists, the program started is the sandbox's probe in `serve` mode, which reads the
//! model file, allocates, runs threads and answers on the control socket exactly as the worker
//! will have to, under the same policy.

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use sandbox::{ConfinedChild, DataFile, SandboxSpec, Termination};

use crate::programs::Programs;

/// Where the model appears inside the sandbox.
pub const MODEL_PATH_INSIDE: &str = "/model/model.gguf";
/// The unprivileged account the worker runs as in dev mode.
pub const DEV_UID: u32 = 65534;
pub const DEV_GID: u32 = 65534;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("model file {path} is not readable")]
    Model {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot plan the worker's sandbox")]
    Plan(#[from] sandbox::SpecError),
    #[error("cannot start the confined worker")]
    Spawn(#[from] sandbox::SpawnError),
    #[error("the worker did not report ready within {0:?}")]
    NotReady(Duration),
    #[error("the worker ended before it was ready ({0:?})")]
    Died(Termination),
    #[error("the worker closed its control socket before it was ready")]
    Closed,
    #[error("the worker reported an error: {0}")]
    Reported(String),
    #[error("talking to the worker")]
    Control(#[source] std::io::Error),
}

/// What the worker said when it became ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub model_bytes: u64,
}

/// A running, confined worker.
#[derive(Debug)]
pub struct Worker {
    pub child: ConfinedChild,
    pub plan: sandbox::Plan,
    pub ready: Ready,
}

/// Settings for starting the worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub programs: Programs,
    pub model: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub allow_partial_landlock: bool,
    pub ready_timeout: Duration,
}

/// Starts the worker confined and waits until it is ready.
pub fn start(cfg: &WorkerConfig) -> Result<Worker, WorkerError> {
    std::fs::File::open(&cfg.model).map_err(|source| WorkerError::Model {
        path: cfg.model.clone(),
        source,
    })?;
    let mut spec = SandboxSpec::new(&cfg.programs.worker, cfg.uid, cfg.gid);
    spec.args = vec!["serve".into(), MODEL_PATH_INSIDE.into()];
    spec.data_files.push(DataFile {
        source: cfg.model.clone(),
        path: MODEL_PATH_INSIDE.into(),
    });
    spec.allow_partial_landlock = cfg.allow_partial_landlock;
    let plan = spec.plan()?;
    let mut child = sandbox::spawn(
        &cfg.programs.jail,
        &plan,
        Stdio::inherit(),
        Stdio::inherit(),
    )?;
    let ready = match wait_ready(&child, cfg.ready_timeout) {
        Ok(r) => r,
        Err(e) => {
            child.kill();
            return Err(match (e, child.wait()) {
                (WorkerError::Closed, Ok(t)) => WorkerError::Died(t),
                (e, _) => e,
            });
        }
    };
    Ok(Worker { child, plan, ready })
}

fn wait_ready(child: &ConfinedChild, timeout: Duration) -> Result<Ready, WorkerError> {
    let deadline = Instant::now() + timeout;
    let fd = child.control();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(WorkerError::NotReady(timeout));
        }
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(WorkerError::Control(e.into())),
        }
        let mut buf = [0u8; 512];
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(|e| WorkerError::Control(e.into()))?;
        if n == 0 {
            return Err(WorkerError::Closed);
        }
        let msg = String::from_utf8_lossy(&buf[..n]);
        if let Some(rest) = msg.strip_prefix("ready ") {
            let model_bytes = rest
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("bytes="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return Ok(Ready { model_bytes });
        }
        // The worker is untrusted: bound what is repeated of its words.
        let shown: String = msg.chars().take(200).collect();
        return Err(WorkerError::Reported(shown));
    }
}

impl Worker {
    /// Asks the worker to stop and waits up to `grace`; kills it after that.
    pub fn stop(mut self, grace: Duration) -> Termination {
        let _ = send(self.child.control().as_raw_fd(), b"quit", MsgFlags::empty());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(end)) = self.child.try_wait() {
                return end;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill();
        self.child.wait().unwrap_or(Termination::LauncherKilled(0))
    }
}
