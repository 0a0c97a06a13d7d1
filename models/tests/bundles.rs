//! Bundles end to end on the library: make, sign, verify, install into a store, and every
//! attack of the list refused with its reason while the installed model stays active
//! and staging is left empty.

use std::path::{Path, PathBuf};

use models::bundle::install::{Observer, Step};
use models::bundle::keys::{self, KeyId, Password};
use models::bundle::store::Store;
use models::bundle::{
    create, prepare, sign, CreateOptions, InstallError, Manifest, Prepared, Quiet, TrustedKeys,
    MANIFEST_FILE, SIGNATURE_FILE,
};
use models::testmodel::{write_hostile, write_llama, Hostile, LlamaConfig};

struct Signer {
    id: KeyId,
    sk: minisign::SecretKey,
}

fn signer(dir: &Path, stem: &str) -> Signer {
    let id = keys::keygen(&dir.join(stem), Password::Unencrypted).unwrap();
    let (read_id, sk) =
        keys::read_secret_key(&dir.join(format!("{stem}.key")), Password::Unencrypted).unwrap();
    assert_eq!(id, read_id);
    Signer { id, sk }
}

struct World {
    _t: tempfile::TempDir,
    root: PathBuf,
    keys: TrustedKeys,
    trusted: Signer,
    stranger: Signer,
    store: Store,
}

fn world() -> World {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_owned();
    let trust = root.join("trusted");
    let other = root.join("other-keys");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let trusted = signer(&trust, "clinic");
    // The stranger's key is a real minisign key too, just not in the trusted directory.
    let stranger = signer(&other, "stranger");
    std::fs::remove_file(trust.join("clinic.key")).unwrap();
    let keys = TrustedKeys::load_dir(&trust).unwrap();
    assert_eq!(keys.ids(), vec![trusted.id]);
    std::fs::create_dir(root.join("data")).unwrap();
    let (store, _) = Store::open(&root.join("data/models")).unwrap();
    World {
        _t: t,
        root,
        keys,
        trusted,
        stranger,
        store,
    }
}

fn tiny(seed: u64) -> LlamaConfig {
    let mut c = LlamaConfig::tiny();
    c.seed = seed;
    c
}

impl World {
    /// A signed bundle of one generated model.
    fn bundle(&self, dir: &str, name: &str, sequence: u64, seed: u64) -> PathBuf {
        let b = self.root.join("stick").join(dir);
        std::fs::create_dir_all(&b).unwrap();
        write_llama(&tiny(seed), &b.join("model.gguf")).unwrap();
        let opts = CreateOptions {
            name: name.into(),
            version: format!("v{sequence}"),
            sequence,
            signer: self.trusted.id,
            files: vec![],
        };
        create(&b, &opts).unwrap();
        sign(&b, &self.trusted.sk, self.trusted.id).unwrap();
        b
    }

    fn install(&self, bundle: &Path) -> Result<Prepared, InstallError> {
        self.install_with(bundle, &mut Quiet)
    }

    fn install_with(
        &self,
        bundle: &Path,
        observer: &mut dyn Observer,
    ) -> Result<Prepared, InstallError> {
        match prepare(&self.store, &self.keys, bundle, observer)? {
            Prepared::Staged(s) => {
                // The probe stand-in: the staged file is there and complete.
                assert!(s.primary().starts_with(s.dir()));
                assert!(std::fs::metadata(s.primary()).unwrap().len() > 0);
                let installed = s.activate(&self.store, observer)?;
                Ok(Prepared::AlreadyActive {
                    manifest: installed.manifest,
                    signer: self.trusted.id,
                })
            }
            other => Ok(other),
        }
    }

    fn active(&self) -> Option<String> {
        self.store
            .check_active()
            .unwrap()
            .map(|i| i.manifest.label())
    }

    fn staging_is_empty(&self) -> bool {
        std::fs::read_dir(self.store.root().join("staging"))
            .unwrap()
            .next()
            .is_none()
    }

    /// Signs `manifest` as written (for bundles `create` would refuse to make).
    fn sign_raw(&self, bundle: &Path, manifest: &str, by: &Signer) {
        std::fs::write(bundle.join(MANIFEST_FILE), manifest).unwrap();
        let sig = keys::sign(&by.sk, manifest.as_bytes(), "test").unwrap();
        std::fs::write(bundle.join(SIGNATURE_FILE), sig).unwrap();
    }

    /// Asserts the bundle is refused for `reason` and the box is unchanged.
    fn refused(&self, bundle: &Path, reason: &str) -> InstallError {
        let before = self.active();
        let e = self.install(bundle).expect_err(reason);
        assert_eq!(e.reason(), reason, "{e}");
        assert_eq!(
            self.active(),
            before,
            "{reason}: the installed model changed"
        );
        assert!(self.staging_is_empty(), "{reason}: staging left behind");
        e
    }
}

fn manifest_of(bundle: &Path) -> Manifest {
    Manifest::parse(&std::fs::read(bundle.join(MANIFEST_FILE)).unwrap()).unwrap()
}

#[test]
fn a_signed_bundle_installs_and_becomes_active() {
    let w = world();
    assert_eq!(w.active(), None);
    let b = w.bundle("a", "tiny", 1, 1);
    let m = manifest_of(&b);
    assert_eq!(m.model.architecture, "llama");
    assert_eq!(m.model.parameters, tiny(1).parameters());
    assert_eq!(m.signer, w.trusted.id.to_string());
    let mut steps = Vec::new();
    struct Record<'a>(&'a mut Vec<Step>, u64);
    impl Observer for Record<'_> {
        fn step(&mut self, s: Step) {
            self.0.push(s);
        }
        fn progress(&mut self, done: u64, total: u64) {
            assert!(done <= total && done > self.1);
            self.1 = done;
        }
    }
    w.install_with(&b, &mut Record(&mut steps, 0)).unwrap();
    assert_eq!(w.active().as_deref(), Some("tiny@1"));
    assert!(w.staging_is_empty());
    let installed = w.store.active().unwrap().unwrap();
    assert_eq!(
        std::fs::read(installed.primary()).unwrap(),
        std::fs::read(b.join("model.gguf")).unwrap()
    );
    assert_eq!(steps.first(), Some(&Step::Verified));
    assert!(steps.contains(&Step::Copied(0)) && steps.contains(&Step::Checked));
}

#[test]
fn the_same_sequence_is_a_no_op_and_a_lower_one_is_refused() {
    let w = world();
    let two = w.bundle("two", "tiny", 2, 1);
    let one = w.bundle("one", "tiny", 1, 2);
    w.install(&two).unwrap();
    // Installing it again copies nothing.
    assert!(matches!(
        prepare(&w.store, &w.keys, &two, &mut Quiet).unwrap(),
        Prepared::AlreadyActive { .. }
    ));
    let e = w.refused(&one, "rollback");
    assert!(
        e.to_string()
            .contains("tiny sequence 1 is older than sequence 2"),
        "{e}"
    );
    // Switching to another model and back does not reopen the door to the old one.
    let other = w.bundle("other", "other", 1, 3);
    w.install(&other).unwrap();
    assert_eq!(w.active().as_deref(), Some("other@1"));
    w.refused(&one, "rollback");
    w.install(&two).unwrap();
    assert_eq!(w.active().as_deref(), Some("tiny@2"));
    let three = w.bundle("three", "tiny", 3, 4);
    w.install(&three).unwrap();
    assert_eq!(w.active().as_deref(), Some("tiny@3"));
    // Old versions go when asked (after the new one serves) and at the next start.
    assert_eq!(
        w.store.remove_inactive().unwrap(),
        vec!["other@1", "tiny@2"]
    );
}

#[test]
fn signature_attacks_are_refused() {
    let w = world();
    let good = w.bundle("good", "tiny", 1, 1);
    w.install(&good).unwrap();

    let unsigned = w.bundle("unsigned", "tiny", 2, 2);
    std::fs::remove_file(unsigned.join(SIGNATURE_FILE)).unwrap();
    w.refused(&unsigned, "unsigned");

    // The manifest edited after signing: a higher sequence to force an install.
    let edited = w.bundle("edited", "tiny", 2, 2);
    let text = std::fs::read_to_string(edited.join(MANIFEST_FILE)).unwrap();
    std::fs::write(
        edited.join(MANIFEST_FILE),
        text.replace("sequence = 2", "sequence = 9"),
    )
    .unwrap();
    w.refused(&edited, "bad_signature");

    // A correct signature by a key the box does not trust.
    let foreign = w.bundle("foreign", "tiny", 2, 2);
    let text = std::fs::read_to_string(foreign.join(MANIFEST_FILE)).unwrap();
    w.sign_raw(&foreign, &text, &w.stranger);
    let e = w.refused(&foreign, "unknown_key");
    assert!(e.to_string().contains(&w.stranger.id.to_string()), "{e}");

    // The signature of another bundle's manifest.
    let swapped = w.bundle("swapped", "tiny", 2, 2);
    std::fs::copy(good.join(SIGNATURE_FILE), swapped.join(SIGNATURE_FILE)).unwrap();
    w.refused(&swapped, "bad_signature");

    let garbage = w.bundle("garbage-sig", "tiny", 2, 2);
    std::fs::write(
        garbage.join(SIGNATURE_FILE),
        "untrusted comment: x\nnot base64\n",
    )
    .unwrap();
    w.refused(&garbage, "malformed_signature");

    // A trusted key signing a manifest that names another signer.
    let mismatch = w.bundle("mismatch", "tiny", 2, 2);
    let text = std::fs::read_to_string(mismatch.join(MANIFEST_FILE)).unwrap();
    let text = text.replace(&w.trusted.id.to_string(), &w.stranger.id.to_string());
    w.sign_raw(&mismatch, &text, &w.trusted);
    w.refused(&mismatch, "signer_mismatch");

    // Over the size cap: refused before the signature is even checked.
    let big = w.bundle("big", "tiny", 2, 2);
    let text = std::fs::read_to_string(big.join(MANIFEST_FILE)).unwrap();
    let padded = format!("{text}\n# {}\n", "x".repeat(70_000));
    w.sign_raw(&big, &padded, &w.trusted);
    w.refused(&big, "manifest_too_large");

    // Signed but not TOML, and signed with a traversal path: the key holder's mistakes are
    // still refused.
    let bad_toml = w.bundle("bad-toml", "tiny", 2, 2);
    w.sign_raw(&bad_toml, "format = 1\nname = [", &w.trusted);
    w.refused(&bad_toml, "malformed_manifest");
    let traversal = w.bundle("traversal", "tiny", 2, 2);
    let text = std::fs::read_to_string(traversal.join(MANIFEST_FILE)).unwrap();
    w.sign_raw(
        &traversal,
        &text.replace("path = \"model.gguf\"", "path = \"../good/model.gguf\""),
        &w.trusted,
    );
    w.refused(&traversal, "bad_path");
    assert_eq!(w.active().as_deref(), Some("tiny@1"));
}

#[test]
fn file_attacks_are_refused() {
    let w = world();
    let good = w.bundle("good", "tiny", 1, 1);
    w.install(&good).unwrap();

    // Mix and match: the file of another signed bundle with the same name.
    let mixed = w.bundle("mixed", "tiny", 2, 2);
    std::fs::copy(good.join("model.gguf"), mixed.join("model.gguf")).unwrap();
    w.refused(&mixed, "hash_mismatch");

    let flipped = w.bundle("flipped", "tiny", 2, 2);
    let mut bytes = std::fs::read(flipped.join("model.gguf")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(flipped.join("model.gguf"), bytes).unwrap();
    w.refused(&flipped, "hash_mismatch");

    let truncated = w.bundle("truncated", "tiny", 2, 2);
    let len = std::fs::metadata(truncated.join("model.gguf"))
        .unwrap()
        .len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(truncated.join("model.gguf"))
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    w.refused(&truncated, "truncated");

    let longer = w.bundle("longer", "tiny", 2, 2);
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(longer.join("model.gguf"))
        .unwrap();
    f.set_len(len + (64 << 20)).unwrap();
    w.refused(&longer, "too_long");

    let missing = w.bundle("missing", "tiny", 2, 2);
    std::fs::remove_file(missing.join("model.gguf")).unwrap();
    w.refused(&missing, "missing_file");

    // A symlink to the real file elsewhere on the stick, and a hard link to it.
    let symlinked = w.bundle("symlinked", "tiny", 2, 2);
    std::fs::rename(
        symlinked.join("model.gguf"),
        w.root.join("stick/model-elsewhere.gguf"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../model-elsewhere.gguf", symlinked.join("model.gguf")).unwrap();
    w.refused(&symlinked, "symlink");
    let linked = w.bundle("linked", "tiny", 2, 2);
    std::fs::hard_link(linked.join("model.gguf"), w.root.join("stick/second-name")).unwrap();
    w.refused(&linked, "hardlink");

    // The bundle directory itself as a symlink.
    std::os::unix::fs::symlink(&good, w.root.join("stick/dir-link")).unwrap();
    w.refused(&w.root.join("stick/dir-link"), "no_bundle");

    // A signed, correctly hashed file that is not GGUF.
    let not_gguf = w.bundle("not-gguf", "tiny", 2, 2);
    write_hostile(Hostile::Garbage, &not_gguf.join("model.gguf")).unwrap();
    let mut m = manifest_of(&not_gguf);
    let (digest, size) = models::bundle::copy::hash_file(
        &mut std::fs::File::open(not_gguf.join("model.gguf")).unwrap(),
    )
    .unwrap();
    m.files[0].sha256 = hex::encode(digest);
    m.files[0].size = size;
    w.sign_raw(&not_gguf, &m.to_toml(), &w.trusted);
    w.refused(&not_gguf, "not_gguf");

    // Signed facts that are not the file's.
    let lying = w.bundle("lying", "tiny", 2, 2);
    let mut m = manifest_of(&lying);
    m.model.architecture = "gemma3".into();
    w.sign_raw(&lying, &m.to_toml(), &w.trusted);
    w.refused(&lying, "facts_mismatch");

    assert_eq!(w.active().as_deref(), Some("tiny@1"));
    // Extra files on the stick are ignored.
    let extra = w.bundle("extra", "tiny", 2, 2);
    std::fs::write(extra.join("README.txt"), "hello").unwrap();
    std::fs::write(extra.join("autorun.sh"), "#!/bin/sh\nrm -rf /\n").unwrap();
    w.install(&extra).unwrap();
    assert_eq!(w.active().as_deref(), Some("tiny@2"));
    let installed = w.store.active().unwrap().unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&installed.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [MANIFEST_FILE, SIGNATURE_FILE, "model.gguf"]);
}

#[test]
fn a_file_changed_after_the_signature_check_is_refused() {
    let w = world();
    let b = w.bundle("b", "tiny", 1, 1);
    // The attacker's stick swaps the model right after the manifest was verified (RAUC's
    // CVE-2020-25860): the copy is what is hashed, so the swap is caught.
    struct Swap(PathBuf);
    impl Observer for Swap {
        fn step(&mut self, s: Step) {
            if s == Step::Verified {
                write_llama(&tiny(99), &self.0).unwrap();
            }
        }
    }
    let e = w
        .install_with(&b, &mut Swap(b.join("model.gguf")))
        .unwrap_err();
    assert_eq!(e.reason(), "hash_mismatch");
    assert_eq!(w.active(), None);
    assert!(w.staging_is_empty());
    // A change after a chunk was read: a model of several chunks is caught; one that was
    // already read whole is installed as it was signed, not as the stick holds it now.
    struct AfterFirstChunk(PathBuf, bool);
    impl Observer for AfterFirstChunk {
        fn progress(&mut self, _done: u64, _total: u64) {
            if !self.1 {
                self.1 = true;
                let mut bytes = std::fs::read(&self.0).unwrap();
                let last = bytes.len() - 1;
                bytes[last] ^= 0xff;
                std::fs::write(&self.0, bytes).unwrap();
            }
        }
    }
    let big = w.root.join("stick/big");
    std::fs::create_dir_all(&big).unwrap();
    write_llama(&LlamaConfig::small(), &big.join("model.gguf")).unwrap();
    assert!(
        std::fs::metadata(big.join("model.gguf")).unwrap().len()
            > 2 * models::bundle::copy::CHUNK as u64
    );
    let opts = CreateOptions {
        name: "small".into(),
        version: "v1".into(),
        sequence: 1,
        signer: w.trusted.id,
        files: vec![],
    };
    create(&big, &opts).unwrap();
    sign(&big, &w.trusted.sk, w.trusted.id).unwrap();
    let e = w
        .install_with(&big, &mut AfterFirstChunk(big.join("model.gguf"), false))
        .unwrap_err();
    assert_eq!(e.reason(), "hash_mismatch");
    assert!(w.staging_is_empty());

    let small = w.bundle("b2", "tiny", 1, 1);
    let signed = std::fs::read(small.join("model.gguf")).unwrap();
    w.install_with(
        &small,
        &mut AfterFirstChunk(small.join("model.gguf"), false),
    )
    .unwrap();
    assert_ne!(std::fs::read(small.join("model.gguf")).unwrap(), signed);
    let installed = w.store.check_active().unwrap().unwrap();
    assert_eq!(std::fs::read(installed.primary()).unwrap(), signed);
}

#[test]
fn an_interrupted_install_is_cleaned_at_the_next_open() {
    let w = world();
    let b = w.bundle("b", "tiny", 1, 1);
    w.install(&b).unwrap();
    // What a power cut can leave: a staging directory and a version that was never activated.
    let stale = w.store.root().join("staging/install-dead");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("model.gguf"), b"half").unwrap();
    std::fs::create_dir_all(w.store.root().join("versions/tiny@7")).unwrap();
    let (store, recovery) = Store::open(w.store.root()).unwrap();
    assert_eq!(recovery.removed_staging, vec!["install-dead"]);
    assert_eq!(recovery.removed_versions, vec!["tiny@7"]);
    assert_eq!(
        store.check_active().unwrap().unwrap().manifest.label(),
        "tiny@1"
    );
}

#[test]
fn keys_are_never_overwritten_and_encrypted_keys_need_their_password() {
    let t = tempfile::tempdir().unwrap();
    let stem = t.path().join("admin");
    let id = keys::keygen(&stem, Password::Given("correct horse".into())).unwrap();
    assert!(matches!(
        keys::keygen(&stem, Password::Unencrypted),
        Err(keys::KeyError::Exists { .. })
    ));
    let key = t.path().join("admin.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(keys::read_secret_key(&key, Password::Given("wrong".into())).is_err());
    assert!(keys::read_secret_key(&key, Password::Unencrypted).is_err());
    let (read, _) = keys::read_secret_key(&key, Password::Given("correct horse".into())).unwrap();
    assert_eq!(read, id);
    // A trust directory with a damaged key file is an error, not a smaller trust set.
    std::fs::write(t.path().join("broken.pub"), "untrusted comment: x\nAAAA\n").unwrap();
    assert!(TrustedKeys::load_dir(t.path()).is_err());
}
