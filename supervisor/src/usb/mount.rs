//! Mounting a stick's partition read-only with `nosuid,nodev,noexec,noatime` in a private
//! directory, and unmounting it. Behind a trait so the watcher's decisions are tested with a
//! fake that records what would have been mounted.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// File systems a stick may carry, tried in this order.
pub const FILESYSTEMS: &[&str] = &["vfat", "exfat", "ext4"];

/// Why a partition was not mounted.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{device} holds no vfat, exfat or ext4 file system this kernel can mount")]
    NoFilesystem { device: PathBuf },
    #[error("mounting {device} on {target}")]
    Mount {
        device: PathBuf,
        target: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("preparing the mount point {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unmounting {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
}

/// Mounts and unmounts.
pub trait Mounter: Send + Sync {
    /// Mounts `device` read-only on `target`; returns the file system type.
    fn mount(&self, device: &Path, target: &Path) -> Result<&'static str, MountError>;
    /// Unmounts `target` (lazily when `detach`: the stick is gone).
    fn unmount(&self, target: &Path, detach: bool) -> Result<(), MountError>;
}

/// The flags every stick is mounted with.
pub fn flags() -> MsFlags {
    MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC
        | MsFlags::MS_NOATIME
}

/// The kernel's mount(2).
#[derive(Debug, Default)]
pub struct KernelMounter;

impl Mounter for KernelMounter {
    fn mount(&self, device: &Path, target: &Path) -> Result<&'static str, MountError> {
        for fs in FILESYSTEMS {
            // vfat/exfat: files owned by root, not readable by others, no device nodes.
            let data = match *fs {
                "vfat" | "exfat" => Some("uid=0,gid=0,umask=077"),
                _ => None,
            };
            match mount(Some(device), target, Some(*fs), flags(), data) {
                Ok(()) => return Ok(fs),
                // Not this file system, or the kernel lacks it: try the next one.
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENODEV) => continue,
                Err(source) => {
                    return Err(MountError::Mount {
                        device: device.to_owned(),
                        target: target.to_owned(),
                        source,
                    })
                }
            }
        }
        Err(MountError::NoFilesystem {
            device: device.to_owned(),
        })
    }

    fn unmount(&self, target: &Path, detach: bool) -> Result<(), MountError> {
        let flags = if detach {
            MntFlags::MNT_DETACH
        } else {
            MntFlags::empty()
        };
        umount2(target, flags).map_err(|source| MountError::Unmount {
            target: target.to_owned(),
            source,
        })
    }
}

/// Creates the private directory that holds mount points (0700, owned by root).
pub fn private_dir(path: &Path) -> Result<(), MountError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir_err = |source| MountError::Dir {
        path: path.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(dir_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(dir_err)
}
