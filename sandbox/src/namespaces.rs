//! New network, mount, PID, IPC, UTS and cgroup namespaces. The network namespace starts with
//! only a loopback interface, which nothing ever brings up: the worker has no network at all.

use nix::sched::CloneFlags;

use crate::host::Host;

/// Every namespace the sandbox unshares. The PID namespace applies to the next child.
pub const FLAGS: CloneFlags = CloneFlags::CLONE_NEWNET
    .union(CloneFlags::CLONE_NEWNS)
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWCGROUP);

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("unshare of the sandbox namespaces")]
    Unshare(#[source] std::io::Error),
    #[error("setting the sandbox hostname")]
    Hostname(#[source] std::io::Error),
}

/// Moves the caller into fresh namespaces (its next child becomes PID 1 of the new PID one).
pub fn unshare(host: &mut impl Host) -> Result<(), NamespaceError> {
    host.unshare(FLAGS).map_err(NamespaceError::Unshare)
}

/// Gives the private UTS namespace a fixed name, so the host's name does not leak.
pub fn set_hostname(host: &mut impl Host, name: &str) -> Result<(), NamespaceError> {
    host.sethostname(name).map_err(NamespaceError::Hostname)
}
