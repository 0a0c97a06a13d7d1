//! Where phiboxd finds the programs it starts: `/usr/lib/phibox` on the appliance, the directory
//! of phiboxd's own executable in dev mode (cargo puts them side by side).

use std::path::{Path, PathBuf};

/// The appliance's directory of phibox binaries (in the immutable image).
pub const APPLIANCE_DIR: &str = "/usr/lib/phibox";

#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("cannot determine phiboxd's own path")]
    OwnPath(#[source] std::io::Error),
    #[error("{name} was not found at {path} (build the workspace first: cargo build)")]
    Missing { name: &'static str, path: PathBuf },
}

/// The helper programs phiboxd runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programs {
    /// The sandbox launcher.
    pub jail: PathBuf,
    /// The program run confined as the worker.
    pub worker: PathBuf,
}

impl Programs {
    /// The programs in `dir`.
    pub fn in_dir(dir: &Path, worker_name: &'static str) -> Result<Programs, ProgramError> {
        let find = |name: &'static str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(ProgramError::Missing { name, path })
            }
        };
        Ok(Programs {
            jail: find("phibox-jail")?,
            worker: find(worker_name)?,
        })
    }

    /// The programs next to the running executable (dev mode).
    pub fn beside_self(worker_name: &'static str) -> Result<Programs, ProgramError> {
        let exe = std::env::current_exe().map_err(ProgramError::OwnPath)?;
        let dir = exe.parent().unwrap_or(Path::new("/"));
        Programs::in_dir(dir, worker_name)
    }
}
