//! Signed bundles for the installer's tests: a trusted key, generated models, `create` and
//! `sign` as an admin's workstation would run them.

use std::path::{Path, PathBuf};

use models::bundle::keys::{self, KeyId, Password};
use models::bundle::{create, sign, CreateOptions, TrustedKeys};
use models::testmodel::{write_llama, LlamaConfig};

pub struct Signer {
    pub id: KeyId,
    pub sk: minisign::SecretKey,
    pub trusted: TrustedKeys,
    pub trusted_dir: PathBuf,
}

/// A key pair in `dir/keys`; the public half alone in `dir/trusted`.
pub fn signer(dir: &Path) -> Signer {
    let keys_dir = dir.join("keys");
    let trusted_dir = dir.join("trusted");
    std::fs::create_dir_all(&keys_dir).unwrap();
    std::fs::create_dir_all(&trusted_dir).unwrap();
    let id = keys::keygen(&keys_dir.join("clinic"), Password::Unencrypted).unwrap();
    let (_, sk) =
        keys::read_secret_key(&keys_dir.join("clinic.key"), Password::Unencrypted).unwrap();
    std::fs::copy(keys_dir.join("clinic.pub"), trusted_dir.join("clinic.pub")).unwrap();
    let trusted = TrustedKeys::load_dir(&trusted_dir).unwrap();
    Signer {
        id,
        sk,
        trusted,
        trusted_dir,
    }
}

impl Signer {
    /// Writes `model` to `dir/model.gguf` and makes `dir` a signed bundle.
    pub fn bundle(&self, dir: &Path, name: &str, sequence: u64, model: &LlamaConfig) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        write_llama(model, &dir.join("model.gguf")).unwrap();
        self.seal(dir, name, sequence);
        dir.to_owned()
    }

    /// Makes the GGUF files already in `dir` a signed bundle.
    pub fn seal(&self, dir: &Path, name: &str, sequence: u64) {
        let opts = CreateOptions {
            name: name.into(),
            version: format!("v{sequence}"),
            sequence,
            signer: self.id,
            files: vec![],
        };
        create(dir, &opts).unwrap();
        sign(dir, &self.sk, self.id).unwrap();
    }
}

pub fn tiny(seed: u64) -> LlamaConfig {
    let mut c = LlamaConfig::tiny();
    c.seed = seed;
    c
}
