//! phiboxd is a child subreaper: descendants orphaned below it (a worker whose launcher died)
//! are reparented to it rather than to PID 1, so they must be reaped here. Children phiboxd
//! waits for itself (the launchers) are registered and left alone, so their owners still get
//! their exit status.

use std::collections::BTreeSet;
use std::sync::Mutex;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

static OWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Marks `pid` as waited for by its owner.
pub fn register(pid: Pid) {
    OWNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid.as_raw());
}

/// The owner has reaped `pid`.
pub fn unregister(pid: Pid) {
    OWNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pid.as_raw());
}

/// Makes the calling process a child subreaper.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// The pids of this process's children, from `/proc/self/task/*/children`.
fn children() -> std::io::Result<BTreeSet<i32>> {
    let mut out = BTreeSet::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        let text = std::fs::read_to_string(task?.path().join("children"))?;
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    Ok(out)
}

/// Reaps every exited child that nobody owns; returns their pids.
pub fn reap_orphans() -> Vec<i32> {
    let children = match children() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot list child processes; orphans are not reaped");
            return Vec::new();
        }
    };
    let owned = OWNED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    children
        .into_iter()
        .filter(|pid| !owned.contains(pid))
        .filter(|&pid| {
            matches!(
                waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
            )
        })
        .collect()
}

/// Reaps orphans whenever a child changes state (and every few seconds, in case a signal was
/// coalesced).
pub async fn run() {
    let Ok(mut sigchld) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
    else {
        tracing::error!("cannot watch SIGCHLD; orphaned processes will not be reaped");
        return;
    };
    loop {
        tokio::select! {
            _ = sigchld.recv() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
        for pid in reap_orphans() {
            tracing::info!(pid, "reaped an orphaned process");
        }
    }
}
