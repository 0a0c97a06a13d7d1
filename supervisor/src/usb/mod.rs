//! USB sticks: kernel uevents (`uevent`), deciding from sysfs what a block device is
//! (`sysfs`), mounting read-only (`mount`), and the watcher that ties them to the installer
//! and the audit trail (`watcher`).

pub mod mount;
pub mod sysfs;
pub mod uevent;
pub mod watcher;

pub use mount::{KernelMounter, Mounter};
pub use sysfs::{Kind, Sysfs, UsbStick};
pub use uevent::{Uevent, UeventAction, UeventSocket};
pub use watcher::{find_bundles, BundleSink, UsbWatcher};
