//! Resource limits: no core dumps (they would hold PHI), no file writes at all, bounded
//! processes/threads, and a small number of open files (set last, after landlock has opened
//! its path descriptors).

use nix::sys::resource::Resource;

use crate::host::Host;
use crate::plan::Limits;

#[derive(Debug, thiserror::Error)]
#[error("setting {resource:?} to {value}")]
pub struct RlimitError {
    pub resource: Resource,
    pub value: u64,
    #[source]
    pub source: std::io::Error,
}

fn set(host: &mut impl Host, resource: Resource, value: u64) -> Result<(), RlimitError> {
    host.setrlimit(resource, value)
        .map_err(|source| RlimitError {
            resource,
            value,
            source,
        })
}

/// Core 0, file size 0, processes bounded; the CPU priority lowered as asked.
pub fn apply(host: &mut impl Host, limits: &Limits) -> Result<(), RlimitError> {
    set(host, Resource::RLIMIT_CORE, 0)?;
    set(host, Resource::RLIMIT_FSIZE, 0)?;
    set(host, Resource::RLIMIT_NPROC, limits.nproc)?;
    if limits.nice != 0 {
        host.set_nice(limits.nice).map_err(|source| RlimitError {
            resource: Resource::RLIMIT_NICE,
            value: u64::try_from(limits.nice).unwrap_or(0),
            source,
        })?;
    }
    Ok(())
}

/// Open files; after landlock.
pub fn apply_nofile(host: &mut impl Host, limits: &Limits) -> Result<(), RlimitError> {
    set(host, Resource::RLIMIT_NOFILE, limits.nofile)
}
