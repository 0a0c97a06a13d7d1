//! Turns host paths into root entries: follows symlinks component by component and records
//! each one, so that the loader finds `/lib64/ld-linux-x86-64.so.2` inside the child's root on
//! merged-/usr hosts exactly as it does outside (bind-mounting `/lib` as a directory does not
//! work there), while only the final files are bound.

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::plan::{FileKind, RootEntry};

/// Symlink hops before giving up, as the kernel's own limit.
const MAX_HOPS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("path {0} is not absolute")]
    NotAbsolute(PathBuf),
    #[error("cannot inspect {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("too many symlinks resolving {0}")]
    TooManyLinks(PathBuf),
    #[error("{path} is needed both as {first} and as {second} inside the sandbox")]
    Conflict {
        path: PathBuf,
        first: &'static str,
        second: &'static str,
    },
    #[error("{0} is not a regular file or character device")]
    NotAFile(PathBuf),
}

/// Collects root entries without duplicates, keyed by their path inside the root.
#[derive(Debug, Default)]
pub struct RootBuilder {
    entries: BTreeMap<PathBuf, RootEntry>,
}

fn describe(e: &RootEntry) -> &'static str {
    match e {
        RootEntry::Dir { .. } => "a directory",
        RootEntry::Symlink { .. } => "a symlink",
        RootEntry::File { .. } => "a file",
    }
}

/// Two requests for the same path: identical ones merge, and a file wanted both as a library
/// and as an executable (the ELF interpreter is also libc's DT_NEEDED) keeps the execute right.
fn merge(old: &RootEntry, new: &RootEntry) -> Option<RootEntry> {
    if old == new {
        return Some(old.clone());
    }
    match (old, new) {
        (
            RootEntry::File {
                source,
                path,
                kind: a,
            },
            RootEntry::File {
                source: other,
                kind: b,
                ..
            },
        ) if source == other => {
            let kinds = [*a, *b];
            (kinds.contains(&FileKind::Executable) && kinds.contains(&FileKind::Library)).then(
                || RootEntry::File {
                    source: source.clone(),
                    path: path.clone(),
                    kind: FileKind::Executable,
                },
            )
        }
        _ => None,
    }
}

impl RootBuilder {
    fn insert(&mut self, entry: RootEntry) -> Result<(), ResolveError> {
        let key = entry.path().to_path_buf();
        let merged = match self.entries.get(&key) {
            None => entry,
            Some(old) => merge(old, &entry).ok_or_else(|| ResolveError::Conflict {
                path: key.clone(),
                first: describe(old),
                second: describe(&entry),
            })?,
        };
        self.entries.insert(key, merged);
        Ok(())
    }

    fn add_parents(&mut self, path: &Path) -> Result<(), ResolveError> {
        let mut cur = PathBuf::from("/");
        if let Some(parent) = path.parent() {
            for comp in parent.components().skip(1) {
                cur.push(comp);
                self.insert(RootEntry::Dir { path: cur.clone() })?;
            }
        }
        Ok(())
    }

    /// Adds host file `host_path` at the same path inside the root, recreating every symlink
    /// met on the way. Returns the canonical host path that gets bound.
    pub fn add_host_file(
        &mut self,
        host_path: &Path,
        kind: FileKind,
    ) -> Result<PathBuf, ResolveError> {
        let real = self.walk(host_path)?;
        let meta = std::fs::metadata(&real).map_err(|source| ResolveError::Inspect {
            path: real.clone(),
            source,
        })?;
        use std::os::unix::fs::FileTypeExt;
        let ok = match kind {
            FileKind::Device => meta.file_type().is_char_device(),
            _ => meta.is_file(),
        };
        if !ok {
            return Err(ResolveError::NotAFile(real));
        }
        self.add_parents(&real)?;
        self.insert(RootEntry::File {
            source: real.clone(),
            path: real.clone(),
            kind,
        })?;
        Ok(real)
    }

    /// Adds host file `source` (resolved on the host) at a chosen path inside the root.
    pub fn add_file_at(
        &mut self,
        source: &Path,
        path: &Path,
        kind: FileKind,
    ) -> Result<(), ResolveError> {
        if !path.is_absolute() {
            return Err(ResolveError::NotAbsolute(path.to_path_buf()));
        }
        let real = std::fs::canonicalize(source).map_err(|e| ResolveError::Inspect {
            path: source.to_path_buf(),
            source: e,
        })?;
        let meta = std::fs::metadata(&real).map_err(|e| ResolveError::Inspect {
            path: real.clone(),
            source: e,
        })?;
        if !meta.is_file() {
            return Err(ResolveError::NotAFile(real));
        }
        self.add_parents(path)?;
        self.insert(RootEntry::File {
            source: real,
            path: path.to_path_buf(),
            kind,
        })
    }

    /// Adds an empty directory (a mount point such as `/proc`).
    pub fn add_dir(&mut self, path: &Path) -> Result<(), ResolveError> {
        self.add_parents(path)?;
        self.insert(RootEntry::Dir {
            path: path.to_path_buf(),
        })
    }

    /// Follows `path` component by component, recording symlinks (and their parents) as
    /// root entries; returns the final, symlink-free path.
    fn walk(&mut self, path: &Path) -> Result<PathBuf, ResolveError> {
        if !path.is_absolute() {
            return Err(ResolveError::NotAbsolute(path.to_path_buf()));
        }
        let mut pending: Vec<PathBuf> = path
            .components()
            .rev()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(PathBuf::from(n)),
                Component::ParentDir => Some(PathBuf::from("..")),
                _ => None,
            })
            .collect();
        let mut cur = PathBuf::from("/");
        let mut hops = 0;
        while let Some(comp) = pending.pop() {
            if comp.as_os_str() == ".." {
                cur.pop();
                continue;
            }
            let next = cur.join(&comp);
            let meta =
                std::fs::symlink_metadata(&next).map_err(|source| ResolveError::Inspect {
                    path: next.clone(),
                    source,
                })?;
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(ResolveError::TooManyLinks(path.to_path_buf()));
                }
                let target = std::fs::read_link(&next).map_err(|source| ResolveError::Inspect {
                    path: next.clone(),
                    source,
                })?;
                self.add_parents(&next)?;
                self.insert(RootEntry::Symlink {
                    link: next.clone(),
                    target: target.clone(),
                })?;
                if target.is_absolute() {
                    cur = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(PathBuf::from(n)),
                        Component::ParentDir => pending.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            } else {
                cur = next;
            }
        }
        Ok(cur)
    }

    /// The entries in creation order: every parent before its children.
    pub fn finish(self) -> Vec<RootEntry> {
        // BTreeMap order sorts "/a" before "/a/b", so parents come first.
        self.entries.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinked_directories_are_recreated_and_only_the_file_is_bound() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path();
        std::fs::create_dir_all(base.join("usr/lib/x")).unwrap();
        std::fs::write(base.join("usr/lib/x/ld.so"), b"elf").unwrap();
        symlink("usr/lib", base.join("lib64")).unwrap();
        symlink("x/ld.so", base.join("usr/lib/ld-link")).unwrap();

        let mut b = RootBuilder::default();
        let real = b
            .add_host_file(&base.join("lib64/ld-link"), FileKind::Executable)
            .unwrap();
        assert_eq!(real, base.join("usr/lib/x/ld.so"));
        let entries = b.finish();
        assert!(entries.contains(&RootEntry::Symlink {
            link: base.join("lib64"),
            target: PathBuf::from("usr/lib"),
        }));
        assert!(entries.contains(&RootEntry::Symlink {
            link: base.join("usr/lib/ld-link"),
            target: PathBuf::from("x/ld.so"),
        }));
        let files: Vec<_> = entries
            .iter()
            .filter(|e| matches!(e, RootEntry::File { .. }))
            .collect();
        assert_eq!(files.len(), 1);
        // Parents precede children.
        let pos = |p: &Path| entries.iter().position(|e| e.path() == p).unwrap();
        assert!(pos(&base.join("usr/lib")) < pos(&base.join("usr/lib/x/ld.so")));
    }

    #[test]
    fn a_path_wanted_as_file_and_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        let mut b = RootBuilder::default();
        b.add_host_file(&t.path().join("f"), FileKind::Data)
            .unwrap();
        let err = b.add_dir(&t.path().join("f")).unwrap_err();
        assert!(matches!(err, ResolveError::Conflict { .. }), "{err}");
    }

    #[test]
    fn a_file_needed_as_library_and_executable_keeps_execute() {
        let t = tempfile::NamedTempFile::new().unwrap();
        for order in [
            [FileKind::Library, FileKind::Executable],
            [FileKind::Executable, FileKind::Library],
        ] {
            let mut b = RootBuilder::default();
            for kind in order {
                b.add_host_file(t.path(), kind).unwrap();
            }
            let kinds: Vec<FileKind> = b
                .finish()
                .into_iter()
                .filter_map(|e| match e {
                    RootEntry::File { kind, .. } => Some(kind),
                    _ => None,
                })
                .collect();
            assert_eq!(kinds, [FileKind::Executable]);
        }
    }

    #[test]
    fn directories_are_not_files() {
        let t = tempfile::tempdir().unwrap();
        let mut b = RootBuilder::default();
        let err = b.add_host_file(t.path(), FileKind::Data).unwrap_err();
        assert!(matches!(err, ResolveError::NotAFile(_)), "{err}");
    }

    #[test]
    fn a_symlink_loop_is_reported() {
        let t = tempfile::tempdir().unwrap();
        symlink("b", t.path().join("a")).unwrap();
        symlink("a", t.path().join("b")).unwrap();
        let mut b = RootBuilder::default();
        let err = b
            .add_host_file(&t.path().join("a"), FileKind::Data)
            .unwrap_err();
        assert!(matches!(err, ResolveError::TooManyLinks(_)), "{err}");
    }
}
