//! `phibox bundle …` as an admin runs it, and its signatures against the real minisign tool
//! (Debian's package): `minisign -V` verifies ours, `phibox bundle verify` verifies minisign's.

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn phibox(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phibox"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn minisign(args: &[&str], dir: &Path) -> Output {
    Command::new("minisign")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the minisign tool is missing: apt-get install minisign (scripts/test.sh does)")
}

fn ok(o: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    text
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn model_dir(t: &Path, name: &str) -> std::path::PathBuf {
    let d = t.join(name);
    std::fs::create_dir_all(&d).unwrap();
    support::tiny_model(&d);
    d
}

#[test]
fn minisign_verifies_our_signature_and_we_verify_minisigns() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    std::fs::write(p.join("pw"), "a long clinic passphrase\n").unwrap();
    ok(&phibox(
        &["bundle", "keygen", "ours", "--password-file", "pw"],
        p,
    ));
    let ours = model_dir(p, "ours-bundle");
    let created = ok(&phibox(
        &[
            "bundle",
            "create",
            "ours-bundle",
            "--name",
            "tiny",
            "--version",
            "1.0",
            "--sequence",
            "1",
            "--key",
            "ours.pub",
        ],
        p,
    ));
    assert!(created.contains("llama Q8_0"), "{created}");
    // Without the password the encrypted key is useless; with it the bundle is signed.
    std::fs::write(p.join("wrong"), "guess\n").unwrap();
    let refused = phibox(
        &[
            "bundle",
            "sign",
            "ours-bundle",
            "--key",
            "ours.key",
            "--password-file",
            "wrong",
        ],
        p,
    );
    assert_eq!(code(&refused), 2);
    ok(&phibox(
        &[
            "bundle",
            "sign",
            "ours-bundle",
            "--key",
            "ours.key",
            "--password-file",
            "pw",
        ],
        p,
    ));
    let checked = ok(&minisign(
        &["-V", "-p", "ours.pub", "-m", "ours-bundle/manifest.toml"],
        p,
    ));
    assert!(checked.contains("bundle:tiny 1.0 sequence 1"), "{checked}");
    let verified = ok(&phibox(
        &["bundle", "verify", "ours-bundle", "--key", "ours.pub"],
        p,
    ));
    assert!(verified.contains("OK: signed by trusted key"), "{verified}");

    // The other way: a key pair and a signature made by minisign itself.
    ok(&minisign(
        &["-G", "-W", "-p", "theirs.pub", "-s", "theirs.key"],
        p,
    ));
    let theirs = model_dir(p, "their-bundle");
    ok(&phibox(
        &[
            "bundle",
            "create",
            "their-bundle",
            "--name",
            "tiny",
            "--version",
            "2.0",
            "--sequence",
            "2",
            "--key",
            "theirs.pub",
        ],
        p,
    ));
    ok(&minisign(
        &["-S", "-s", "theirs.key", "-m", "their-bundle/manifest.toml"],
        p,
    ));
    std::fs::create_dir(p.join("trusted")).unwrap();
    std::fs::copy(p.join("theirs.pub"), p.join("trusted/theirs.pub")).unwrap();
    let verified = ok(&phibox(
        &["bundle", "verify", "their-bundle", "--trusted", "trusted"],
        p,
    ));
    assert!(verified.contains("sequence 2"), "{verified}");

    // Each key verifies only its own bundle.
    let wrong = phibox(
        &["bundle", "verify", "ours-bundle", "--trusted", "trusted"],
        p,
    );
    assert_eq!(code(&wrong), 1);
    assert!(
        stdout(&wrong).contains("REFUSED (unknown_key)"),
        "{}",
        stdout(&wrong)
    );
    let wrong = minisign(
        &["-V", "-p", "ours.pub", "-m", "their-bundle/manifest.toml"],
        p,
    );
    assert!(!wrong.status.success());

    // A legacy (not prehashed) minisign signature is refused.
    ok(&minisign(
        &[
            "-S",
            "-l",
            "-s",
            "theirs.key",
            "-m",
            "their-bundle/manifest.toml",
        ],
        p,
    ));
    let legacy = phibox(
        &["bundle", "verify", "their-bundle", "--trusted", "trusted"],
        p,
    );
    assert_eq!(code(&legacy), 1);
    assert!(
        stdout(&legacy).contains("REFUSED (legacy_signature)"),
        "{}",
        stdout(&legacy)
    );
    drop((ours, theirs));
}

#[test]
fn verify_names_the_refusal_and_inspect_shows_the_claims() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    ok(&phibox(&["bundle", "keygen", "k", "--unencrypted"], p));
    // Never overwrites a key.
    let again = phibox(&["bundle", "keygen", "k", "--unencrypted"], p);
    assert_eq!(code(&again), 2);
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    let b = model_dir(p, "b");
    ok(&phibox(
        &[
            "bundle",
            "create",
            "b",
            "--name",
            "tiny",
            "--version",
            "1",
            "--sequence",
            "4",
            "--key",
            "k.pub",
        ],
        p,
    ));
    let unsigned = phibox(&["bundle", "verify", "b", "--key", "k.pub"], p);
    assert_eq!(code(&unsigned), 1);
    assert!(stdout(&unsigned).contains("REFUSED (unsigned)"));
    ok(&phibox(
        &["bundle", "sign", "b", "--key", "k.key", "--unencrypted"],
        p,
    ));
    let shown = ok(&phibox(&["bundle", "inspect", "b"], p));
    assert!(
        shown.contains("tiny 1 (sequence 4)") && shown.contains("not verified"),
        "{shown}"
    );
    let mut bytes = std::fs::read(b.join("tiny.gguf")).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(b.join("tiny.gguf"), bytes).unwrap();
    let bad = phibox(&["bundle", "verify", "b", "--key", "k.pub"], p);
    assert_eq!(code(&bad), 1);
    assert!(stdout(&bad).contains("REFUSED (hash_mismatch): tiny.gguf does not match"));
    // Bad input is a usage error.
    assert_eq!(
        code(&phibox(
            &["bundle", "verify", "nowhere", "--key", "k.pub"],
            p
        )),
        1
    );
    assert_eq!(code(&phibox(&["bundle", "inspect", "nowhere"], p)), 2);
    let bad_name = phibox(
        &[
            "bundle",
            "create",
            "b",
            "--name",
            "Bad Name",
            "--version",
            "1",
            "--sequence",
            "1",
            "--key",
            "k.pub",
        ],
        p,
    );
    assert_eq!(code(&bad_name), 2);
    assert!(String::from_utf8_lossy(&bad_name.stderr).contains("invalid model name"));
}
