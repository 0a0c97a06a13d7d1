//! Is a block device a USB mass-storage stick? Answered from sysfs alone: walking up from the
//! device's directory there must be a USB interface (its `subsystem` link names `usb`) whose
//! `bInterfaceClass` is 08 (mass storage), below a USB device whose vendor, product and serial
//! are read for the audit trail. Disks on SATA, NVMe, virtio, loop or anything else have no
//! such ancestors and are never touched. The root is a parameter so tests use a fake tree.

use std::path::{Path, PathBuf};

/// USB interface class of mass storage.
const MASS_STORAGE: &str = "08";
/// Longest attribute value kept (vendors put odd things in strings).
const MAX_ATTR: usize = 128;

/// A USB stick as the audit trail names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbStick {
    /// The USB device's directory below the sysfs root (identifies the stick across its
    /// partitions).
    pub device_path: String,
    pub vendor_id: String,
    pub product_id: String,
    /// `manufacturer`, `product` and `serial` strings (empty when the stick has none).
    pub vendor: String,
    pub product: String,
    pub serial: String,
}

/// What a block device is, as far as the installer cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    UsbStorage(UsbStick),
    /// On USB, but not mass storage (e.g. a vendor-specific interface): refused.
    UsbOther {
        class: String,
        stick: UsbStick,
    },
    NotUsb,
}

/// A sysfs tree (`/sys`, or a fake one in tests).
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

fn attr(dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read(dir.join(name)).ok()?;
    let text = String::from_utf8_lossy(&text);
    let clean: String = text
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ATTR)
        .collect();
    Some(clean)
}

fn subsystem_is_usb(dir: &Path) -> bool {
    std::fs::read_link(dir.join("subsystem"))
        .ok()
        .and_then(|l| l.file_name().map(|n| n == "usb"))
        .unwrap_or(false)
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    pub fn real() -> Sysfs {
        Sysfs::new("/sys")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Classifies the block device at `devpath` (as in its uevent: `/devices/…`).
    pub fn classify(&self, devpath: &str) -> Kind {
        let rel = devpath.trim_start_matches('/');
        if rel.split('/').any(|c| c == ".." || c == ".") {
            return Kind::NotUsb;
        }
        let mut dir = self.root.join(rel);
        let mut interface: Option<String> = None;
        while dir.starts_with(&self.root) && dir != self.root {
            if subsystem_is_usb(&dir) {
                if let Some(class) = attr(&dir, "bInterfaceClass") {
                    // The innermost interface decides.
                    interface.get_or_insert(class);
                } else if let (Some(vid), Some(pid)) =
                    (attr(&dir, "idVendor"), attr(&dir, "idProduct"))
                {
                    let stick = UsbStick {
                        device_path: format!(
                            "/{}",
                            dir.strip_prefix(&self.root).unwrap_or(&dir).display()
                        ),
                        vendor_id: vid,
                        product_id: pid,
                        vendor: attr(&dir, "manufacturer").unwrap_or_default(),
                        product: attr(&dir, "product").unwrap_or_default(),
                        serial: attr(&dir, "serial").unwrap_or_default(),
                    };
                    return match interface {
                        Some(c) if c == MASS_STORAGE => Kind::UsbStorage(stick),
                        Some(class) => Kind::UsbOther { class, stick },
                        None => Kind::UsbOther {
                            class: "none".into(),
                            stick,
                        },
                    };
                }
            }
            if !dir.pop() {
                break;
            }
        }
        Kind::NotUsb
    }
}

/// Builds fake sysfs trees (tests here and in `tests/`).
pub mod fake {
    use std::path::Path;

    /// Adds a device directory with attributes and a `subsystem` link to `bus`.
    pub fn device(root: &Path, path: &str, bus: &str, attrs: &[(&str, &str)]) {
        let dir = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(root.join("bus").join(bus)).unwrap();
        let link = dir.join("subsystem");
        if !link.exists() {
            std::os::unix::fs::symlink(root.join("bus").join(bus), link).unwrap();
        }
        for (k, v) in attrs {
            std::fs::write(dir.join(k), format!("{v}\n")).unwrap();
        }
    }

    /// Lists block device `devpath` in `class/block` with its `uevent` file, as the kernel does.
    pub fn class_block(root: &Path, devpath: &str, devtype: &str) {
        let dir = root.join(devpath.trim_start_matches('/'));
        let name = devpath.rsplit('/').next().unwrap();
        std::fs::write(
            dir.join("uevent"),
            format!("MAJOR=8\nMINOR=0\nDEVNAME={name}\nDEVTYPE={devtype}\n"),
        )
        .unwrap();
        let class = root.join("class/block");
        std::fs::create_dir_all(&class).unwrap();
        let _ = std::os::unix::fs::symlink(format!("../..{devpath}"), class.join(name));
    }

    /// A USB stick on `port` (e.g. `2-1`) with interface class `class`, whose disk is `disk`;
    /// returns the devpath of its first partition.
    pub fn usb_stick(root: &Path, port: &str, class: &str, disk: &str, serial: &str) -> String {
        let usb_dev = format!("/devices/pci0000:00/0000:00:14.0/usb2/{port}");
        device(
            root,
            &usb_dev,
            "usb",
            &[
                ("idVendor", "0781"),
                ("idProduct", "5581"),
                ("manufacturer", "SanDisk"),
                ("product", "Ultra"),
                ("serial", serial),
            ],
        );
        let iface = format!("{usb_dev}/{port}:1.0");
        device(root, &iface, "usb", &[("bInterfaceClass", class)]);
        let disk_path = format!("{iface}/host6/target6:0:0/6:0:0:0/block/{disk}");
        device(root, &disk_path, "block", &[]);
        let part = format!("{disk_path}/{disk}1");
        device(root, &part, "block", &[]);
        class_block(root, &disk_path, "disk");
        class_block(root, &part, "partition");
        part
    }

    /// A SATA disk's first partition.
    pub fn sata_disk(root: &Path, disk: &str) -> String {
        let disk_path =
            format!("/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/{disk}");
        device(
            root,
            "/devices/pci0000:00/0000:00:17.0",
            "pci",
            &[("class", "0x010601")],
        );
        device(root, &disk_path, "block", &[]);
        let part = format!("{disk_path}/{disk}1");
        device(root, &part, "block", &[]);
        class_block(root, &disk_path, "disk");
        class_block(root, &part, "partition");
        part
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_usb_mass_storage_is_a_stick() {
        let t = tempfile::tempdir().unwrap();
        let sys = Sysfs::new(t.path());
        let stick = fake::usb_stick(t.path(), "2-1", "08", "sdb", "4C530001");
        match sys.classify(&stick) {
            Kind::UsbStorage(s) => {
                assert_eq!(s.vendor, "SanDisk");
                assert_eq!(s.product, "Ultra");
                assert_eq!(s.serial, "4C530001");
                assert_eq!(
                    (s.vendor_id.as_str(), s.product_id.as_str()),
                    ("0781", "5581")
                );
                assert_eq!(s.device_path, "/devices/pci0000:00/0000:00:14.0/usb2/2-1");
            }
            other => panic!("{other:?}"),
        }
        // The whole disk is the same stick.
        let disk = stick.rsplit_once('/').unwrap().0;
        assert!(matches!(sys.classify(disk), Kind::UsbStorage(_)));
        // A vendor-specific interface on USB that also shows a block device: refused.
        let odd = fake::usb_stick(t.path(), "2-2", "ff", "sdc", "X");
        assert!(matches!(sys.classify(&odd), Kind::UsbOther { ref class, .. } if class == "ff"));
        // The box's own disks.
        let sata = fake::sata_disk(t.path(), "sda");
        assert_eq!(sys.classify(&sata), Kind::NotUsb);
        fake::device(
            t.path(),
            "/devices/pci0000:00/0000:00:04.0/virtio1/block/vda",
            "block",
            &[],
        );
        assert_eq!(
            sys.classify("/devices/pci0000:00/0000:00:04.0/virtio1/block/vda"),
            Kind::NotUsb
        );
        fake::device(t.path(), "/devices/virtual/block/loop0", "block", &[]);
        assert_eq!(sys.classify("/devices/virtual/block/loop0"), Kind::NotUsb);
        // Paths that are not there or try to leave the tree.
        assert_eq!(sys.classify("/devices/none/block/sdz"), Kind::NotUsb);
        assert_eq!(
            sys.classify(&format!("{stick}/../../../../../../../..")),
            Kind::NotUsb
        );
    }

    #[test]
    fn attribute_files_with_an_idvendor_but_no_usb_link_are_not_usb() {
        let t = tempfile::tempdir().unwrap();
        // A PCI device with look-alike attributes.
        fake::device(
            t.path(),
            "/devices/pci0000:00/0000:00:1f.0",
            "pci",
            &[
                ("idVendor", "1"),
                ("idProduct", "2"),
                ("bInterfaceClass", "08"),
            ],
        );
        fake::device(
            t.path(),
            "/devices/pci0000:00/0000:00:1f.0/block/sdx",
            "block",
            &[],
        );
        let sys = Sysfs::new(t.path());
        assert_eq!(
            sys.classify("/devices/pci0000:00/0000:00:1f.0/block/sdx"),
            Kind::NotUsb
        );
    }
}
