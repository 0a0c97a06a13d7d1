//! Signing keys in minisign's format (Ed25519, prehashed): making a key pair and signing a
//! manifest on the admin's workstation, and the box's set of trusted public keys, read from a
//! directory of the immutable image. Signatures are checked before the manifest is parsed.

use std::fmt;
use std::io::{Cursor, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use minisign::{KeyPair, PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};

/// Largest signature file read (a minisign signature is about 300 bytes).
pub const MAX_SIGNATURE_BYTES: usize = 4096;
/// Largest public key file read.
const MAX_KEY_BYTES: u64 = 4096;

/// A minisign key id, written as minisign writes it (16 uppercase hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    fn from_slice(b: &[u8]) -> KeyId {
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

/// Errors of key handling and signature checks.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already exists: refusing to overwrite a key")]
    Exists { path: PathBuf },
    #[error("{path} is not a minisign public key")]
    PublicKey { path: PathBuf },
    #[error("{path} is not a minisign secret key, or the password is wrong")]
    SecretKey { path: PathBuf },
    #[error("the trusted key directory {path} cannot be read")]
    TrustDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key {id} is trusted twice ({first} and {second})")]
    DuplicateKey {
        id: KeyId,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Why a signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the signature file is larger than {MAX_SIGNATURE_BYTES} bytes")]
    TooLarge,
    #[error("the signature file is not a minisign signature")]
    Malformed,
    #[error("signed by key {0}, which this box does not trust")]
    UnknownKey(KeyId),
    #[error("legacy (not prehashed) minisign signatures are not accepted")]
    Legacy,
    #[error("the signature does not match the manifest")]
    Invalid,
}

/// The public keys this box accepts bundles from.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(KeyId, PublicKey, PathBuf)>,
}

fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, KeyError> {
    use std::io::Read;
    let read = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read)?;
    let mut b = Vec::new();
    f.take(cap + 1).read_to_end(&mut b).map_err(read)?;
    if b.len() as u64 > cap {
        return Err(read(std::io::Error::other("file too large")));
    }
    Ok(b)
}

/// Reads a minisign public key file (`untrusted comment:` line, then the key).
pub fn read_public_key(path: &Path) -> Result<(KeyId, PublicKey), KeyError> {
    let bad = || KeyError::PublicKey {
        path: path.to_owned(),
    };
    let text = String::from_utf8(read_capped(path, MAX_KEY_BYTES)?).map_err(|_| bad())?;
    let pk = PublicKeyBox::from_string(&text)
        .and_then(PublicKeyBox::into_public_key)
        .map_err(|_| bad())?;
    Ok((KeyId::from_slice(pk.keynum()), pk))
}

impl TrustedKeys {
    /// Every `*.pub` file of `dir`. A file that is not a public key is an error: a damaged
    /// trust store must be noticed, not half-used.
    pub fn load_dir(dir: &Path) -> Result<TrustedKeys, KeyError> {
        let trust = |source| KeyError::TrustDir {
            path: dir.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(trust)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(trust)?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "pub"));
        paths.sort();
        let mut keys = TrustedKeys::default();
        for path in paths {
            let (id, pk) = read_public_key(&path)?;
            keys.add(id, pk, path)?;
        }
        Ok(keys)
    }

    fn add(&mut self, id: KeyId, pk: PublicKey, path: PathBuf) -> Result<(), KeyError> {
        if let Some((_, _, first)) = self.keys.iter().find(|(k, ..)| *k == id) {
            return Err(KeyError::DuplicateKey {
                id,
                first: first.clone(),
                second: path,
            });
        }
        self.keys.push((id, pk, path));
        Ok(())
    }

    /// A set holding one key file (tests and `phibox bundle verify --key`).
    pub fn single(path: &Path) -> Result<TrustedKeys, KeyError> {
        let (id, pk) = read_public_key(path)?;
        let mut keys = TrustedKeys::default();
        keys.add(id, pk, path.to_owned())?;
        Ok(keys)
    }

    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|(id, ..)| *id).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks `signature` (the text of a `.minisig` file) over `data`; returns the signer.
    pub fn verify(&self, data: &[u8], signature: &[u8]) -> Result<KeyId, SignatureError> {
        if signature.len() > MAX_SIGNATURE_BYTES {
            return Err(SignatureError::TooLarge);
        }
        let text = std::str::from_utf8(signature).map_err(|_| SignatureError::Malformed)?;
        let sig = SignatureBox::from_string(text).map_err(|_| SignatureError::Malformed)?;
        let id = KeyId::from_slice(sig.keynum());
        let (_, pk, _) = self
            .keys
            .iter()
            .find(|(k, ..)| *k == id)
            .ok_or(SignatureError::UnknownKey(id))?;
        if !sig.is_prehashed() {
            return Err(SignatureError::Legacy);
        }
        minisign::verify(pk, &sig, Cursor::new(data), true, false, false)
            .map_err(|_| SignatureError::Invalid)?;
        Ok(id)
    }
}

/// The signer and trusted comment of a signature file, unchecked (for `inspect`).
pub fn signature_facts(signature: &[u8]) -> Option<(KeyId, String)> {
    let text = std::str::from_utf8(signature).ok()?;
    let sig = SignatureBox::from_string(text).ok()?;
    Some((KeyId::from_slice(sig.keynum()), sig.trusted_comment().ok()?))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_owned(),
            },
            _ => KeyError::Write {
                path: path.to_owned(),
                source,
            },
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|source| KeyError::Write {
            path: path.to_owned(),
            source,
        })
}

/// How a secret key is protected.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// Encrypted with this password (minisign's scrypt).
    Given(String),
    /// Encrypted; minisign asks on the terminal.
    Prompt,
    /// Not encrypted: only for tests and signing hosts that protect the key otherwise.
    Unencrypted,
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Password::Given(_) => "Given(..)",
            Password::Prompt => "Prompt",
            Password::Unencrypted => "Unencrypted",
        })
    }
}

/// Makes a key pair: `<stem>.pub` (for the image's trusted keys) and `<stem>.key` (0600).
/// Never overwrites.
pub fn keygen(stem: &Path, password: Password) -> Result<KeyId, KeyError> {
    let pair = match password {
        Password::Given(p) => KeyPair::generate_encrypted_keypair(Some(p)),
        Password::Prompt => KeyPair::generate_encrypted_keypair(None),
        Password::Unencrypted => KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| KeyError::Sign(e.to_string()))?;
    let id = KeyId::from_slice(pair.pk.keynum());
    let comment = format!("phibox bundle signing key {id}");
    let pk = pair
        .pk
        .to_box()
        .map_err(|e| KeyError::Sign(e.to_string()))?
        .into_string();
    let sk = pair
        .sk
        .to_box(Some(&comment))
        .map_err(|e| KeyError::Sign(e.to_string()))?
        .into_string();
    let pub_path = stem.with_extension("pub");
    let key_path = stem.with_extension("key");
    for p in [&pub_path, &key_path] {
        if p.exists() {
            return Err(KeyError::Exists { path: p.clone() });
        }
    }
    write_new(&key_path, sk.as_bytes(), 0o600)?;
    write_new(&pub_path, pk.as_bytes(), 0o644)?;
    Ok(id)
}

/// Reads a secret key file.
pub fn read_secret_key(path: &Path, password: Password) -> Result<(KeyId, SecretKey), KeyError> {
    let bad = || KeyError::SecretKey {
        path: path.to_owned(),
    };
    let text = String::from_utf8(read_capped(path, MAX_KEY_BYTES)?).map_err(|_| bad())?;
    let sk_box = SecretKeyBox::from_string(&text).map_err(|_| bad())?;
    let sk = match password {
        Password::Given(p) => sk_box.into_secret_key(Some(p)),
        Password::Prompt => sk_box.into_secret_key(None),
        Password::Unencrypted => sk_box.into_unencrypted_secret_key(),
    }
    .map_err(|_| bad())?;
    Ok((KeyId::from_slice(sk.keynum()), sk))
}

/// Signs `data` (a manifest) with minisign's prehashed Ed25519; the trusted comment names the
/// bundle so that `minisign -V` shows what was signed.
pub fn sign(sk: &SecretKey, data: &[u8], trusted_comment: &str) -> Result<String, KeyError> {
    let pk = PublicKey::from_secret_key(sk).map_err(|e| KeyError::Sign(e.to_string()))?;
    minisign::sign(
        Some(&pk),
        sk,
        Cursor::new(data),
        Some(trusted_comment),
        Some("signature from phibox bundle sign"),
    )
    .map(|s| s.into_string())
    .map_err(|e| KeyError::Sign(e.to_string()))
}
