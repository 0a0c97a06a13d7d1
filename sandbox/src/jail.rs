//! `phibox-jail`, the launcher: a fresh single-threaded process (so it can allocate and build
//! filters freely, which a fork of the multi-threaded supervisor could not) that reads the plan,
//! enters the namespaces, forks the child that becomes PID 1 of the new PID namespace and
//! confines itself before executing the program, then waits for it.
//!
//! Descriptors on entry: 3 = plan pipe (a little-endian u32 length, then JSON; kept open by the
//! supervisor as a lifeline), 4 = the child's control socket, 5 = status pipe. On the status
//! pipe the launcher writes `pid N` (the child's pid on the host) and the child writes
//! `error …` if its setup fails; the child's copy closes at execve, so end-of-file with no error
//! means the program is running. The launcher exits with the child's exit code, or 128 + the
//! signal that killed it, or [`SETUP_FAILED`].

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::host::RealHost;
use crate::landlock_rules::Enforcement;
use crate::launcher::{self, Lifecycle};
use crate::namespaces;
use crate::plan::Plan;

pub const PLAN_FD: RawFd = 3;
pub const CONTROL_IN_FD: RawFd = 4;
pub const STATUS_FD: RawFd = 5;
/// The control socket's descriptor in the confined program.
pub const CONTROL_FD: RawFd = 3;
/// Exit code of the launcher when the sandbox could not be set up.
pub const SETUP_FAILED: i32 = 125;
/// Upper bound on the plan's size.
pub const MAX_PLAN: u32 = 1 << 20;

use crate::error_chain::chain;

fn status_line(line: &str) {
    // SAFETY: fd 5 is the status pipe handed to the launcher; ManuallyDrop keeps it open.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(STATUS_FD) });
    let _ = f.write_all(format!("{}\n", line.replace('\n', " ")).as_bytes());
}

fn read_plan() -> Result<Plan, String> {
    // SAFETY: fd 3 is the plan pipe; ManuallyDrop keeps it open as the lifeline.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(PLAN_FD) });
    let mut len = [0u8; 4];
    f.read_exact(&mut len)
        .map_err(|e| format!("reading the plan length: {e}"))?;
    let len = u32::from_le_bytes(len);
    if len > MAX_PLAN {
        return Err(format!("plan of {len} bytes exceeds {MAX_PLAN}"));
    }
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)
        .map_err(|e| format!("reading the plan: {e}"))?;
    serde_json::from_slice(&buf).map_err(|e| format!("invalid plan: {e}"))
}

/// The launcher's `main`; returns its exit code.
pub fn main() -> i32 {
    let plan = match read_plan() {
        Ok(p) => p,
        Err(e) => {
            status_line(&format!("error {e}"));
            return SETUP_FAILED;
        }
    };
    if nix::unistd::getppid().as_raw() != plan.supervisor_pid {
        status_line("error the supervisor is gone");
        return SETUP_FAILED;
    }
    let mut host = RealHost::default();
    if let Err(e) = namespaces::unshare(&mut host) {
        status_line(&format!("error {}", chain(&e)));
        return SETUP_FAILED;
    }
    let (alive_r, alive_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            status_line(&format!("error creating the liveness pipe: {e}"));
            return SETUP_FAILED;
        }
    };
    // SAFETY: the launcher is single-threaded (it starts no threads), so the child may run any
    // code after fork.
    match unsafe { fork() } {
        Err(e) => {
            status_line(&format!("error fork: {e}"));
            SETUP_FAILED
        }
        Ok(ForkResult::Child) => {
            drop(alive_w);
            child(&plan, host, alive_r)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(alive_r);
            status_line(&format!("pid {child}"));
            close_raw(STATUS_FD);
            close_raw(CONTROL_IN_FD);
            restrict_launcher();
            let code = wait_for(child);
            drop(alive_w);
            code
        }
    }
}

fn close_raw(fd: RawFd) {
    // SAFETY: closes a descriptor the launcher was handed and no Rust object owns.
    unsafe { libc::close(fd) };
}

struct ChildLife {
    alive: OwnedFd,
}

fn parent_gone(alive: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(alive, PollFlags::POLLIN)];
    !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
}

fn arm_parent_death(alive: BorrowedFd<'_>) {
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || parent_gone(alive) {
        std::process::exit(SETUP_FAILED);
    }
}

impl Lifecycle for ChildLife {
    fn after_identity_switch(&mut self) {
        // A credential change clears the parent-death signal: arm it again.
        arm_parent_death(self.alive.as_fd());
    }
    fn warn_partial_landlock(&mut self, enforcement: Enforcement) {
        let msg = format!(
            "warning landlock is only {enforcement:?}ly enforced; continuing because allow_partial_landlock is set"
        );
        eprintln!("phibox-jail: {msg}");
        status_line(&msg);
    }
}

fn child(plan: &Plan, mut host: RealHost, alive: OwnedFd) -> i32 {
    arm_parent_death(alive.as_fd());
    // The status pipe must vanish at execve; the control socket moves to fd 3.
    // SAFETY: sets a flag on the status pipe the launcher was given; no memory is involved.
    unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: moves the control socket onto fd 3, replacing the plan pipe the child never uses.
    let moved = unsafe { libc::dup2(CONTROL_IN_FD, CONTROL_FD) };
    if moved < 0 {
        let e = std::io::Error::last_os_error();
        status_line(&format!("error moving the control socket: {e}"));
        return SETUP_FAILED;
    }
    close_raw(CONTROL_IN_FD);
    let keep = [CONTROL_FD, STATUS_FD, alive.as_raw_fd()];
    let mut life = ChildLife { alive };
    match launcher::confine_and_exec(plan, &mut host, &mut life, &keep) {
        Err(e) => {
            status_line(&format!("error {}", chain(&e)));
            SETUP_FAILED
        }
        Ok(never) => match never {},
    }
}

/// The launcher keeps only CAP_KILL (to kill the child, which runs as another uid).
fn restrict_launcher() {
    use caps::{CapSet, Capability};
    let keep: caps::CapsHashSet = [Capability::CAP_KILL].into_iter().collect();
    for cap in caps::all() {
        if cap != Capability::CAP_KILL {
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    let _ = caps::clear(None, CapSet::Inheritable);
    let _ = caps::clear(None, CapSet::Ambient);
    let _ = caps::set(None, CapSet::Effective, &keep);
    let _ = caps::set(None, CapSet::Permitted, &keep);
    let _ = nix::sys::prctl::set_no_new_privs();
}

fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Waits for the child; kills it if the supervisor goes away or asks the launcher to stop.
fn wait_for(child: Pid) -> i32 {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    let blocked = mask.thread_block();
    let sfd = blocked.and_then(|_| SignalFd::new(&mask));
    let Ok(sfd) = sfd else {
        // Without signal handling, plain blocking wait is the best fallback.
        return loop {
            match waitpid(child, None) {
                Ok(s) => {
                    if let Some(c) = exit_code(s) {
                        break c;
                    }
                }
                Err(_) => break SETUP_FAILED,
            }
        };
    };
    // SAFETY: fd 3 (the plan pipe) stays open for the launcher's whole life.
    let lifeline = unsafe { BorrowedFd::borrow_raw(PLAN_FD) };
    let mut lifeline_open = true;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(s) => {
                if let Some(code) = exit_code(s) {
                    return code;
                }
            }
            Err(_) => return SETUP_FAILED,
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if lifeline_open {
            fds.push(PollFd::new(lifeline, PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let lifeline_event = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        let signal_event = fds[0].revents().is_some_and(|r| !r.is_empty());
        if lifeline_event {
            let mut b = [0u8; 64];
            if nix::unistd::read(lifeline, &mut b).map_or(true, |n| n == 0) {
                lifeline_open = false;
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            }
        }
        if signal_event {
            if let Ok(Some(info)) = sfd.read_signal() {
                if info.ssi_signo != Signal::SIGCHLD as u32 {
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                }
            }
        }
    }
}
