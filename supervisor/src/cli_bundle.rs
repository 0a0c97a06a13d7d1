//! `phibox bundle …`: making, signing, checking and reading model bundles on the admin's
//! workstation. Exit codes as for the rest of `phibox`: 0 success, 1 a refused bundle, 2 a
//! usage or input error. Passwords come from files or the terminal, never from arguments.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use models::bundle::keys::{self, Password};
use models::bundle::{self, CreateOptions, Manifest, TrustedKeys, MANIFEST_FILE, SIGNATURE_FILE};

/// Where the image keeps the public keys it trusts.
pub const IMAGE_TRUSTED_KEYS: &str = "/usr/share/phibox/trusted-keys";

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Makes a signing key pair: STEM.pub (goes into the image) and STEM.key (stays with you).
    Keygen {
        /// Path without extension, e.g. ./clinic-2026.
        stem: PathBuf,
        /// A file holding the password that encrypts the secret key (else asked for).
        #[arg(long, conflicts_with = "unencrypted")]
        password_file: Option<PathBuf>,
        /// Leave the secret key unencrypted (only where the key is protected otherwise).
        #[arg(long)]
        unencrypted: bool,
    },
    /// Hashes the GGUF file(s) in DIR, reads the model's facts and writes DIR/manifest.toml.
    Create {
        dir: PathBuf,
        /// Model name, the unit of rollback protection: lowercase letters, digits, . _ -.
        #[arg(long)]
        name: String,
        /// Version label shown to people.
        #[arg(long)]
        version: String,
        /// Must grow with every bundle of this name: the box refuses a lower one.
        #[arg(long)]
        sequence: u64,
        /// The public key (STEM.pub) that will sign the bundle.
        #[arg(long)]
        key: PathBuf,
        /// Model files in order, primary first (default: every *.gguf in DIR, sorted).
        files: Vec<String>,
    },
    /// Signs DIR/manifest.toml, writing DIR/manifest.toml.minisig.
    Sign {
        dir: PathBuf,
        /// The secret key (STEM.key).
        #[arg(long)]
        key: PathBuf,
        #[arg(long, conflicts_with = "unencrypted")]
        password_file: Option<PathBuf>,
        /// The secret key is not encrypted.
        #[arg(long)]
        unencrypted: bool,
    },
    /// Checks a bundle as the box would: signature, manifest, every file's size and hash.
    Verify {
        dir: PathBuf,
        /// A directory of trusted public keys (default: the image's).
        #[arg(long, conflicts_with = "key")]
        trusted: Option<PathBuf>,
        /// One trusted public key file.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Shows what a bundle claims, without checking it.
    Inspect { dir: PathBuf },
}

fn password(file: Option<&Path>, unencrypted: bool) -> Result<Password, String> {
    match (file, unencrypted) {
        (_, true) => Ok(Password::Unencrypted),
        (Some(f), false) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("reading the password file {}: {e}", f.display()))?;
            let p = text.trim_end_matches(['\n', '\r']).to_string();
            if p.is_empty() {
                return Err(format!("the password file {} is empty", f.display()));
            }
            Ok(Password::Given(p))
        }
        (None, false) => Ok(Password::Prompt),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    sandbox::error_chain::chain(e)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn describe(m: &Manifest, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "model:    {} {} (sequence {})",
        m.name, m.version, m.sequence
    )?;
    writeln!(out, "created:  {}", m.created)?;
    writeln!(out, "signer:   {}", m.signer)?;
    writeln!(
        out,
        "facts:    {} {}, {} parameters, context {}",
        m.model.architecture, m.model.quantization, m.model.parameters, m.model.context_length
    )?;
    for f in &m.files {
        writeln!(
            out,
            "file:     {} {} sha256:{}",
            f.path,
            human(f.size),
            f.sha256
        )?;
    }
    writeln!(out, "total:    {}", human(m.total_size()))
}

/// Runs one bundle command; returns the exit code.
#[allow(clippy::print_stderr)]
pub fn run(cmd: BundleCommand) -> i32 {
    match run_inner(cmd) {
        Ok(code) => code,
        Err(m) => {
            eprintln!("phibox: {m}");
            2
        }
    }
}

fn run_inner(cmd: BundleCommand) -> Result<i32, String> {
    let mut out = std::io::stdout().lock();
    let w = |r: std::io::Result<()>| r.map_err(|e| format!("writing the output: {e}"));
    match cmd {
        BundleCommand::Keygen {
            stem,
            password_file,
            unencrypted,
        } => {
            let pw = password(password_file.as_deref(), unencrypted)?;
            let id = keys::keygen(&stem, pw).map_err(|e| chain(&e))?;
            w(writeln!(
                out,
                "key {id}\npublic key: {} (install it in the image's trusted keys)\nsecret key: {} (keep it offline)",
                stem.with_extension("pub").display(),
                stem.with_extension("key").display()
            ))?;
            Ok(0)
        }
        BundleCommand::Create {
            dir,
            name,
            version,
            sequence,
            key,
            files,
        } => {
            let (signer, _) = keys::read_public_key(&key).map_err(|e| chain(&e))?;
            let opts = CreateOptions {
                name,
                version,
                sequence,
                signer,
                files,
            };
            let m = bundle::create(&dir, &opts).map_err(|e| chain(&e))?;
            w(describe(&m, &mut out))?;
            w(writeln!(
                out,
                "wrote {}; sign it with `phibox bundle sign`",
                dir.join(MANIFEST_FILE).display()
            ))?;
            Ok(0)
        }
        BundleCommand::Sign {
            dir,
            key,
            password_file,
            unencrypted,
        } => {
            let pw = password(password_file.as_deref(), unencrypted)?;
            let (id, sk) = keys::read_secret_key(&key, pw).map_err(|e| chain(&e))?;
            let m = bundle::sign(&dir, &sk, id).map_err(|e| chain(&e))?;
            w(writeln!(
                out,
                "signed {} {} (sequence {}) with key {id}: {}",
                m.name,
                m.version,
                m.sequence,
                dir.join(SIGNATURE_FILE).display()
            ))?;
            Ok(0)
        }
        BundleCommand::Verify { dir, trusted, key } => {
            let keys = match (trusted, key) {
                (_, Some(k)) => TrustedKeys::single(&k),
                (Some(d), None) => TrustedKeys::load_dir(&d),
                (None, None) => TrustedKeys::load_dir(Path::new(IMAGE_TRUSTED_KEYS)),
            }
            .map_err(|e| chain(&e))?;
            if keys.is_empty() {
                return Err("no trusted public keys (*.pub) in the trusted directory".into());
            }
            match bundle::check_bundle(&dir, &keys, &mut |_, _| {}) {
                Ok((m, signer)) => {
                    w(describe(&m, &mut out))?;
                    w(writeln!(
                        out,
                        "OK: signed by trusted key {signer}; {} file(s), {} verified",
                        m.files.len(),
                        human(m.total_size())
                    ))?;
                    Ok(0)
                }
                Err(e) => {
                    w(writeln!(out, "REFUSED ({}): {}", e.reason(), chain(&e)))?;
                    Ok(1)
                }
            }
        }
        BundleCommand::Inspect { dir } => {
            let read = |name: &str, cap: u64| {
                models::bundle::source::BundleDir::open(&dir)
                    .and_then(|d| d.read_capped(name, cap))
                    .map_err(|e| format!("{}: {name} {e}", dir.display()))
            };
            let bytes = read(MANIFEST_FILE, models::bundle::manifest::MAX_MANIFEST_BYTES)?;
            let m = Manifest::parse(&bytes).map_err(|e| chain(&e))?;
            w(describe(&m, &mut out))?;
            match read(SIGNATURE_FILE, keys::MAX_SIGNATURE_BYTES as u64) {
                Ok(sig) => match keys::signature_facts(&sig) {
                    Some((id, comment)) => w(writeln!(
                        out,
                        "signature: by key {id}; trusted comment {comment:?}"
                    ))?,
                    None => w(writeln!(out, "signature: malformed"))?,
                },
                Err(e) => w(writeln!(out, "signature: none ({e})"))?,
            }
            w(writeln!(
                out,
                "(not verified: `phibox bundle verify` checks the signature and the files)"
            ))?;
            Ok(0)
        }
    }
}
