//! The audit trail's secrets, kept in the data volume's `secrets/` directory:
//! - `audit-hmac-key`: 32 random bytes; prompt and response hashes are HMAC-SHA256 under it, so
//!   a short prompt cannot be found by hashing guesses.
//! - `audit-seal-state`: the current forward-secure seal key k_i and its index i. Seal i carries
//!   a MAC under k_i; then k_{i+1} = SHA-256("phibox-audit-seal-key-v1" ‖ k_i) replaces it, so
//!   a later intruder cannot forge or recompute an earlier seal.
//! - `audit-seal-seed` (dev mode only): k_0, for the security officer to keep offline; with it
//!   `phibox audit verify --seal-key` recomputes every k_i. On the appliance the seed is shown
//!   once at provisioning and never stored.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

pub const HMAC_KEY_FILE: &str = "audit-hmac-key";
pub const SEAL_STATE_FILE: &str = "audit-seal-state";
pub const SEAL_SEED_FILE: &str = "audit-seal-seed";
const KEY_LEN: usize = 32;
const EVOLVE_LABEL: &[u8] = b"phibox-audit-seal-key-v1";

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
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: &'static str },
    #[error("the system's random source failed")]
    Random(#[source] getrandom::Error),
}

fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(k.as_mut()).map_err(KeyError::Random)?;
    Ok(k)
}

fn mac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

/// Writes a secret file atomically (temporary file, fsync, rename, fsync of the directory),
/// mode 0600.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    fs::rename(&tmp, path).map_err(err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

fn read_secret(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Finds the one 64-digit hex key in a file's text.
fn parse_hex_key(path: &Path, text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    let token = text
        .split(|c: char| c.is_whitespace() || c == '"' || c == '=')
        .find(|t| t.len() == 2 * KEY_LEN && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or(KeyError::Malformed {
            path: path.to_path_buf(),
            reason: "no 64-digit hex key",
        })?;
    hex::decode_to_slice(token, key.as_mut()).map_err(|_| KeyError::Malformed {
        path: path.to_path_buf(),
        reason: "bad hex",
    })?;
    Ok(key)
}

/// Creates the trail's secrets in `secrets/` (the HMAC key and the seal state at k_0) and
/// returns the seed k_0, for the caller to hand to the security officer: printed once at the
/// appliance's first boot, written to a file in dev mode. Never stored by this function.
pub fn provision(secrets: &Path) -> Result<SealKey, KeyError> {
    HashKey::generate()?.save(&secrets.join(HMAC_KEY_FILE))?;
    let seed = SealKey::generate_seed()?;
    seed.save_state(&secrets.join(SEAL_STATE_FILE))?;
    Ok(seed)
}

/// The key of the keyed prompt and response hashes.
pub struct HashKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(..)")
    }
}

impl HashKey {
    pub fn generate() -> Result<HashKey, KeyError> {
        random_key().map(HashKey)
    }

    pub fn load(path: &Path) -> Result<HashKey, KeyError> {
        parse_hex_key(path, &read_secret(path)?).map(HashKey)
    }

    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let text = Zeroizing::new(format!("{}\n", hex::encode(self.0.as_ref())));
        write_secret(path, text.as_bytes())
    }

    /// `hmac-sha256:<hex>` of a text.
    pub fn hash(&self, text: &str) -> String {
        mac_hex(self.0.as_ref(), &[text.as_bytes()])
    }

    /// Whether `text` is what was hashed into `recorded` (compared in constant time).
    pub fn matches(&self, text: &str, recorded: &str) -> bool {
        let Some(tag) = recorded
            .strip_prefix("hmac-sha256:")
            .and_then(|h| hex::decode(h).ok())
        else {
            return false;
        };
        let mut mac = HmacSha256::new_from_slice(self.0.as_ref()).expect("any key length");
        mac.update(text.as_bytes());
        mac.verify_slice(&tag).is_ok()
    }
}

/// The forward-secure seal key k_i.
pub struct SealKey {
    index: u64,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey {{ index: {}, .. }}", self.index)
    }
}

impl SealKey {
    /// A new seed k_0.
    pub fn generate_seed() -> Result<SealKey, KeyError> {
        Ok(SealKey {
            index: 0,
            key: random_key()?,
        })
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    /// k_{i+1} = SHA-256(label ‖ k_i); k_i is overwritten.
    pub fn evolve(&mut self) {
        let next: [u8; KEY_LEN] = Sha256::new()
            .chain_update(EVOLVE_LABEL)
            .chain_update(self.key.as_ref())
            .finalize()
            .into();
        *self.key = next;
        self.index += 1;
    }

    /// k_index computed from this key (which must not be past `index`).
    pub fn advanced_to(&self, index: u64) -> Option<SealKey> {
        if index < self.index {
            return None;
        }
        let mut k = SealKey {
            index: self.index,
            key: self.key.clone(),
        };
        while k.index < index {
            k.evolve();
        }
        Some(k)
    }

    /// The seal MAC of a seal record's line (written with an empty `mac`).
    pub fn mac(&self, sealed_line: &[u8]) -> String {
        mac_hex(self.key.as_ref(), &[&self.index.to_be_bytes(), sealed_line])
    }

    /// Whether this key is the same secret as `other` at the same index.
    pub fn same_as(&self, other: &SealKey) -> bool {
        self.index == other.index && self.key.as_ref() == other.key.as_ref()
    }

    /// Reads the seed file the security officer keeps (k_0 in hex, any surrounding text).
    pub fn load_seed(path: &Path) -> Result<SealKey, KeyError> {
        Ok(SealKey {
            index: 0,
            key: parse_hex_key(path, &read_secret(path)?)?,
        })
    }

    /// Writes the seed in a printable form (dev mode only; the appliance prints it once).
    pub fn save_seed(&self, path: &Path) -> Result<(), KeyError> {
        let text = Zeroizing::new(format!(
            "phibox audit seal seed (k_0). Keep it offline: with it, `phibox audit verify \
             --seal-key FILE` proves that sealed records were not changed.\n{}\n",
            hex::encode(self.key.as_ref())
        ));
        write_secret(path, text.as_bytes())
    }

    /// Reads the box's current seal state (`index = N`, `key = "<hex>"`).
    pub fn load_state(path: &Path) -> Result<SealKey, KeyError> {
        let text = read_secret(path)?;
        let index = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("index = "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or(KeyError::Malformed {
                path: path.to_path_buf(),
                reason: "no `index = N` line",
            })?;
        Ok(SealKey {
            index,
            key: parse_hex_key(path, &text)?,
        })
    }

    /// Replaces the state file atomically with this key. The previous key's bytes are freed by
    /// the rename, not overwritten: on the appliance they lie on the LUKS volume.
    pub fn save_state(&self, path: &Path) -> Result<(), KeyError> {
        let text = Zeroizing::new(format!(
            "index = {}\nkey = \"{}\"\n",
            self.index,
            hex::encode(self.key.as_ref())
        ));
        write_secret(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_hashes_depend_on_the_key_and_verify() {
        let a = HashKey::generate().unwrap();
        let b = HashKey::generate().unwrap();
        let h = a.hash("metformin 500 mg");
        assert!(h.starts_with("hmac-sha256:") && h.len() == 12 + 64, "{h}");
        assert_ne!(h, b.hash("metformin 500 mg"));
        assert!(a.matches("metformin 500 mg", &h));
        assert!(!a.matches("metformin 850 mg", &h));
        assert!(!b.matches("metformin 500 mg", &h));
        assert!(!a.matches("metformin 500 mg", "sha256:00"));
    }

    #[test]
    fn seal_keys_evolve_one_way_and_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let seed = SealKey::generate_seed().unwrap();
        seed.save_seed(&dir.path().join("seed")).unwrap();
        let mut k = SealKey::load_seed(&dir.path().join("seed")).unwrap();
        assert!(k.same_as(&seed));
        let m0 = k.mac(b"line");
        k.evolve();
        k.evolve();
        assert_eq!(k.index(), 2);
        assert_ne!(k.mac(b"line"), m0);
        assert!(seed.advanced_to(2).unwrap().same_as(&k));
        assert!(k.advanced_to(1).is_none());
        k.save_state(&dir.path().join("state")).unwrap();
        let back = SealKey::load_state(&dir.path().join("state")).unwrap();
        assert!(back.same_as(&k));
        let mode = std::fs::metadata(dir.path().join("state")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }
}
