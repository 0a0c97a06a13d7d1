//! Installing a bundle from a directory (on a mounted stick), in the order that keeps an
//! attacker's bytes away from every parser until they are known to be signed:
//!
//! 1. read `manifest.toml` once, capped; read its signature; check it against the trusted keys;
//! 2. only then parse the manifest, and check that its signer is the key that signed it;
//! 3. rollback protection against the store;
//! 4. copy each file into staging, hashing what is written, capped at its manifest size;
//! 5. check the staged files are GGUF and match the signed model facts.
//!
//! The caller then probe-loads the staged model in the confined worker and, if it serves,
//! calls [`Prepared::activate`]. Any error drops the staging directory.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::copy::{copy_hashed, CopyError};
use super::keys::{KeyId, SignatureError, TrustedKeys};
use super::manifest::{Manifest, ManifestError, MANIFEST_FILE, MAX_MANIFEST_BYTES, SIGNATURE_FILE};
use super::source::{BundleDir, OpenError};
use super::store::{ActivationStep, Decision, Installed, Staging, Store, StoreError};
use crate::gguf::{read_header, HeaderError};

/// Free space kept on the data volume beyond the model (the audit trail and transcripts live
/// there too).
pub const SPACE_RESERVE: u64 = 1 << 30;

/// Why a bundle was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the bundle directory {path} {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: OpenError,
    },
    #[error("the bundle has no manifest.toml")]
    NoManifest,
    #[error("the bundle is not signed: manifest.toml.minisig is missing")]
    Unsigned,
    #[error("manifest.toml is larger than {MAX_MANIFEST_BYTES} bytes")]
    ManifestTooLarge,
    #[error("{name} {source}")]
    BundleFile {
        name: &'static str,
        #[source]
        source: OpenError,
    },
    #[error(transparent)]
    Signature(SignatureError),
    #[error(transparent)]
    Manifest(ManifestError),
    #[error("the manifest names signer {claimed} but key {actual} signed it")]
    SignerMismatch { claimed: String, actual: KeyId },
    #[error("{name} sequence {offered} is older than sequence {highest}, installed before: rollback refused")]
    Rollback {
        name: String,
        offered: u64,
        highest: u64,
    },
    #[error("not enough space on the data volume: {need} bytes needed, {free} free")]
    NoSpace { need: u64, free: u64 },
    #[error("{path} {source}")]
    File {
        path: String,
        #[source]
        source: OpenError,
    },
    #[error("{path} is shorter than the manifest says ({got} of {expected} bytes)")]
    Truncated {
        path: String,
        expected: u64,
        got: u64,
    },
    #[error("{path} is longer than the manifest says ({expected} bytes)")]
    TooLong { path: String, expected: u64 },
    #[error("{path} does not match its SHA-256 in the manifest")]
    HashMismatch { path: String },
    #[error("{path} could not be read from the stick")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable GGUF model")]
    NotGguf {
        path: String,
        #[source]
        source: HeaderError,
    },
    #[error("the model does not match the signed facts: {0}")]
    Facts(String),
    #[error("the model store")]
    Store(#[source] StoreError),
}

impl InstallError {
    /// The stable name of the refusal, used in audit records and in docs/bundles.md.
    pub fn reason(&self) -> &'static str {
        match self {
            InstallError::Open { .. } => "no_bundle",
            InstallError::NoManifest => "no_manifest",
            InstallError::Unsigned => "unsigned",
            InstallError::ManifestTooLarge => "manifest_too_large",
            InstallError::BundleFile { source, .. } => source.reason(),
            InstallError::Signature(SignatureError::UnknownKey(_)) => "unknown_key",
            InstallError::Signature(SignatureError::Invalid) => "bad_signature",
            InstallError::Signature(SignatureError::Legacy) => "legacy_signature",
            InstallError::Signature(_) => "malformed_signature",
            InstallError::Manifest(ManifestError::Syntax(_) | ManifestError::Encoding) => {
                "malformed_manifest"
            }
            InstallError::Manifest(ManifestError::Path(_)) => "bad_path",
            InstallError::Manifest(_) => "invalid_manifest",
            InstallError::SignerMismatch { .. } => "signer_mismatch",
            InstallError::Rollback { .. } => "rollback",
            InstallError::NoSpace { .. } => "no_space",
            InstallError::File { source, .. } => source.reason(),
            InstallError::Truncated { .. } => "truncated",
            InstallError::TooLong { .. } => "too_long",
            InstallError::HashMismatch { .. } => "hash_mismatch",
            InstallError::Read { .. } => "read_error",
            InstallError::NotGguf { .. } => "not_gguf",
            InstallError::Facts(_) => "facts_mismatch",
            InstallError::Store(_) => "store_error",
        }
    }
}

impl From<StoreError> for InstallError {
    fn from(e: StoreError) -> Self {
        InstallError::Store(e)
    }
}

/// Points of an install, reported to the caller (progress, journal, the power-loss test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The signature is good and the manifest parsed.
    Verified,
    /// A staging directory exists.
    Staged,
    /// File `n` (0-based) is copied, verified and fsynced.
    Copied(usize),
    /// The staged files are GGUF and match the facts.
    Checked,
    Activation(ActivationStep),
}

/// What the caller hears during an install.
pub trait Observer {
    fn step(&mut self, _step: Step) {}
    /// Bytes of all files copied so far, of `total`.
    fn progress(&mut self, _done: u64, _total: u64) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;
impl Observer for Quiet {}

/// The result of [`prepare`].
#[derive(Debug)]
pub enum Prepared {
    /// Staged and checked, waiting for the probe and activation.
    Staged(Staged),
    /// This name and sequence is already active: nothing was copied.
    AlreadyActive { manifest: Manifest, signer: KeyId },
}

/// A verified copy in staging.
#[derive(Debug)]
pub struct Staged {
    pub manifest: Manifest,
    pub signer: KeyId,
    manifest_bytes: Vec<u8>,
    signature: Vec<u8>,
    staging: Staging,
}

impl Staged {
    /// The staged file the worker loads (for the probe).
    pub fn primary(&self) -> PathBuf {
        self.staging.dir().join(&self.manifest.files[0].path)
    }

    /// The staging directory (shards lie next to the primary file).
    pub fn dir(&self) -> &Path {
        self.staging.dir()
    }

    /// Makes the staged version the active one.
    pub fn activate(
        self,
        store: &Store,
        observer: &mut dyn Observer,
    ) -> Result<Installed, InstallError> {
        Ok(store.activate(
            self.staging,
            &self.manifest,
            &self.manifest_bytes,
            &self.signature,
            &mut |s| observer.step(Step::Activation(s)),
        )?)
    }
}

fn read_bundle_file(
    dir: &BundleDir,
    name: &'static str,
    cap: u64,
) -> Result<Vec<u8>, InstallError> {
    dir.read_capped(name, cap)
        .map_err(|source| InstallError::BundleFile { name, source })
}

/// Reads and checks the signed manifest of the bundle in `dir` (steps 1–2).
pub fn verify(
    dir: &BundleDir,
    keys: &TrustedKeys,
) -> Result<(Manifest, KeyId, Vec<u8>, Vec<u8>), InstallError> {
    let manifest_bytes = match read_bundle_file(dir, MANIFEST_FILE, MAX_MANIFEST_BYTES) {
        Err(InstallError::BundleFile {
            source: OpenError::Missing,
            ..
        }) => return Err(InstallError::NoManifest),
        Err(InstallError::BundleFile {
            source: OpenError::TooLarge(_),
            ..
        }) => return Err(InstallError::ManifestTooLarge),
        other => other?,
    };
    let signature =
        match read_bundle_file(dir, SIGNATURE_FILE, super::keys::MAX_SIGNATURE_BYTES as u64) {
            Err(InstallError::BundleFile {
                source: OpenError::Missing,
                ..
            }) => return Err(InstallError::Unsigned),
            Err(InstallError::BundleFile {
                source: OpenError::TooLarge(_),
                ..
            }) => return Err(InstallError::Signature(SignatureError::TooLarge)),
            other => other?,
        };
    let signer = keys
        .verify(&manifest_bytes, &signature)
        .map_err(InstallError::Signature)?;
    let manifest = Manifest::parse(&manifest_bytes).map_err(InstallError::Manifest)?;
    if !manifest.signer.eq_ignore_ascii_case(&signer.to_string()) {
        return Err(InstallError::SignerMismatch {
            claimed: manifest.signer,
            actual: signer,
        });
    }
    Ok((manifest, signer, manifest_bytes, signature))
}

fn free_space(path: &Path) -> Result<u64, InstallError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| {
        InstallError::Store(StoreError::Io {
            op: "measuring free space of",
            path: path.to_owned(),
            source: e.into(),
        })
    })?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// Verifies the bundle in `bundle` and copies it into staging (steps 1–5).
pub fn prepare(
    store: &Store,
    keys: &TrustedKeys,
    bundle: &Path,
    observer: &mut dyn Observer,
) -> Result<Prepared, InstallError> {
    let dir = BundleDir::open(bundle).map_err(|source| InstallError::Open {
        path: bundle.to_owned(),
        source,
    })?;
    let (manifest, signer, manifest_bytes, signature) = verify(&dir, keys)?;
    observer.step(Step::Verified);
    match store.decide(&manifest)? {
        Decision::AlreadyActive => return Ok(Prepared::AlreadyActive { manifest, signer }),
        Decision::Rollback { highest } => {
            return Err(InstallError::Rollback {
                name: manifest.name,
                offered: manifest.sequence,
                highest,
            })
        }
        Decision::Install => {}
    }
    let total = manifest.total_size();
    let need = total.saturating_add(SPACE_RESERVE);
    let free = free_space(store.root())?;
    if free < need {
        return Err(InstallError::NoSpace { need, free });
    }
    let staging = store.stage()?;
    observer.step(Step::Staged);
    let mut done = 0u64;
    for (i, entry) in manifest.files.iter().enumerate() {
        let target = staging.dir().join(&entry.path);
        let store_io = |op, source| {
            InstallError::Store(StoreError::Io {
                op,
                path: target.clone(),
                source,
            })
        };
        let mut dst = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&target)
            .map_err(|e| store_io("creating", e))?;
        copy_entry(&dir, entry, &mut dst, &mut |n| {
            observer.progress(done + n, total)
        })
        .map_err(|e| match e {
            CopyFailure::Install(e) => e,
            CopyFailure::Write(e) => store_io("writing", e),
        })?;
        dst.sync_all().map_err(|e| store_io("syncing", e))?;
        done += entry.size;
        observer.step(Step::Copied(i));
    }
    super::store::sync_dir(staging.dir())?;
    check_model(&manifest, |name| {
        std::fs::File::open(staging.dir().join(name)).map_err(HeaderError::Io)
    })?;
    observer.step(Step::Checked);
    Ok(Prepared::Staged(Staged {
        manifest,
        signer,
        manifest_bytes,
        signature,
        staging,
    }))
}

enum CopyFailure {
    Install(InstallError),
    Write(std::io::Error),
}

/// Copies one manifest entry from the stick to `dst`, checking size and SHA-256.
fn copy_entry(
    dir: &BundleDir,
    entry: &super::manifest::FileEntry,
    dst: &mut (dyn std::io::Write + Send),
    progress: &mut dyn FnMut(u64),
) -> Result<(), CopyFailure> {
    let path = || entry.path.clone();
    let fail = |e| CopyFailure::Install(e);
    let mut src = dir.open_file(&entry.path).map_err(|source| {
        fail(InstallError::File {
            path: path(),
            source,
        })
    })?;
    let digest = copy_hashed(&mut src, dst, entry.size, progress).map_err(|e| match e {
        CopyError::Truncated { expected, got } => fail(InstallError::Truncated {
            path: path(),
            expected,
            got,
        }),
        CopyError::TooLong { expected } => fail(InstallError::TooLong {
            path: path(),
            expected,
        }),
        CopyError::Read(source) => fail(InstallError::Read {
            path: path(),
            source,
        }),
        CopyError::Write(e) => CopyFailure::Write(e),
    })?;
    if hex::encode(digest) != entry.sha256 {
        return Err(fail(InstallError::HashMismatch { path: path() }));
    }
    Ok(())
}

/// Checks a bundle completely without installing it (`phibox bundle verify`): signature,
/// manifest, every file's size and hash, and the GGUF facts.
pub fn check_bundle(
    bundle: &Path,
    keys: &TrustedKeys,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Manifest, KeyId), InstallError> {
    let dir = BundleDir::open(bundle).map_err(|source| InstallError::Open {
        path: bundle.to_owned(),
        source,
    })?;
    let (manifest, signer, ..) = verify(&dir, keys)?;
    let total = manifest.total_size();
    let mut done = 0u64;
    for entry in &manifest.files {
        copy_entry(&dir, entry, &mut std::io::sink(), &mut |n| {
            progress(done + n, total)
        })
        .map_err(|e| match e {
            CopyFailure::Install(e) => e,
            CopyFailure::Write(source) => InstallError::Read {
                path: entry.path.clone(),
                source,
            },
        })?;
        done += entry.size;
    }
    check_model(&manifest, |name| {
        dir.open_file(name).map_err(|e| match e {
            OpenError::Io(e) => HeaderError::Io(e),
            other => HeaderError::Io(std::io::Error::other(other.to_string())),
        })
    })?;
    Ok((manifest, signer))
}

/// The staged files are GGUF, numbered as shards of one model when there are several, and
/// say what the signed manifest says.
fn check_model(
    manifest: &Manifest,
    open: impl Fn(&str) -> Result<std::fs::File, HeaderError>,
) -> Result<(), InstallError> {
    let count = manifest.files.len() as u64;
    let mut parameters = 0u64;
    let mut first = None;
    for (i, entry) in manifest.files.iter().enumerate() {
        let not_gguf = |source| InstallError::NotGguf {
            path: entry.path.clone(),
            source,
        };
        let f = open(&entry.path).map_err(not_gguf)?;
        let h = read_header(std::io::BufReader::new(f)).map_err(not_gguf)?;
        let expected_split = (count > 1).then_some((i as u64, count));
        if h.split != expected_split {
            return Err(InstallError::Facts(format!(
                "{} is not shard {} of {count}",
                entry.path,
                i + 1
            )));
        }
        parameters = parameters.saturating_add(h.parameters);
        if i == 0 {
            first = Some(h);
        }
    }
    let h = first.expect("a manifest has at least one file");
    let facts = &manifest.model;
    let mut wrong = Vec::new();
    if h.architecture.as_deref() != Some(facts.architecture.as_str()) {
        wrong.push("architecture");
    }
    if h.quantization.as_deref() != Some(facts.quantization.as_str()) {
        wrong.push("quantization");
    }
    if h.context_length != Some(facts.context_length) {
        wrong.push("context length");
    }
    if parameters != facts.parameters {
        wrong.push("parameter count");
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(InstallError::Facts(wrong.join(", ")))
    }
}

/// Facts of a model made of `files` (in shard order), as `create` writes them.
pub fn facts_of(files: &[PathBuf]) -> Result<super::manifest::Facts, InstallError> {
    let mut parameters = 0u64;
    let mut first = None;
    for path in files {
        let shown = path.display().to_string();
        let not_gguf = |source| InstallError::NotGguf {
            path: shown.clone(),
            source,
        };
        let f = std::fs::File::open(path).map_err(|e| not_gguf(HeaderError::Io(e)))?;
        let h = read_header(std::io::BufReader::new(f)).map_err(not_gguf)?;
        parameters = parameters.saturating_add(h.parameters);
        first.get_or_insert(h);
    }
    let h = first.ok_or(InstallError::Manifest(ManifestError::NoFiles))?;
    let missing = |what: &str| InstallError::Facts(format!("the GGUF header has no {what}"));
    Ok(super::manifest::Facts {
        architecture: h.architecture.ok_or_else(|| missing("architecture"))?,
        quantization: h.quantization.ok_or_else(|| missing("file type"))?,
        parameters,
        context_length: h.context_length.ok_or_else(|| missing("context length"))?,
    })
}
