//! Called by the confined program itself (the worker, the test probe). [`enter`], its first
//! act, checks that it really runs under the launcher's confinement (it refuses to run
//! otherwise) and adds the load-stage seccomp filter, which ends `execve` and the start-up
//! calls, before any untrusted byte (model file, prompt) is read. [`serve`], once the model is
//! loaded, adds the serve-stage filter, which ends opening and reading files and any further
//! filter changes.

use std::os::fd::{FromRawFd, OwnedFd};

use caps::CapSet;

use crate::jail::CONTROL_FD;
use crate::seccomp::{Policy, SeccompError, Stage};

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("not running under the phibox sandbox: {0}")]
    NotConfined(&'static str),
    #[error(transparent)]
    Policy(#[from] SeccompError),
    #[error("installing a seccomp filter")]
    Install(#[source] seccompiler::Error),
    #[error("the control socket (fd 3) is missing")]
    NoControlSocket,
}

fn prctl_get(option: libc::c_int) -> libc::c_int {
    // SAFETY: PR_GET_* options take no pointers; the extra arguments are ignored zeros.
    unsafe { libc::prctl(option, 0, 0, 0, 0) }
}

/// Verifies the confinement and tightens it; returns the control socket.
pub fn enter() -> Result<OwnedFd, ConfineError> {
    if prctl_get(libc::PR_GET_SECCOMP) != 2 {
        return Err(ConfineError::NotConfined("no seccomp filter"));
    }
    if prctl_get(libc::PR_GET_NO_NEW_PRIVS) != 1 {
        return Err(ConfineError::NotConfined("no_new_privs is not set"));
    }
    if nix::unistd::getuid().is_root() {
        return Err(ConfineError::NotConfined("running as root"));
    }
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        match caps::read(None, set) {
            Ok(c) if c.is_empty() => {}
            _ => return Err(ConfineError::NotConfined("capabilities are held")),
        }
    }
    install(Stage::Load)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a stat struct into the provided, properly sized buffer.
    let r = unsafe { libc::fstat(CONTROL_FD, st.as_mut_ptr()) };
    // SAFETY: fstat returned 0, so it initialised the buffer.
    if r != 0 || (unsafe { st.assume_init() }.st_mode & libc::S_IFMT) != libc::S_IFSOCK {
        return Err(ConfineError::NoControlSocket);
    }
    // SAFETY: fd 3 was placed by the launcher for this process and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(CONTROL_FD) })
}

fn install(stage: Stage) -> Result<(), ConfineError> {
    let filter = Policy::worker()?.allow_list(stage)?;
    seccompiler::apply_filter_all_threads(&filter).map_err(ConfineError::Install)
}

/// Adds the serve-stage filter on every thread: from now on no file can be opened or read.
pub fn serve() -> Result<(), ConfineError> {
    install(Stage::Serve)
}
