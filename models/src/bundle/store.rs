//! The model store on the data volume (`/var/lib/phibox/models`):
//!
//! ```text
//! state.toml            active version and the highest sequence seen per model name
//! versions/NAME@SEQ/    an installed version: its files, manifest.toml, manifest.toml.minisig
//! staging/XXXX/         an install in progress (removed when the store is opened)
//! ```
//!
//! Activation is one atomic step: `state.toml` is written to a temporary file, fsynced,
//! renamed over the old one and the directory fsynced (Bottlerocket's migrator pattern). A
//! version directory is complete before it is renamed into `versions/`; anything that
//! `state.toml` does not name is a leftover and is removed at the next start, so a power cut at
//! any point leaves the old model or the new one, never half of one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::copy::hash_file;
use super::manifest::{Manifest, MANIFEST_FILE};

const STATE_FILE: &str = "state.toml";
const VERSIONS: &str = "versions";
const STAGING: &str = "staging";

/// Errors of the store itself (the data volume), as opposed to refusals of a bundle.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    /// `NAME@SEQ` of the version the worker loads.
    active: Option<String>,
    /// The highest sequence ever activated per model name: rollback protection outlives the
    /// removal of old versions and switches between models.
    #[serde(default)]
    highest: BTreeMap<String, u64>,
}

/// An installed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Installed {
    /// The file the worker loads (shards lie next to it).
    pub fn primary(&self) -> PathBuf {
        self.dir.join(&self.manifest.files[0].path)
    }
}

/// What to do with a verified manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Install,
    /// This name and sequence is already the active model: nothing to do.
    AlreadyActive,
    /// A higher sequence of this name was activated before.
    Rollback {
        highest: u64,
    },
}

/// What opening the store cleaned up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub removed_staging: Vec<String>,
    pub removed_versions: Vec<String>,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A staging directory; removed when dropped unless it was activated.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    keep: bool,
}

impl Staging {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// fsync of a directory, so that a rename or a new entry in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

/// Writes `bytes` to `dir/name` durably: temporary file, fsync, rename, fsync of `dir`.
pub fn write_durable(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("renaming", &tmp))?;
    sync_dir(dir)
}

fn mkdir(path: &Path) -> Result<(), StoreError> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("creating", path)(e)),
    }
}

fn entries(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io("listing", dir))? {
        let e = e.map_err(io("listing", dir))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn remove(path: &Path) -> Result<(), StoreError> {
    let r = if path.is_dir() && !path.is_symlink() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    r.map_err(io("removing", path))
}

impl Store {
    /// Opens (creating) the store at `root` and removes what an interrupted install left:
    /// everything in `staging/` and every version `state.toml` does not name.
    pub fn open(root: &Path) -> Result<(Store, Recovery), StoreError> {
        mkdir(root)?;
        let store = Store {
            root: root.to_owned(),
        };
        mkdir(&store.versions())?;
        mkdir(&store.staging())?;
        let mut recovery = Recovery::default();
        for name in entries(&store.staging())? {
            remove(&store.staging().join(&name))?;
            recovery.removed_staging.push(name);
        }
        let _ = std::fs::remove_file(root.join(format!(".{STATE_FILE}.tmp")));
        recovery.removed_versions = store.remove_inactive()?;
        if !recovery.removed_staging.is_empty() {
            sync_dir(&store.staging())?;
        }
        Ok((store, recovery))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn versions(&self) -> PathBuf {
        self.root.join(VERSIONS)
    }

    fn staging(&self) -> PathBuf {
        self.root.join(STAGING)
    }

    fn state(&self) -> Result<State, StoreError> {
        let path = self.root.join(STATE_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| StoreError::Damaged {
                path,
                reason: e.message().to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// The active version, if any.
    pub fn active(&self) -> Result<Option<Installed>, StoreError> {
        let Some(label) = self.state()?.active else {
            return Ok(None);
        };
        let dir = self.versions().join(&label);
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
        let manifest = Manifest::parse(&bytes).map_err(|e| StoreError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if manifest.label() != label {
            return Err(StoreError::Damaged {
                path,
                reason: format!("it describes {}, not {label}", manifest.label()),
            });
        }
        Ok(Some(Installed { dir, manifest }))
    }

    /// The highest sequence activated for `name`.
    pub fn highest(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.state()?.highest.get(name).copied())
    }

    /// Rollback protection: what to do with a verified manifest.
    pub fn decide(&self, m: &Manifest) -> Result<Decision, StoreError> {
        let state = self.state()?;
        if state.active.as_deref() == Some(m.label().as_str()) {
            return Ok(Decision::AlreadyActive);
        }
        match state.highest.get(&m.name) {
            Some(&highest) if m.sequence < highest => Ok(Decision::Rollback { highest }),
            _ => Ok(Decision::Install),
        }
    }

    /// A new, empty staging directory.
    pub fn stage(&self) -> Result<Staging, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix("install-")
            .tempdir_in(self.staging())
            .map_err(io("creating a directory in", &self.staging()))?
            .keep();
        Ok(Staging { dir, keep: false })
    }

    /// Makes the staged version (its files written and fsynced; `manifest` and `signature` the
    /// exact verified bytes) the active one. `step` is called after each durable step.
    pub fn activate(
        &self,
        mut staging: Staging,
        manifest: &Manifest,
        manifest_bytes: &[u8],
        signature: &[u8],
        step: &mut dyn FnMut(ActivationStep),
    ) -> Result<Installed, StoreError> {
        use super::manifest::SIGNATURE_FILE;
        write_durable(&staging.dir, MANIFEST_FILE, manifest_bytes, 0o644)?;
        write_durable(&staging.dir, SIGNATURE_FILE, signature, 0o644)?;
        step(ActivationStep::Sealed);
        let label = manifest.label();
        let target = self.versions().join(&label);
        if target.exists() {
            // A leftover of an interrupted install of the same version (never the active one:
            // `decide` said so).
            remove(&target)?;
        }
        std::fs::rename(&staging.dir, &target).map_err(io("moving into place", &target))?;
        staging.keep = true;
        sync_dir(&self.versions())?;
        sync_dir(&self.staging())?;
        step(ActivationStep::Moved);
        let mut state = self.state()?;
        state.active = Some(label);
        let h = state.highest.entry(manifest.name.clone()).or_insert(0);
        *h = (*h).max(manifest.sequence);
        let text = toml::to_string(&state).expect("the state always serialises");
        write_durable(&self.root, STATE_FILE, text.as_bytes(), 0o600)?;
        step(ActivationStep::Activated);
        Ok(Installed {
            dir: target,
            manifest: manifest.clone(),
        })
    }

    /// Removes every version but the active one (after the new model serves, and at start).
    pub fn remove_inactive(&self) -> Result<Vec<String>, StoreError> {
        let active = self.state()?.active;
        let mut removed = Vec::new();
        for name in entries(&self.versions())? {
            if Some(&name) != active.as_ref() {
                remove(&self.versions().join(&name))?;
                removed.push(name);
            }
        }
        if !removed.is_empty() {
            sync_dir(&self.versions())?;
        }
        Ok(removed)
    }

    /// Re-reads every file of the active version and compares it with its manifest.
    pub fn check_active(&self) -> Result<Option<Installed>, StoreError> {
        let Some(installed) = self.active()? else {
            return Ok(None);
        };
        for f in &installed.manifest.files {
            let path = installed.dir.join(&f.path);
            let (digest, len) = File::open(&path)
                .and_then(|mut file| hash_file(&mut file))
                .map_err(io("reading", &path))?;
            if len != f.size || hex::encode(digest) != f.sha256 {
                return Err(StoreError::Damaged {
                    path,
                    reason: "it does not match its manifest".into(),
                });
            }
        }
        Ok(Some(installed))
    }
}

/// Durable points of an activation (for progress and for the power-loss test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationStep {
    /// The manifest and its signature are written into the staged version.
    Sealed,
    /// The version directory is in `versions/`.
    Moved,
    /// `state.toml` names it: the switch happened.
    Activated,
}
