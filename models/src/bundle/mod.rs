//! Signed model bundles: the format (`manifest`), minisign keys and the box's trusted set
//! (`keys`), reading a bundle on an untrusted stick (`source`, `copy`), installing it
//! (`install`) into the model store (`store`), and making one on the admin's workstation
//! (`create`, `sign` here). docs/bundles.md is the admin's guide.

pub mod copy;
pub mod install;
pub mod keys;
pub mod manifest;
pub mod source;
pub mod store;

use std::path::{Path, PathBuf};

pub use install::{check_bundle, prepare, InstallError, Observer, Prepared, Quiet, Staged, Step};
pub use keys::{KeyId, TrustedKeys};
pub use manifest::{Facts, FileEntry, Manifest, MANIFEST_FILE, SIGNATURE_FILE};
pub use store::{Installed, Store};

/// Errors of making and signing bundles.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no .gguf files in {0}")]
    NoFiles(PathBuf),
    #[error("{0} is not a plain .gguf file name (letters, digits, '.', '_', '-')")]
    FileName(String),
    #[error("{0} is not a regular file with a single link")]
    NotRegular(PathBuf),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(transparent)]
    Model(InstallError),
    #[error("the manifest names signer {manifest} but this key is {key}")]
    WrongKey { manifest: String, key: KeyId },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// What `create` needs besides the files.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub name: String,
    pub version: String,
    pub sequence: u64,
    /// The key that will sign it.
    pub signer: KeyId,
    /// File names in the bundle directory, primary first; empty: every `*.gguf`, sorted
    /// (gguf-split's `-00001-of-0000N` names sort in shard order).
    pub files: Vec<String>,
}

fn gguf_files(dir: &Path) -> Result<Vec<String>, BundleError> {
    let io = |source| BundleError::Io {
        op: "listing",
        path: dir.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let name = e.map_err(io)?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".gguf") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Hashes the model files in `dir`, reads their facts and writes `dir/manifest.toml` (removing
/// a signature of an earlier manifest, which no longer applies).
pub fn create(dir: &Path, opts: &CreateOptions) -> Result<Manifest, BundleError> {
    use std::os::unix::fs::MetadataExt;
    manifest::check_labels(&opts.name, &opts.version)?;
    let names = if opts.files.is_empty() {
        gguf_files(dir)?
    } else {
        opts.files.clone()
    };
    if names.is_empty() {
        return Err(BundleError::NoFiles(dir.to_owned()));
    }
    let mut files = Vec::new();
    let mut paths = Vec::new();
    for name in names {
        if !manifest::valid_file_name(&name) {
            return Err(BundleError::FileName(name));
        }
        let path = dir.join(&name);
        let io = |op| {
            let path = path.clone();
            move |source| BundleError::Io { op, path, source }
        };
        let meta = std::fs::symlink_metadata(&path).map_err(io("reading"))?;
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(BundleError::NotRegular(path));
        }
        let (digest, size) = std::fs::File::open(&path)
            .and_then(|mut f| copy::hash_file(&mut f))
            .map_err(io("reading"))?;
        files.push(FileEntry {
            path: name,
            size,
            sha256: hex::encode(digest),
        });
        paths.push(path);
    }
    let model = install::facts_of(&paths).map_err(BundleError::Model)?;
    let m = Manifest {
        format: manifest::FORMAT,
        name: opts.name.clone(),
        version: opts.version.clone(),
        sequence: opts.sequence,
        created: jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .to_string(),
        signer: opts.signer.to_string(),
        model,
        files,
    };
    m.validate()?;
    match std::fs::remove_file(dir.join(SIGNATURE_FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(BundleError::Io {
                op: "removing the old signature",
                path: dir.join(SIGNATURE_FILE),
                source,
            })
        }
    }
    store::write_durable(dir, MANIFEST_FILE, m.to_toml().as_bytes(), 0o644)?;
    Ok(m)
}

/// The trusted comment of a bundle's signature (shown by `minisign -V`).
pub fn trusted_comment(m: &Manifest) -> String {
    format!(
        "timestamp:{}\tfile:{MANIFEST_FILE}\tbundle:{} {} sequence {}",
        jiff::Timestamp::now().as_second(),
        m.name,
        m.version,
        m.sequence
    )
}

/// Signs `dir/manifest.toml` with `sk`, writing `dir/manifest.toml.minisig`. The manifest must
/// be valid and name this key as its signer.
pub fn sign(dir: &Path, sk: &minisign::SecretKey, key: KeyId) -> Result<Manifest, BundleError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(|source| BundleError::Io {
        op: "reading",
        path: path.clone(),
        source,
    })?;
    let m = Manifest::parse(&bytes)?;
    if !m.signer.eq_ignore_ascii_case(&key.to_string()) {
        return Err(BundleError::WrongKey {
            manifest: m.signer,
            key,
        });
    }
    let sig = keys::sign(sk, &bytes, &trusted_comment(&m))?;
    store::write_durable(dir, SIGNATURE_FILE, sig.as_bytes(), 0o644)?;
    Ok(m)
}
