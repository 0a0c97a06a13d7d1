//! The USB watcher: for each block-device uevent, decide from sysfs whether it is a USB
//! mass-storage stick; record every stick's insertion and removal (vendor, product, serial);
//! mount a stick's partitions read-only in a private directory, hand a bundle found there to
//! the installer, and unmount when done or when the stick is pulled. Anything not on USB is
//! ignored without being opened.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use models::bundle::MANIFEST_FILE;
use tokio::sync::Mutex;

use super::mount::{MountError, Mounter};
use super::sysfs::{Kind, Sysfs, UsbStick};
use super::uevent::{Uevent, UeventAction};
use crate::audit::{Action, AuditLog, Entry};
use crate::install::{Installer, Origin, Outcome, Refusal};

/// What receives a bundle found on a stick.
pub trait BundleSink: Send + Sync {
    fn install<'a>(
        &'a self,
        dir: &'a Path,
        origin: &'a Origin,
    ) -> Pin<Box<dyn Future<Output = Result<Outcome, Refusal>> + Send + 'a>>;
}

impl BundleSink for Installer {
    fn install<'a>(
        &'a self,
        dir: &'a Path,
        origin: &'a Origin,
    ) -> Pin<Box<dyn Future<Output = Result<Outcome, Refusal>> + Send + 'a>> {
        Box::pin(Installer::install(self, dir, origin))
    }
}

/// Where bundles are looked for on a mounted partition: its root when it holds a manifest,
/// else each top-level directory holding one (symlinks are not followed).
pub fn find_bundles(mount: &Path) -> Vec<PathBuf> {
    let is_manifest = |dir: &Path| {
        std::fs::symlink_metadata(dir.join(MANIFEST_FILE)).is_ok_and(|m| m.file_type().is_file())
    };
    if is_manifest(mount) {
        return vec![mount.to_owned()];
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(mount)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| is_manifest(p))
        .collect();
    found.sort();
    found
}

struct State {
    /// Sticks present, by their USB device path, with the block devices seen on them.
    sticks: HashMap<String, (UsbStick, BTreeSet<String>)>,
    /// Mounted partitions: device name → mount point.
    mounted: HashMap<String, PathBuf>,
    /// Devices being mounted or read (a repeated add event for one is ignored).
    busy: BTreeSet<String>,
}

/// The watcher.
pub struct UsbWatcher {
    sysfs: Sysfs,
    mounter: Arc<dyn Mounter>,
    /// Where device nodes are (`/dev`).
    dev_dir: PathBuf,
    /// The private directory of mount points.
    mount_dir: PathBuf,
    sink: Arc<dyn BundleSink>,
    audit: AuditLog,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for UsbWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsbWatcher")
            .field("sysfs", &self.sysfs)
            .field("mount_dir", &self.mount_dir)
            .finish_non_exhaustive()
    }
}

fn origin(stick: &UsbStick, devname: &str) -> Origin {
    Origin {
        device: devname.to_owned(),
        vendor: stick.vendor.clone(),
        product: stick.product.clone(),
        serial: stick.serial.clone(),
    }
}

fn stick_entry(action: Action, stick: &UsbStick, devname: &str) -> Entry {
    Entry::new(action)
        .detail("device", devname)
        .detail("vendor", &stick.vendor)
        .detail("product", &stick.product)
        .detail("serial", &stick.serial)
        .detail(
            "usb_id",
            format!("{}:{}", stick.vendor_id, stick.product_id),
        )
}

impl UsbWatcher {
    pub fn new(
        sysfs: Sysfs,
        mounter: Arc<dyn Mounter>,
        dev_dir: PathBuf,
        mount_dir: PathBuf,
        sink: Arc<dyn BundleSink>,
        audit: AuditLog,
    ) -> Result<UsbWatcher, MountError> {
        super::mount::private_dir(&mount_dir)?;
        Ok(UsbWatcher {
            sysfs,
            mounter,
            dev_dir,
            mount_dir,
            sink,
            audit,
            state: Arc::new(Mutex::new(State {
                sticks: HashMap::new(),
                mounted: HashMap::new(),
                busy: BTreeSet::new(),
            })),
        })
    }

    async fn record(&self, entry: Entry) {
        if let Err(e) = self.audit.append(entry).await {
            tracing::error!(
                error = sandbox::error_chain::chain(&e),
                "audit record of a USB event failed"
            );
        }
    }

    /// Handles one event; returns the task installing from it, if any (tests await it).
    pub async fn handle(&self, ev: &Uevent) -> Option<tokio::task::JoinHandle<()>> {
        match ev.action {
            UeventAction::Add => self.added(ev).await,
            UeventAction::Remove => {
                self.removed(ev).await;
                None
            }
            UeventAction::Change | UeventAction::Other => None,
        }
    }

    async fn added(&self, ev: &Uevent) -> Option<tokio::task::JoinHandle<()>> {
        let (stick, accepted, class) = match self.sysfs.classify(&ev.devpath) {
            Kind::NotUsb => {
                tracing::debug!(device = %ev.devname, "block device not on USB: ignored");
                return None;
            }
            Kind::UsbOther { class, stick } => (stick, false, Some(class)),
            Kind::UsbStorage(stick) => (stick, true, None),
        };
        let first = {
            let mut st = self.state.lock().await;
            let entry = st
                .sticks
                .entry(stick.device_path.clone())
                .or_insert_with(|| (stick.clone(), BTreeSet::new()));
            let first = entry.1.is_empty();
            entry.1.insert(ev.devname.clone());
            first
        };
        if first {
            let mut entry = stick_entry(Action::UsbInserted, &stick, &ev.devname)
                .detail("accepted", accepted.to_string());
            if let Some(c) = &class {
                entry = entry.detail("interface_class", c);
            }
            self.record(entry).await;
            tracing::info!(vendor = %stick.vendor, product = %stick.product, serial = %stick.serial, accepted, "USB storage device inserted");
        }
        if !accepted {
            tracing::warn!(device = %ev.devname, class = ?class, "USB device is not mass storage: not mounted");
            return None;
        }
        if !self.state.lock().await.busy.insert(ev.devname.clone()) {
            tracing::debug!(device = %ev.devname, "already being read");
            return None;
        }
        let watcher = self.clone_parts();
        let ev = ev.clone();
        Some(tokio::spawn(async move {
            watcher.mount_and_install(&ev, &stick).await;
            watcher.state.lock().await.busy.remove(&ev.devname);
        }))
    }

    fn clone_parts(&self) -> UsbWatcher {
        UsbWatcher {
            sysfs: self.sysfs.clone(),
            mounter: self.mounter.clone(),
            dev_dir: self.dev_dir.clone(),
            mount_dir: self.mount_dir.clone(),
            sink: self.sink.clone(),
            audit: self.audit.clone(),
            state: self.state.clone(),
        }
    }

    async fn mount_and_install(&self, ev: &Uevent, stick: &UsbStick) {
        let device = self.dev_dir.join(&ev.devname);
        let target = self.mount_dir.join(&ev.devname);
        if let Err(e) = super::mount::private_dir(&target) {
            tracing::error!(error = sandbox::error_chain::chain(&e), "no mount point");
            return;
        }
        let mounter = self.mounter.clone();
        let (dev, tgt) = (device.clone(), target.clone());
        let mounted = tokio::task::spawn_blocking(move || mounter.mount(&dev, &tgt)).await;
        let fs = match mounted {
            Ok(Ok(fs)) => fs,
            Ok(Err(MountError::NoFilesystem { .. })) if ev.devtype == "disk" => {
                // A partitioned stick: its partitions come as events of their own.
                let _ = std::fs::remove_dir(&target);
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(device = %ev.devname, error = sandbox::error_chain::chain(&e), "USB partition not mounted");
                let _ = std::fs::remove_dir(&target);
                return;
            }
            Err(_) => return,
        };
        self.state
            .lock()
            .await
            .mounted
            .insert(ev.devname.clone(), target.clone());
        tracing::info!(device = %ev.devname, fs, "USB partition mounted read-only");
        let origin = origin(stick, &ev.devname);
        let bundles = find_bundles(&target);
        match bundles.as_slice() {
            [] => {
                self.record(
                    stick_entry(Action::BundleRejected, stick, &ev.devname)
                        .detail("reason", "no_bundle"),
                )
                .await;
                tracing::warn!(device = %ev.devname, "no model bundle on this partition; you can remove the stick");
            }
            [one] => {
                // The installer records the outcome and tells the journal.
                let _ = self.sink.install(one, &origin).await;
            }
            several => {
                self.record(
                    stick_entry(Action::BundleRejected, stick, &ev.devname)
                        .detail("reason", "several_bundles")
                        .detail("count", several.len().to_string()),
                )
                .await;
                tracing::warn!(device = %ev.devname, count = several.len(), "several model bundles on one stick: bring one at a time; nothing installed");
            }
        }
        self.unmount(&ev.devname, false).await;
    }

    async fn unmount(&self, devname: &str, detach: bool) {
        let Some(target) = self.state.lock().await.mounted.remove(devname) else {
            return;
        };
        let mounter = self.mounter.clone();
        let t = target.clone();
        match tokio::task::spawn_blocking(move || mounter.unmount(&t, detach)).await {
            Ok(Ok(())) => {
                let _ = std::fs::remove_dir(&target);
                tracing::info!(device = devname, "USB partition unmounted");
            }
            Ok(Err(e)) => {
                tracing::error!(
                    device = devname,
                    error = sandbox::error_chain::chain(&e),
                    "unmount failed"
                )
            }
            Err(_) => {}
        }
    }

    async fn removed(&self, ev: &Uevent) {
        // Pulled while mounted: detach at once (open files fail, the install is refused).
        self.unmount(&ev.devname, true).await;
        let gone = {
            let mut st = self.state.lock().await;
            let key = st
                .sticks
                .iter()
                .find(|(_, (_, devs))| devs.contains(&ev.devname))
                .map(|(k, _)| k.clone());
            key.and_then(|k| {
                let (_, devs) = st.sticks.get_mut(&k)?;
                devs.remove(&ev.devname);
                if devs.is_empty() {
                    st.sticks.remove(&k).map(|(s, _)| s)
                } else {
                    None
                }
            })
        };
        if let Some(stick) = gone {
            self.record(stick_entry(Action::UsbRemoved, &stick, &ev.devname))
                .await;
            tracing::info!(vendor = %stick.vendor, serial = %stick.serial, "USB storage device removed");
        }
    }

    /// Block devices present before phiboxd started (a stick inserted before boot), read from
    /// `class/block/*/uevent` and handled as add events, disks before their partitions.
    pub async fn coldplug(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let class = self.sysfs.root().join("class/block");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&class).into_iter().flatten().flatten() {
            let Ok(link) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let link = link.to_string_lossy().into_owned();
            let Some(at) = link.find("/devices/") else {
                continue;
            };
            let devpath = link[at..].to_owned();
            let Ok(uevent) = std::fs::read_to_string(entry.path().join("uevent")) else {
                continue;
            };
            // Through the same parser as a kernel message, so the same checks apply.
            let mut msg =
                format!("add@{devpath}\0ACTION=add\0DEVPATH={devpath}\0SUBSYSTEM=block\0");
            for line in uevent.lines() {
                msg.push_str(line);
                msg.push('\0');
            }
            if let Some(ev) = super::uevent::parse(msg.as_bytes()) {
                found.push(ev);
            }
        }
        found.sort_by_key(|ev| (ev.devpath.len(), ev.devpath.clone()));
        let mut tasks = Vec::new();
        for ev in &found {
            if let Some(t) = self.handle(ev).await {
                tasks.push(t);
            }
        }
        tasks
    }

    /// Reads uevents until the socket fails.
    pub async fn run(self, socket: super::uevent::UeventSocket) -> std::io::Result<()> {
        // Subscribed first, then the scan: a stick inserted in between is seen at least once
        // (a second add for the same partition finds it mounted or the install busy).
        let _ = self.coldplug().await;
        loop {
            let ev = socket.next().await?;
            let _ = self.handle(&ev).await;
        }
    }
}
