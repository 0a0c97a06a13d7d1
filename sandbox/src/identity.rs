//! Switching to the unprivileged uid/gid with no supplementary groups. The kernel clears the
//! permitted and effective capabilities when a root process changes all its uids to non-zero.

use crate::host::Host;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("clearing supplementary groups")]
    Groups(#[source] std::io::Error),
    #[error("switching to gid {gid}")]
    Gid {
        gid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("switching to uid {uid}")]
    Uid {
        uid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// setgroups([]), setresgid, setresuid: in this order, since each needs the privilege the next
/// one gives up.
pub fn switch(host: &mut impl Host, uid: u32, gid: u32) -> Result<(), IdentityError> {
    host.setgroups_empty().map_err(IdentityError::Groups)?;
    host.setresgid(gid)
        .map_err(|source| IdentityError::Gid { gid, source })?;
    host.setresuid(uid)
        .map_err(|source| IdentityError::Uid { uid, source })
}
