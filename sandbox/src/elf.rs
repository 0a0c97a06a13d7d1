//! Finds the shared libraries a program needs by reading its ELF headers (interpreter,
//! DT_NEEDED, RUNPATH) the way the dynamic loader searches, without running anything. The
//! result is the exact set of files bound into the child's root.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use goblin::elf::Elf;

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid ELF file")]
    Parse {
        path: PathBuf,
        #[source]
        source: goblin::error::Error,
    },
    #[error("library {name} needed by {needed_by} was not found in {searched:?}")]
    NotFound {
        name: String,
        needed_by: PathBuf,
        searched: Vec<PathBuf>,
    },
}

/// Where the loader looks when neither RUNPATH nor the cache names a library.
fn default_dirs() -> Vec<PathBuf> {
    let triple = if cfg!(target_arch = "x86_64") {
        "x86_64-linux-gnu"
    } else {
        "aarch64-linux-gnu"
    };
    [
        format!("/lib/{triple}"),
        format!("/usr/lib/{triple}"),
        "/lib64".into(),
        "/usr/lib64".into(),
        "/lib".into(),
        "/usr/lib".into(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// The program's dependencies: its ELF interpreter (if dynamic) and every library reachable
/// through DT_NEEDED, as host paths (possibly through symlinks).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dependencies {
    pub interpreter: Option<PathBuf>,
    pub libraries: BTreeSet<PathBuf>,
}

pub fn dependencies(program: &Path) -> Result<Dependencies, ElfError> {
    let mut deps = Dependencies::default();
    let mut queue = vec![program.to_path_buf()];
    let mut seen_names = BTreeSet::new();
    let mut first = true;
    while let Some(path) = queue.pop() {
        let bytes = std::fs::read(&path).map_err(|source| ElfError::Read {
            path: path.clone(),
            source,
        })?;
        let elf = Elf::parse(&bytes).map_err(|source| ElfError::Parse {
            path: path.clone(),
            source,
        })?;
        if first {
            deps.interpreter = elf.interpreter.map(PathBuf::from);
            first = false;
        }
        let origin = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut dirs: Vec<PathBuf> = elf
            .runpaths
            .iter()
            .chain(elf.rpaths.iter())
            .flat_map(|r| r.split(':'))
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d.replace("$ORIGIN", &origin.to_string_lossy())))
            .collect();
        dirs.extend(default_dirs());
        for name in &elf.libraries {
            if !seen_names.insert(name.to_string()) {
                continue;
            }
            let found = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
            match found {
                Some(lib) => {
                    deps.libraries.insert(lib.clone());
                    queue.push(lib);
                }
                None => {
                    return Err(ElfError::NotFound {
                        name: name.to_string(),
                        needed_by: path.clone(),
                        searched: dirs,
                    })
                }
            }
        }
    }
    Ok(deps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_program_needs_libc_and_an_interpreter() {
        let deps = dependencies(Path::new("/bin/sh")).unwrap();
        assert!(deps.interpreter.is_some());
        assert!(
            deps.libraries.iter().any(|l| l
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libc.so")),
            "{deps:?}"
        );
    }

    #[test]
    fn a_non_elf_file_is_refused() {
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), b"#!/bin/sh\n").unwrap();
        assert!(matches!(
            dependencies(t.path()),
            Err(ElfError::Parse { .. })
        ));
    }
}
