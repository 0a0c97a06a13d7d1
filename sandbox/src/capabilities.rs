//! Dropping every capability with the `caps` crate. The order matters (measured, see
//! shared/notes/sandbox-facts.md): the bounding set can only be dropped while CAP_SETPCAP is
//! still held, and the uid switch needs CAP_SETUID/CAP_SETGID, so the bounding, ambient and
//! inheritable sets go before the switch and the effective and permitted sets after it.

use caps::{CapSet, Capability};

use crate::host::Host;

#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("clearing the {set:?} capability set")]
    Clear {
        set: CapSet,
        #[source]
        source: std::io::Error,
    },
    #[error("dropping {cap} from the bounding set")]
    Bounding {
        cap: Capability,
        #[source]
        source: std::io::Error,
    },
    #[error("setting no_new_privs")]
    NoNewPrivs(#[source] std::io::Error),
}

/// Every capability the caps crate knows, in a stable order.
fn all_sorted() -> Vec<Capability> {
    let mut all: Vec<Capability> = caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    all
}

fn clear(host: &mut impl Host, set: CapSet) -> Result<(), CapabilityError> {
    host.cap_clear(set)
        .map_err(|source| CapabilityError::Clear { set, source })
}

/// Before the uid switch: ambient, bounding (one by one), inheritable.
pub fn drop_before_switch(host: &mut impl Host) -> Result<(), CapabilityError> {
    clear(host, CapSet::Ambient)?;
    for cap in all_sorted() {
        host.cap_drop_bounding(cap)
            .map_err(|source| CapabilityError::Bounding { cap, source })?;
    }
    clear(host, CapSet::Inheritable)
}

/// After the uid switch: effective and permitted (already empty; cleared explicitly anyway).
pub fn drop_after_switch(host: &mut impl Host) -> Result<(), CapabilityError> {
    clear(host, CapSet::Effective)?;
    clear(host, CapSet::Permitted)
}

/// `PR_SET_NO_NEW_PRIVS`: no execve can ever grant privileges again.
pub fn no_new_privs(host: &mut impl Host) -> Result<(), CapabilityError> {
    host.set_no_new_privs().map_err(CapabilityError::NoNewPrivs)
}
