//! What phiboxd does about bundles at start-up: open the model store (which removes what an
//! interrupted install left), choose the model to serve, load the trusted keys, and start
//! watching for USB sticks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use models::bundle::store::{Installed, Recovery, Store, StoreError};
use models::bundle::TrustedKeys;

use super::Installer;
use crate::audit::AuditLog;
use crate::config::BundlesSection;

/// The image's trusted public keys.
pub const IMAGE_TRUSTED_KEYS: &str = "/usr/share/phibox/trusted-keys";
/// The model store below the data directory.
pub const MODELS_DIR: &str = "models";
/// Dev mode's trusted keys below the data directory.
pub const DEV_TRUSTED_KEYS: &str = "trusted-keys";

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("the model store")]
    Store(#[from] StoreError),
    #[error("the trusted bundle keys")]
    Keys(#[from] models::bundle::keys::KeyError),
    #[error(
        "bundles.trusted_keys can only be set in dev mode: the appliance trusts the image's keys"
    )]
    KeysOverride,
    #[error("watching for USB sticks")]
    Usb(#[source] std::io::Error),
    #[error("the USB mount directory")]
    Mount(#[from] crate::usb::mount::MountError),
}

/// The opened store and what it holds.
#[derive(Debug)]
pub struct OpenedStore {
    pub store: Store,
    pub recovery: Recovery,
    pub active: Option<Installed>,
}

/// Opens the store in `data_dir`.
pub fn open_store(data_dir: &Path) -> Result<OpenedStore, BootError> {
    let (store, recovery) = Store::open(&data_dir.join(MODELS_DIR))?;
    if !recovery.removed_staging.is_empty() || !recovery.removed_versions.is_empty() {
        tracing::warn!(
            staging = ?recovery.removed_staging,
            versions = ?recovery.removed_versions,
            "removed what an interrupted model install left"
        );
    }
    let active = store.active()?;
    Ok(OpenedStore {
        store,
        recovery,
        active,
    })
}

/// The trusted keys and where they came from. A missing dev directory means no keys (every
/// bundle is refused, and the caller says so); a damaged key file is an error.
pub fn trusted_keys(
    cfg: &BundlesSection,
    data_dir: &Path,
    dev: bool,
) -> Result<(TrustedKeys, PathBuf), BootError> {
    let dir = match (&cfg.trusted_keys, dev) {
        (Some(_), false) => return Err(BootError::KeysOverride),
        (Some(d), true) => d.clone(),
        (None, true) => data_dir.join(DEV_TRUSTED_KEYS),
        (None, false) => PathBuf::from(IMAGE_TRUSTED_KEYS),
    };
    if dev && !dir.exists() {
        return Ok((TrustedKeys::default(), dir));
    }
    Ok((TrustedKeys::load_dir(&dir)?, dir))
}

/// Starts the USB watcher on the kernel's uevents.
pub fn watch_usb(
    cfg: &BundlesSection,
    installer: Arc<Installer>,
    audit: AuditLog,
) -> Result<tokio::task::JoinHandle<()>, BootError> {
    let socket = crate::usb::UeventSocket::open().map_err(BootError::Usb)?;
    let watcher = crate::usb::UsbWatcher::new(
        crate::usb::Sysfs::real(),
        Arc::new(crate::usb::KernelMounter),
        PathBuf::from("/dev"),
        cfg.mount_dir.clone(),
        installer,
        audit,
    )?;
    Ok(tokio::spawn(async move {
        if let Err(e) = watcher.run(socket).await {
            tracing::error!(error = %e, "the USB watcher stopped: sticks are no longer noticed");
        }
    }))
}
