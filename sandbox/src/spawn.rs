//! The supervisor's side: starts `phibox-jail` with the plan, the child's end of a
//! `SOCK_SEQPACKET` control socketpair and a status pipe, and returns once the confined program
//! runs (or with the launcher's error). Blocking; call it from a blocking context.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;

use crate::jail::{CONTROL_IN_FD, PLAN_FD, STATUS_FD};
use crate::plan::Plan;

/// How long the launcher may take to report.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("creating the control socket or pipes")]
    Pipes(#[source] std::io::Error),
    #[error("starting the launcher {path}")]
    Launch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sending the plan to the launcher")]
    SendPlan(#[source] std::io::Error),
    #[error("encoding the plan")]
    EncodePlan(#[source] serde_json::Error),
    #[error("reading the launcher's status")]
    Status(#[source] std::io::Error),
    #[error("the launcher did not report within {0:?}")]
    Timeout(Duration),
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    #[error("the launcher ended without starting the program ({0})")]
    LauncherDied(std::process::ExitStatus),
}

/// How a confined program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    Exited(i32),
    Signaled(i32),
    /// The launcher itself was killed by this signal.
    LauncherKilled(i32),
}

/// A running confined program.
#[derive(Debug)]
pub struct ConfinedChild {
    launcher: Child,
    pid: Pid,
    control: Option<OwnedFd>,
    /// Closing this tells the launcher to kill the program.
    lifeline: Option<OwnedFd>,
    warnings: Vec<String>,
    ended: Option<Termination>,
}

fn high_dup(fd: &OwnedFd) -> std::io::Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
        .map_err(std::io::Error::from)?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// Starts `plan.program` confined, through the launcher at `jail`.
pub fn spawn(
    jail: &Path,
    plan: &Plan,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<ConfinedChild, SpawnError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| SpawnError::Pipes(e.into()))?;
    let (plan_r, plan_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SpawnError::Pipes(e.into()))?;
    let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SpawnError::Pipes(e.into()))?;
    // Above every target number, so that the dup2s below cannot clobber each other.
    let moves: Vec<(OwnedFd, RawFd)> = vec![
        (high_dup(&plan_r).map_err(SpawnError::Pipes)?, PLAN_FD),
        (high_dup(&theirs).map_err(SpawnError::Pipes)?, CONTROL_IN_FD),
        (high_dup(&status_w).map_err(SpawnError::Pipes)?, STATUS_FD),
    ];
    drop((plan_r, theirs, status_w));
    let raw_moves: Vec<(RawFd, RawFd)> = moves.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect();

    let mut cmd = Command::new(jail);
    cmd.env_clear()
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    let dup_all = move || {
        for &(from, to) in &raw_moves {
            // SAFETY: dup2 on descriptors this process owns; async-signal-safe, no allocation.
            if unsafe { libc::dup2(from, to) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure only calls dup2, which is async-signal-safe, and allocates nothing.
    unsafe { cmd.pre_exec(dup_all) };
    let launcher = cmd.spawn().map_err(|source| SpawnError::Launch {
        path: jail.to_path_buf(),
        source,
    })?;
    drop(moves);

    let mut child = ConfinedChild {
        launcher,
        pid: Pid::from_raw(0),
        control: Some(ours),
        lifeline: None,
        warnings: Vec::new(),
        ended: None,
    };
    // The launcher checks that its parent is the process that planned it.
    let plan = Plan {
        supervisor_pid: std::process::id() as i32,
        ..plan.clone()
    };
    let body = serde_json::to_vec(&plan).map_err(SpawnError::EncodePlan)?;
    let mut plan_file = std::fs::File::from(plan_w);
    let sent = plan_file
        .write_all(&(body.len() as u32).to_le_bytes())
        .and_then(|_| plan_file.write_all(&body));
    child.lifeline = Some(plan_file.into());
    if let Err(e) = sent {
        child.kill();
        return Err(SpawnError::SendPlan(e));
    }

    let report = match read_status(status_r) {
        Ok(r) => r,
        Err(e) => {
            child.kill();
            return Err(e);
        }
    };
    let mut error = None;
    for line in report.lines() {
        if let Some(pid) = line.strip_prefix("pid ") {
            child.pid = Pid::from_raw(pid.trim().parse().unwrap_or(0));
        } else if let Some(e) = line.strip_prefix("error ") {
            error.get_or_insert_with(|| e.to_string());
        } else if let Some(w) = line.strip_prefix("warning ") {
            child.warnings.push(w.to_string());
        }
    }
    if let Some(e) = error {
        child.kill();
        return Err(SpawnError::Setup(e));
    }
    if child.pid.as_raw() <= 0 {
        let status = child.launcher.wait().map_err(SpawnError::Status)?;
        child.ended = Some(decode(status));
        return Err(SpawnError::LauncherDied(status));
    }
    Ok(child)
}

/// Reads the status pipe to end-of-file, within the deadline.
fn read_status(status_r: OwnedFd) -> Result<String, SpawnError> {
    let deadline = Instant::now() + SETUP_DEADLINE;
    let mut out = Vec::new();
    let mut file = std::fs::File::from(status_r);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SpawnError::Timeout(SETUP_DEADLINE));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(SpawnError::Status(e.into())),
        }
        let mut buf = [0u8; 4096];
        let n = file.read(&mut buf).map_err(SpawnError::Status)?;
        if n == 0 {
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        if out.len() < 64 * 1024 {
            out.extend_from_slice(&buf[..n]);
        }
    }
}

fn decode(status: std::process::ExitStatus) -> Termination {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) if c > 128 => Termination::Signaled(c - 128),
        (Some(c), _) => Termination::Exited(c),
        (None, Some(s)) => Termination::LauncherKilled(s),
        (None, None) => Termination::LauncherKilled(0),
    }
}

impl ConfinedChild {
    /// The confined program's pid on the host (it is 1 inside its own PID namespace).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The launcher's pid (phiboxd's direct child).
    pub fn launcher_pid(&self) -> Pid {
        Pid::from_raw(self.launcher.id() as i32)
    }

    /// The supervisor's end of the control socket.
    pub fn control(&self) -> &OwnedFd {
        self.control.as_ref().expect("control socket taken")
    }

    /// Takes the control socket (e.g. to hand it to an async runtime).
    pub fn take_control(&mut self) -> Option<OwnedFd> {
        self.control.take()
    }

    /// Warnings the launcher reported (e.g. an overridden partial landlock).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Waits until the program has ended.
    pub fn wait(&mut self) -> std::io::Result<Termination> {
        if let Some(t) = self.ended {
            return Ok(t);
        }
        let status = self.launcher.wait()?;
        let t = decode(status);
        self.ended = Some(t);
        Ok(t)
    }

    /// The program's end, if it has ended; never blocks.
    pub fn try_wait(&mut self) -> std::io::Result<Option<Termination>> {
        if self.ended.is_none() {
            self.ended = self.launcher.try_wait()?.map(decode);
        }
        Ok(self.ended)
    }

    /// Kills the program at once (through its launcher) and reaps it.
    pub fn kill(&mut self) {
        if self.ended.is_some() {
            return;
        }
        let _ = nix::sys::signal::kill(Pid::from_raw(self.launcher.id() as i32), Signal::SIGTERM);
        self.lifeline = None;
        let _ = self.wait();
    }
}

impl Drop for ConfinedChild {
    fn drop(&mut self) {
        self.kill();
    }
}
