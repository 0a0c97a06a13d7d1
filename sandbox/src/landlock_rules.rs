//! The landlock ruleset: every filesystem right is handled and only reading (and executing the
//! program and its loader) is granted, on exactly the files bound into the root; TCP bind and
//! connect are handled and never granted; abstract unix sockets and signals are scoped to the
//! sandbox. The ABI is pinned to 6, the first with all of these: asking for more than the
//! kernel has, or running on a kernel with less, yields a partial status that the launcher
//! refuses unless explicitly overridden.

use std::path::PathBuf;

use landlock::{
    Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};

use crate::plan::{FileKind, Plan, RootEntry};

/// The landlock ABI whose rights phibox requires.
pub const PINNED_ABI: ABI = ABI::V6;

/// Files under the private `/proc` the worker may read (the ggml CPU backend reads cpuinfo).
const PROC_READABLE: &[&str] = &["/proc/cpuinfo"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Read,
    ReadExecute,
}

/// One path the child may access, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub path: PathBuf,
    pub grant: Grant,
}

/// How completely the kernel enforced the ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    Full,
    Partial,
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("cannot open {path} for a landlock rule")]
    Open {
        path: PathBuf,
        #[source]
        source: landlock::PathFdError,
    },
    #[error("landlock ruleset")]
    Ruleset(#[source] landlock::RulesetError),
}

/// The rules for a plan: the root's files, with execute only for executables.
pub fn rules_for(plan: &Plan) -> Vec<Rule> {
    let mut rules: Vec<Rule> = plan
        .root
        .iter()
        .filter_map(|e| match e {
            RootEntry::File { path, kind, .. } => Some(Rule {
                path: path.clone(),
                grant: match kind {
                    FileKind::Executable => Grant::ReadExecute,
                    FileKind::Library | FileKind::Data | FileKind::Device => Grant::Read,
                },
            }),
            _ => None,
        })
        .collect();
    rules.extend(PROC_READABLE.iter().map(|p| Rule {
        path: PathBuf::from(p),
        grant: Grant::Read,
    }));
    rules
}

/// Restricts the calling thread (and its future children) with `rules`.
pub fn apply(rules: &[Rule]) -> Result<Enforcement, LandlockError> {
    let abi = PINNED_ABI;
    let mut created = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .map_err(LandlockError::Ruleset)?;
    for rule in rules {
        let access = match rule.grant {
            Grant::Read => AccessFs::ReadFile.into(),
            Grant::ReadExecute => AccessFs::ReadFile | AccessFs::Execute,
        };
        let fd = PathFd::new(&rule.path).map_err(|source| LandlockError::Open {
            path: rule.path.clone(),
            source,
        })?;
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(LandlockError::Ruleset)?;
    }
    let status = created.restrict_self().map_err(LandlockError::Ruleset)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial,
        RulesetStatus::NotEnforced => Enforcement::None,
    })
}
