//! phibox's confinement of untrusted code (the inference worker): a launcher that builds a
//! minimal world for a child (fresh namespaces, a read-only root holding only what it needs,
//! an unprivileged uid with no capabilities, rlimits, landlock, a seccomp allow-list) and the
//! supervisor-side API to start it and inspect it. Owns every privileged operation needed for
//! that; knows nothing of llama.cpp, HTTP or the audit trail.
//!
//! The setup logic talks to the kernel only through [`host::Host`], whose fake makes it unit
//! testable; the real path is proven by the escape tests in `tests/`.

pub mod capabilities;
pub mod confine;
pub mod elf;
pub mod error_chain;
pub mod escape;
#[cfg(test)]
mod fake;
pub mod fds;
pub mod host;
pub mod identity;
pub mod inspect;
pub mod jail;
pub mod landlock_rules;
pub mod launcher;
pub mod namespaces;
pub mod plan;
pub mod protocol;
pub mod resolve;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod spawn;
pub mod spec;
pub mod syscalls;

pub use plan::{FileKind, Limits, Plan, RootEntry};
pub use spawn::{spawn, ConfinedChild, SpawnError, Termination};
pub use spec::{gpu_device_nodes, DataFile, SandboxSpec, SpecError};
