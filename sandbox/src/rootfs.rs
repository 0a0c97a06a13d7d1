//! The child's filesystem view: a fresh tmpfs holding read-only bind mounts of only the planned
//! files, the symlinks and directories leading to them and a private, read-only `/proc`, made the root with
//! pivot_root; the old root is detached and the tmpfs itself remounted read-only.
//!
//! Bind sources are pinned with O_PATH descriptors before the tmpfs is mounted, so that a source
//! under the tmpfs's mount point (e.g. a model in `/tmp`) stays reachable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::host::Host;
use crate::plan::{FileKind, Plan, RootEntry};

/// Where the new root is assembled (inside the child's private mount namespace only).
pub const STAGING: &str = "/tmp";
const OLD_ROOT: &str = ".oldroot";

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("making the mount tree private")]
    MakePrivate(#[source] std::io::Error),
    #[error("pinning bind source {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting the root tmpfs")]
    Tmpfs(#[source] std::io::Error),
    #[error("creating {path} in the new root")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bind-mounting {source_path} at {path}")]
    Bind {
        source_path: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making {path} read-only")]
    Remount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pivot_root into the new root")]
    PivotRoot(#[source] std::io::Error),
    #[error("detaching the old root")]
    DetachOldRoot(#[source] std::io::Error),
    #[error("mounting the private /proc")]
    Proc(#[source] std::io::Error),
    #[error("making the new root read-only")]
    RootReadOnly(#[source] std::io::Error),
}

fn inside(base: &Path, path: &Path) -> PathBuf {
    base.join(path.strip_prefix("/").unwrap_or(path))
}

/// Mount flags of a bind after its read-only remount.
pub fn bind_flags(kind: FileKind) -> MsFlags {
    let mut flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID;
    if kind != FileKind::Device {
        flags |= MsFlags::MS_NODEV;
    }
    if matches!(kind, FileKind::Data | FileKind::Device) {
        flags |= MsFlags::MS_NOEXEC;
    }
    flags
}

/// Builds the root described by `plan.root` and pivots into it.
pub fn build(plan: &Plan, host: &mut impl Host) -> Result<(), RootfsError> {
    let staging = Path::new(STAGING);
    host.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(RootfsError::MakePrivate)?;

    let mut pinned: BTreeMap<&Path, PathBuf> = BTreeMap::new();
    for e in &plan.root {
        if let RootEntry::File { source, .. } = e {
            if !pinned.contains_key(source.as_path()) {
                let p = host.pin_source(source).map_err(|s| RootfsError::Pin {
                    path: source.clone(),
                    source: s,
                })?;
                pinned.insert(source, p);
            }
        }
    }

    host.mount(
        Some(Path::new("tmpfs")),
        staging,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=1m,nr_inodes=4096"),
    )
    .map_err(RootfsError::Tmpfs)?;

    for e in &plan.root {
        let target = inside(staging, e.path());
        let create = |s| RootfsError::Create {
            path: e.path().to_path_buf(),
            source: s,
        };
        match e {
            RootEntry::Dir { .. } => host.mkdir(&target).map_err(create)?,
            RootEntry::Symlink { target: to, .. } => host.symlink(to, &target).map_err(create)?,
            RootEntry::File { source, path, kind } => {
                host.create_file(&target).map_err(create)?;
                let pin = &pinned[source.as_path()];
                host.mount(Some(pin), &target, None, MsFlags::MS_BIND, None)
                    .map_err(|s| RootfsError::Bind {
                        source_path: source.clone(),
                        path: path.clone(),
                        source: s,
                    })?;
                host.mount(None, &target, None, bind_flags(*kind), None)
                    .map_err(|s| RootfsError::Remount {
                        path: path.clone(),
                        source: s,
                    })?;
            }
        }
    }

    let old = staging.join(OLD_ROOT);
    host.mkdir(&old).map_err(|s| RootfsError::Create {
        path: PathBuf::from("/").join(OLD_ROOT),
        source: s,
    })?;
    host.pivot_root(staging, &old)
        .map_err(RootfsError::PivotRoot)?;
    host.chdir(Path::new("/")).map_err(RootfsError::PivotRoot)?;
    let old_in_new = Path::new("/").join(OLD_ROOT);
    host.umount(&old_in_new, MntFlags::MNT_DETACH)
        .map_err(RootfsError::DetachOldRoot)?;
    host.rmdir(&old_in_new)
        .map_err(RootfsError::DetachOldRoot)?;
    host.release_sources();

    host.mount(
        Some(Path::new("proc")),
        Path::new("/proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        None,
    )
    .map_err(RootfsError::Proc)?;

    host.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None,
    )
    .map_err(RootfsError::RootReadOnly)
}
