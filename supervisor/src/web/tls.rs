//! The HTTPS server's TLS: rustls with the ring provider, TLS 1.2 and 1.3 only, AEAD cipher
//! suites only. The certificate chain and key come from PEM files in the data directory's
//! `tls/` (the clinic's PKI); dev mode generates a self-signed pair there on first use.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, SupportedCipherSuite};

pub const CHAIN_FILE: &str = "chain.pem";
pub const KEY_FILE: &str = "key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no TLS certificate: {chain} and {key} are needed (the clinic's PKI issues them)")]
    Missing { chain: PathBuf, key: PathBuf },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("{path} is readable by others (mode {mode:o}); it must be 0600 or stricter")]
    KeyExposed { path: PathBuf, mode: u32 },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating the dev certificate")]
    Generate(#[source] rcgen::Error),
    #[error("the certificate and key do not make a TLS configuration")]
    Config(#[source] rustls::Error),
}

/// Whether a cipher suite is allowed: AEAD only (AES-GCM, ChaCha20-Poly1305).
fn aead(s: &SupportedCipherSuite) -> bool {
    let name = format!("{:?}", s.suite());
    name.contains("_GCM_") || name.contains("CHACHA20_POLY1305")
}

/// The TLS configuration from PEM files.
pub fn server_config(chain: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Read { path, source }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
        .map_err(read(chain))?
        .collect::<Result<_, _>>()
        .map_err(read(chain))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(chain.to_path_buf()));
    }
    let mode = fs::metadata(key)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyExposed {
            path: key.to_path_buf(),
            mode,
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(read(key))?;
    let mut provider = ring::default_provider();
    provider.cipher_suites.retain(aead);
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The chain and key paths under a `tls/` directory.
pub fn files(tls_dir: &Path) -> (PathBuf, PathBuf) {
    (tls_dir.join(CHAIN_FILE), tls_dir.join(KEY_FILE))
}

/// Dev mode: the self-signed pair in `tls_dir`, generated on first use (for `localhost`,
/// `127.0.0.1` and `::1`). Returns whether it was generated now.
pub fn ensure_dev_certificate(tls_dir: &Path) -> Result<bool, TlsError> {
    let (chain, key) = files(tls_dir);
    if chain.exists() && key.exists() {
        return Ok(false);
    }
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Write { path, source }
    };
    fs::create_dir_all(tls_dir).map_err(write_err(tls_dir))?;
    let names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let pair = rcgen::generate_simple_self_signed(names).map_err(TlsError::Generate)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key)
        .map_err(write_err(&key))?;
    f.write_all(pair.signing_key.serialize_pem().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(write_err(&key))?;
    fs::write(&chain, pair.cert.pem()).map_err(write_err(&chain))?;
    Ok(true)
}

/// The TLS configuration for a data directory: its `tls/` files, which dev mode creates.
pub fn for_data_dir(data_dir: &Path, dev: bool) -> Result<(Arc<ServerConfig>, bool), TlsError> {
    let dir = data_dir.join("tls");
    let generated = if dev {
        ensure_dev_certificate(&dir)?
    } else {
        false
    };
    let (chain, key) = files(&dir);
    if !chain.exists() || !key.exists() {
        return Err(TlsError::Missing { chain, key });
    }
    Ok((server_config(&chain, &key)?, generated))
}
