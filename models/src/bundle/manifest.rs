//! `manifest.toml`: what a bundle claims — model name, version, monotonic sequence, signer,
//! model facts, and each file with its size and SHA-256. Parsed only after its signature has
//! been checked; still validated strictly, because a trusted key can sign a mistake.

use serde::{Deserialize, Serialize};

/// The manifest's file name in a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.toml";
/// The detached minisign signature of the manifest.
pub const SIGNATURE_FILE: &str = "manifest.toml.minisig";
/// The format this code writes and reads.
pub const FORMAT: u32 = 1;
/// Largest manifest read (a few hundred files fit in far less).
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
/// Most files in one bundle (a 400 GB model in 4 GB shards is 100).
pub const MAX_FILES: usize = 256;
/// Longest model name and version.
const MAX_LABEL: usize = 64;

/// A bundle's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The model's name: the unit of rollback protection (`[a-z0-9][a-z0-9._-]*`).
    pub name: String,
    /// The publisher's version label, for people.
    pub version: String,
    /// Grows with every bundle of this name; the box refuses a lower one.
    pub sequence: u64,
    /// When the manifest was made (RFC 3339).
    pub created: String,
    /// The minisign key id that must have signed it (16 hex digits).
    pub signer: String,
    pub model: Facts,
    /// The model's files; the first is the one the worker loads (shards follow it).
    pub files: Vec<FileEntry>,
}

/// What the model is, as read from its GGUF header when the bundle was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    pub architecture: String,
    pub quantization: String,
    pub parameters: u64,
    pub context_length: u64,
}

/// One file of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// A plain file name in the bundle directory.
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// Why a manifest is refused (after its signature was good).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("the manifest is not UTF-8")]
    Encoding,
    #[error("the manifest is not valid TOML for this format: {0}")]
    Syntax(String),
    #[error("manifest format {0} is not supported (this box reads format {FORMAT})")]
    Format(u32),
    #[error("invalid model name {0:?}")]
    Name(String),
    #[error("invalid version label {0:?}")]
    Version(String),
    #[error("invalid creation time {0:?}")]
    Created(String),
    #[error("invalid signer key id {0:?}")]
    Signer(String),
    #[error("the bundle lists no files")]
    NoFiles,
    #[error("the bundle lists more than {MAX_FILES} files")]
    TooManyFiles,
    #[error("file path {0:?} is not a plain .gguf file name in the bundle directory")]
    Path(String),
    #[error("file {0:?} is listed twice")]
    Duplicate(String),
    #[error("file {0:?} has size 0")]
    Empty(String),
    #[error("file {0:?} has a malformed SHA-256")]
    Digest(String),
    #[error("the model facts are incomplete")]
    Facts,
    #[error("file {0:?} is not named as shard {1} of {2} (PREFIX-{1:05}-of-{2:05}.gguf, as gguf-split names them)")]
    ShardName(String, usize, usize),
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// A file name the installer will open: one path component, no hidden files, `.gguf`.
pub fn valid_file_name(s: &str) -> bool {
    s.len() <= 255
        && s.len() > ".gguf".len()
        && !s.starts_with('.')
        && s.ends_with(".gguf")
        && s.chars().all(is_label_char)
}

fn valid_digest(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// The model name and version label are well-formed.
pub fn check_labels(name: &str, version: &str) -> Result<(), ManifestError> {
    if !valid_name(name) {
        return Err(ManifestError::Name(name.to_string()));
    }
    if version.is_empty() || version.len() > MAX_LABEL || !version.chars().all(is_label_char) {
        return Err(ManifestError::Version(version.to_string()));
    }
    Ok(())
}

impl Manifest {
    /// Parses and validates manifest bytes (already size-capped and signature-checked).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::Encoding)?;
        // The TOML error names a line and a key of the stick's file: no PHI, useful to admins.
        let m: Manifest =
            toml::from_str(text).map_err(|e| ManifestError::Syntax(e.message().to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Checks every field; `create` runs it too, so a bad manifest is never signed.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(ManifestError::Format(self.format));
        }
        check_labels(&self.name, &self.version)?;
        if self.created.parse::<jiff::Timestamp>().is_err() {
            return Err(ManifestError::Created(self.created.clone()));
        }
        if self.signer.len() != 16 || !self.signer.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ManifestError::Signer(self.signer.clone()));
        }
        let f = &self.model;
        if f.architecture.is_empty() || f.quantization.is_empty() || f.parameters == 0 {
            return Err(ManifestError::Facts);
        }
        if self.files.is_empty() {
            return Err(ManifestError::NoFiles);
        }
        if self.files.len() > MAX_FILES {
            return Err(ManifestError::TooManyFiles);
        }
        let mut seen = std::collections::BTreeSet::new();
        for file in &self.files {
            if !valid_file_name(&file.path) {
                return Err(ManifestError::Path(file.path.clone()));
            }
            if !seen.insert(file.path.as_str()) {
                return Err(ManifestError::Duplicate(file.path.clone()));
            }
            if file.size == 0 {
                return Err(ManifestError::Empty(file.path.clone()));
            }
            if !valid_digest(&file.sha256) {
                return Err(ManifestError::Digest(file.path.clone()));
            }
        }
        // Several files are the shards of one model, which llama.cpp finds by these names.
        let count = self.files.len();
        if count > 1 {
            let prefix = crate::gguf::split_file_name(&self.files[0].path).map(|(p, ..)| p);
            for (i, file) in self.files.iter().enumerate() {
                match crate::gguf::split_file_name(&file.path) {
                    Some((p, no, n)) if Some(p) == prefix && no == i + 1 && n == count => {}
                    _ => return Err(ManifestError::ShardName(file.path.clone(), i + 1, count)),
                }
            }
        }
        Ok(())
    }

    /// The manifest as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a manifest always serialises")
    }

    /// Bytes of all files together.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// `name@sequence`, the installed version's directory name.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: FORMAT,
            name: "gemma-3-270m".into(),
            version: "2026.12-1".into(),
            sequence: 3,
            created: "2026-12-01T11:00:00Z".into(),
            signer: "0123456789ABCDEF".into(),
            model: Facts {
                architecture: "gemma3".into(),
                quantization: "Q4_K_M".into(),
                parameters: 268_098_176,
                context_length: 32_768,
            },
            files: vec![FileEntry {
                path: "model.gguf".into(),
                size: 10,
                sha256: "ab".repeat(32),
            }],
        }
    }

    #[test]
    fn a_manifest_round_trips_through_toml() {
        let m = sample();
        assert_eq!(Manifest::parse(m.to_toml().as_bytes()).unwrap(), m);
    }

    #[test]
    fn paths_that_could_leave_the_bundle_are_refused() {
        for bad in [
            "../model.gguf",
            "/etc/model.gguf",
            "a/b.gguf",
            "..gguf",
            ".hidden.gguf",
            "model.bin",
            "mod el.gguf",
            "model.gguf\0",
            "",
            ".gguf",
            "manifest.toml",
        ] {
            let mut m = sample();
            m.files[0].path = bad.into();
            assert_eq!(
                Manifest::parse(m.to_toml().as_bytes()),
                Err(ManifestError::Path(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_field_is_checked() {
        type Edit = fn(&mut Manifest);
        let cases: Vec<(Edit, ManifestError)> = vec![
            (|m| m.format = 2, ManifestError::Format(2)),
            (
                |m| m.name = "Gemma".into(),
                ManifestError::Name("Gemma".into()),
            ),
            (|m| m.name = "-x".into(), ManifestError::Name("-x".into())),
            (
                |m| m.version = "1 0".into(),
                ManifestError::Version("1 0".into()),
            ),
            (
                |m| m.created = "yesterday".into(),
                ManifestError::Created("yesterday".into()),
            ),
            (
                |m| m.signer = "12".into(),
                ManifestError::Signer("12".into()),
            ),
            (|m| m.files.clear(), ManifestError::NoFiles),
            (
                |m| m.files.push(m.files[0].clone()),
                ManifestError::Duplicate("model.gguf".into()),
            ),
            (
                |m| m.files[0].size = 0,
                ManifestError::Empty("model.gguf".into()),
            ),
            (
                |m| m.files[0].sha256 = "AB".repeat(32),
                ManifestError::Digest("model.gguf".into()),
            ),
            (|m| m.model.parameters = 0, ManifestError::Facts),
        ];
        for (edit, want) in cases {
            let mut m = sample();
            edit(&mut m);
            assert_eq!(Manifest::parse(m.to_toml().as_bytes()), Err(want));
        }
    }

    #[test]
    fn malformed_toml_and_unknown_keys_are_refused() {
        assert!(matches!(
            Manifest::parse(b"format = 1\nname = "),
            Err(ManifestError::Syntax(_))
        ));
        let extra = format!("{}\nhook = \"run me\"\n", sample().to_toml());
        // An unknown top-level key after a table lands in that table: refused either way.
        assert!(matches!(
            Manifest::parse(extra.as_bytes()),
            Err(ManifestError::Syntax(_))
        ));
        assert_eq!(Manifest::parse(&[0xff, 0xfe]), Err(ManifestError::Encoding));
    }
}
