//! The append-only file attribute (`chattr +a`) on closed segments: even root must first clear
//! it (itself a visible act) before a segment can be changed, renamed or deleted. It is set with
//! e2fsprogs' `chattr`, the tool the setup guide uses, because setting it directly is an ioctl
//! (`FS_IOC_SETFLAGS`) that needs unsafe code, which this crate forbids.

use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Set,
    /// The filesystem has no such attribute (tmpfs, vfat…); the segment is read-only only.
    Unsupported,
}

#[derive(Debug, thiserror::Error)]
pub enum AttrError {
    #[error("running chattr on {path}: {reason}")]
    Chattr { path: String, reason: String },
}

fn chattr(flag: &str, path: &Path) -> Result<Outcome, AttrError> {
    let out = Command::new("chattr")
        .arg(flag)
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| AttrError::Chattr {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(Outcome::Set);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Operation not supported") || err.contains("Inappropriate ioctl") {
        return Ok(Outcome::Unsupported);
    }
    Err(AttrError::Chattr {
        path: path.display().to_string(),
        reason: err.trim().to_owned(),
    })
}

/// Sets the append-only attribute.
pub fn set_append_only(path: &Path) -> Result<Outcome, AttrError> {
    chattr("+a", path)
}

/// Clears it (only the audited export does this, right before removing an exported segment).
pub fn clear_append_only(path: &Path) -> Result<Outcome, AttrError> {
    chattr("-a", path)
}
