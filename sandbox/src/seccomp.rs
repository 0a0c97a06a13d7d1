//! The seccomp allow-list, read from the reviewed data file `policy/worker-seccomp.toml` and
//! compiled with seccompiler. Two filters are stacked before the worker's execve: one answers
//! `clone3` with ENOSYS (its flags live in memory a filter cannot read, so glibc must fall back
//! to `clone`, whose flags are checked), the other allows the listed calls and kills the process
//! on anything else. The worker then adds the load-stage list itself before it reads any
//! untrusted input, and the serve-stage list once the model is loaded; stacked filters take the
//! strictest answer, so start-up calls such as `execve` end at the first, file opens at the
//! second.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Deserialize;

use crate::syscalls;

/// The reviewed policy text, compiled into the binary.
pub const WORKER_POLICY: &str = include_str!("../policy/worker-seccomp.toml");

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("the seccomp policy is not valid TOML")]
    Parse(#[from] toml::de::Error),
    #[error("syscall {0} in the seccomp policy is unknown on this architecture")]
    UnknownSyscall(String),
    #[error("syscall {0} in the seccomp policy has no reason")]
    NoReason(String),
    #[error("syscall {name}: argument condition is invalid")]
    Condition {
        name: String,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("syscall {name} is listed twice for the same stage")]
    Duplicate { name: String },
    #[error("cannot compile the seccomp filter")]
    Compile(#[source] seccompiler::BackendError),
    #[error("seccomp filters are only defined for x86_64")]
    UnsupportedArch,
}

/// The last phase of the worker's life in which a syscall is needed. Each filter allows the
/// calls of its own stage and of every later one, and the filters stack, so each stage ends
/// what the earlier ones needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// From the launcher's execve until the worker calls `confine::enter`.
    Startup,
    /// Until the model is loaded and warmed up (`confine::serve`).
    Load,
    /// For the worker's whole life.
    Serve,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgCondition {
    pub arg: u8,
    pub width: u8,
    pub eq: u64,
    pub mask: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: String,
    pub stage: Stage,
    pub reason: String,
    #[serde(default)]
    pub allow_if: Vec<ArgCondition>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub syscall: Vec<Entry>,
}

impl Policy {
    /// Parses and checks a policy: known names, a reason for each, no duplicates per stage.
    pub fn parse(text: &str) -> Result<Policy, SeccompError> {
        let policy: Policy = toml::from_str(text)?;
        let mut seen = std::collections::BTreeSet::new();
        for e in &policy.syscall {
            if syscalls::number(&e.name).is_none() {
                return Err(SeccompError::UnknownSyscall(e.name.clone()));
            }
            if e.reason.trim().is_empty() {
                return Err(SeccompError::NoReason(e.name.clone()));
            }
            if !seen.insert((e.name.clone(), e.stage)) {
                return Err(SeccompError::Duplicate {
                    name: e.name.clone(),
                });
            }
        }
        Ok(policy)
    }

    /// The worker's policy.
    pub fn worker() -> Result<Policy, SeccompError> {
        Policy::parse(WORKER_POLICY)
    }

    /// Whether `name` is allowed (possibly with conditions) in the given stage.
    pub fn allows(&self, name: &str, stage: Stage) -> bool {
        self.entries(stage).any(|e| e.name == name)
    }

    fn entries(&self, stage: Stage) -> impl Iterator<Item = &Entry> {
        self.syscall.iter().filter(move |e| e.stage >= stage)
    }

    /// The allow-list filter for `stage`: the calls of that stage and of every later one.
    pub fn allow_list(&self, stage: Stage) -> Result<BpfProgram, SeccompError> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        // Calls allowed without conditions: seccompiler matches an empty rule list always.
        let mut unconditional = std::collections::BTreeSet::new();
        for e in self.entries(stage) {
            let nr = syscalls::number(&e.name)
                .ok_or_else(|| SeccompError::UnknownSyscall(e.name.clone()))?;
            let slot = rules.entry(nr).or_default();
            if e.allow_if.is_empty() {
                unconditional.insert(nr);
                continue;
            }
            for c in &e.allow_if {
                let err = |source| SeccompError::Condition {
                    name: e.name.clone(),
                    source,
                };
                let len = if c.width == 32 {
                    SeccompCmpArgLen::Dword
                } else {
                    SeccompCmpArgLen::Qword
                };
                let op = match c.mask {
                    Some(m) => SeccompCmpOp::MaskedEq(m),
                    None => SeccompCmpOp::Eq,
                };
                let cond = SeccompCondition::new(c.arg, len, op, c.eq).map_err(err)?;
                slot.push(SeccompRule::new(vec![cond]).map_err(err)?);
            }
        }
        for nr in unconditional {
            rules.insert(nr, Vec::new());
        }
        compile(rules, SeccompAction::KillProcess, SeccompAction::Allow)
    }
}

/// The companion filter: `clone3` fails with ENOSYS, everything else passes to the allow-list.
pub fn clone3_enosys() -> Result<BpfProgram, SeccompError> {
    let nr = syscalls::number("clone3").ok_or(SeccompError::UnsupportedArch)?;
    let rules = BTreeMap::from([(nr, vec![])]);
    compile(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let arch = if cfg!(target_arch = "x86_64") {
        TargetArch::x86_64
    } else {
        return Err(SeccompError::UnsupportedArch);
    };
    let filter =
        SeccompFilter::new(rules, mismatch, matched, arch).map_err(SeccompError::Compile)?;
    BpfProgram::try_from(filter).map_err(SeccompError::Compile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_policy_parses_and_every_entry_has_a_reason() {
        let p = Policy::worker().unwrap();
        assert!(p.syscall.len() > 30);
        assert!(p.syscall.iter().all(|e| e.reason.len() > 10));
    }

    #[test]
    fn dangerous_calls_are_never_allowed() {
        let p = Policy::worker().unwrap();
        for name in [
            "socket",
            "socketpair",
            "connect",
            "bind",
            "ptrace",
            "process_vm_readv",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "unshare",
            "setns",
            "bpf",
            "io_uring_setup",
            "userfaultfd",
            "perf_event_open",
            "keyctl",
            "add_key",
            "init_module",
            "kexec_load",
            "reboot",
            "kill",
            "capset",
            "setuid",
            "open",
            "creat",
            "truncate",
            "ftruncate",
        ] {
            assert!(!p.allows(name, Stage::Startup), "{name} is allowed");
        }
    }

    #[test]
    fn each_stage_ends_what_only_earlier_ones_need() {
        let p = Policy::worker().unwrap();
        assert!(p.allows("execve", Stage::Startup));
        assert!(!p.allows("execve", Stage::Load));
        assert!(p.allows("seccomp", Stage::Load));
        assert!(!p.allows("seccomp", Stage::Serve));
        assert!(p.allows("openat", Stage::Load));
        assert!(
            !p.allows("openat", Stage::Serve),
            "no file can be opened once serving"
        );
        assert!(p.allows("sendmsg", Stage::Serve));
        let count = |s| p.syscall.iter().filter(|e| e.stage >= s).count();
        assert!(count(Stage::Startup) > count(Stage::Load));
        assert!(count(Stage::Load) > count(Stage::Serve));
    }

    #[test]
    fn every_stage_compiles() {
        let p = Policy::worker().unwrap();
        for stage in [Stage::Startup, Stage::Load, Stage::Serve] {
            assert!(!p.allow_list(stage).unwrap().is_empty());
        }
        assert!(!clone3_enosys().unwrap().is_empty());
    }

    #[test]
    fn unknown_names_and_missing_reasons_are_refused() {
        let unknown = "[[syscall]]\nname = \"frobnicate\"\nstage = \"serve\"\nreason = \"x\"\n";
        assert!(matches!(
            Policy::parse(unknown),
            Err(SeccompError::UnknownSyscall(_))
        ));
        let no_reason = "[[syscall]]\nname = \"read\"\nstage = \"serve\"\nreason = \" \"\n";
        assert!(matches!(
            Policy::parse(no_reason),
            Err(SeccompError::NoReason(_))
        ));
        let twice = "[[syscall]]\nname = \"read\"\nstage = \"serve\"\nreason = \"a\"\n[[syscall]]\nname = \"read\"\nstage = \"serve\"\nreason = \"b\"\n";
        assert!(matches!(
            Policy::parse(twice),
            Err(SeccompError::Duplicate { .. })
        ));
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    #[test]
    fn docs_list_every_syscall_of_the_policy() {
        let doc = include_str!("../../docs/sandbox.md");
        let p = Policy::worker().unwrap();
        let stage = |s: Stage| match s {
            Stage::Startup => "startup",
            Stage::Load => "load",
            Stage::Serve => "serve",
        };
        for e in &p.syscall {
            let row = format!("| `{}` | {} |", e.name, stage(e.stage));
            assert!(
                doc.contains(&row),
                "docs/sandbox.md lacks the row for {} ({})",
                e.name,
                stage(e.stage)
            );
        }
        let rows = doc.lines().filter(|l| l.starts_with("| `")).count();
        assert_eq!(
            rows,
            p.syscall.len(),
            "docs/sandbox.md lists syscalls the policy does not have"
        );
    }
}
