//! The bundle directory on a stick, opened so that nothing on the stick can redirect a read:
//! every file is opened relative to the directory's descriptor with openat2
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`, must be a
//! regular file with one link, and is read with a cap. Manifest names are already single
//! components; the kernel's resolution flags are the second line.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

/// Why a file of the bundle could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("is missing")]
    Missing,
    #[error("is a symbolic link or lies behind one")]
    Symlink,
    #[error("is not a regular file")]
    NotRegular,
    #[error("has {0} hard links")]
    HardLink(u64),
    #[error("is larger than {0} bytes")]
    TooLarge(u64),
    #[error("cannot be opened")]
    Sys(#[source] Errno),
    #[error("cannot be read")]
    Io(#[source] std::io::Error),
}

impl OpenError {
    /// The stable name used in audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::Missing => "missing_file",
            OpenError::Symlink => "symlink",
            OpenError::NotRegular => "not_regular_file",
            OpenError::HardLink(_) => "hardlink",
            OpenError::TooLarge(_) => "file_too_large",
            OpenError::Sys(_) | OpenError::Io(_) => "read_error",
        }
    }
}

/// An open bundle directory.
#[derive(Debug)]
pub struct BundleDir {
    fd: OwnedFd,
    path: PathBuf,
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY)
        .mode(Mode::empty())
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        )
}

fn map_errno(e: Errno) -> OpenError {
    match e {
        Errno::ENOENT => OpenError::Missing,
        Errno::ELOOP => OpenError::Symlink,
        Errno::ENOTDIR | Errno::ENXIO | Errno::ENODEV => OpenError::NotRegular,
        e => OpenError::Sys(e),
    }
}

impl BundleDir {
    /// Opens `path` itself (not following a symlink in its last component).
    pub fn open(path: &Path) -> Result<BundleDir, OpenError> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(map_errno)?;
        Ok(BundleDir {
            fd,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the regular file `name` of this directory for reading.
    pub fn open_file(&self, name: &str) -> Result<File, OpenError> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        let fd =
            openat2(&self.fd, name, how(OFlag::O_RDONLY | OFlag::O_NONBLOCK)).map_err(map_errno)?;
        let st = fstat(&fd).map_err(OpenError::Sys)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(OpenError::NotRegular);
        }
        if st.st_nlink != 1 {
            return Err(OpenError::HardLink(st.st_nlink));
        }
        let file = File::from(fd);
        // Back to blocking reads for a regular file (O_NONBLOCK has no effect on them, but
        // leave nothing surprising behind).
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(OpenError::Sys)?;
        Ok(file)
    }

    /// Reads the whole of `name`, refusing more than `cap` bytes.
    pub fn read_capped(&self, name: &str, cap: u64) -> Result<Vec<u8>, OpenError> {
        let f = self.open_file(name)?;
        let mut b = Vec::new();
        f.take(cap + 1).read_to_end(&mut b).map_err(OpenError::Io)?;
        if b.len() as u64 > cap {
            return Err(OpenError::TooLarge(cap));
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_hardlinks_fifos_and_escapes_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path().join("bundle");
        std::fs::create_dir(&b).unwrap();
        std::fs::write(t.path().join("outside.gguf"), b"secret").unwrap();
        std::fs::write(b.join("ok.gguf"), b"model").unwrap();
        std::os::unix::fs::symlink("../outside.gguf", b.join("link.gguf")).unwrap();
        std::os::unix::fs::symlink("ok.gguf", b.join("inner-link.gguf")).unwrap();
        std::fs::hard_link(t.path().join("outside.gguf"), b.join("hard.gguf")).unwrap();
        std::fs::create_dir(b.join("dir.gguf")).unwrap();
        nix::unistd::mkfifo(&b.join("fifo.gguf"), Mode::S_IRWXU).unwrap();
        let d = BundleDir::open(&b).unwrap();
        assert_eq!(d.read_capped("ok.gguf", 100).unwrap(), b"model");
        assert!(matches!(d.open_file("link.gguf"), Err(OpenError::Symlink)));
        assert!(matches!(
            d.open_file("inner-link.gguf"),
            Err(OpenError::Symlink)
        ));
        assert!(matches!(
            d.open_file("hard.gguf"),
            Err(OpenError::HardLink(2))
        ));
        assert!(matches!(
            d.open_file("dir.gguf"),
            Err(OpenError::NotRegular)
        ));
        assert!(matches!(
            d.open_file("fifo.gguf"),
            Err(OpenError::NotRegular)
        ));
        assert!(matches!(d.open_file("none.gguf"), Err(OpenError::Missing)));
        assert!(matches!(
            d.open_file("../outside.gguf"),
            Err(OpenError::Sys(Errno::EXDEV))
        ));
        assert!(d.open_file("/etc/passwd").is_err());
        assert!(matches!(
            d.read_capped("ok.gguf", 4),
            Err(OpenError::TooLarge(4))
        ));
        // The directory itself may not be a symlink either.
        std::os::unix::fs::symlink(&b, t.path().join("bundle-link")).unwrap();
        assert!(matches!(
            BundleDir::open(&t.path().join("bundle-link")),
            Err(OpenError::Symlink | OpenError::NotRegular)
        ));
    }
}
