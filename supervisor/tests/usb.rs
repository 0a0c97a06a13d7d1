//! The USB watcher: only USB mass storage is mounted (a fake sysfs tree holds a SATA disk, a
//! virtio disk, a loop device, a USB device with a vendor-specific interface and a stick),
//! every stick's insertion and removal is audited with vendor, product and serial; and, as
//! root, a real ext4 file system on a loop device is mounted read-only nosuid nodev noexec
//! noatime, its bundle installed by the real installer (probe in the confined worker), and
//! unmounted.

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};

use models::bundle::store::Store;
use supervisor::audit::Action;
use supervisor::install::{Installer, Origin, Outcome, Refusal};
use supervisor::usb::mount::MountError;
use supervisor::usb::sysfs::fake;
use supervisor::usb::{BundleSink, Mounter, Sysfs, Uevent, UeventAction, UsbWatcher};
use support::bundles::{signer, tiny};

fn event(action: UeventAction, devpath: &str, devtype: &str) -> Uevent {
    Uevent {
        action,
        devpath: devpath.into(),
        subsystem: "block".into(),
        devname: devpath.rsplit('/').next().unwrap().into(),
        devtype: devtype.into(),
    }
}

fn parent(devpath: &str) -> String {
    devpath.rsplit_once('/').unwrap().0.to_owned()
}

/// "Mounts" by copying a prepared directory into the mount point; records every call.
#[derive(Default)]
struct FakeMounter {
    content: HashMap<PathBuf, PathBuf>,
    calls: Mutex<Vec<String>>,
}

impl Mounter for FakeMounter {
    fn mount(&self, device: &Path, target: &Path) -> Result<&'static str, MountError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("mount {}", device.display()));
        let Some(src) = self.content.get(device) else {
            return Err(MountError::NoFilesystem {
                device: device.to_owned(),
            });
        };
        copy_tree(src, target);
        Ok("vfat")
    }

    fn unmount(&self, target: &Path, detach: bool) -> Result<(), MountError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("unmount {} detach={detach}", target.display()));
        std::fs::remove_dir_all(target).unwrap();
        std::fs::create_dir(target).unwrap();
        Ok(())
    }
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

/// Records what it was given.
#[derive(Default)]
struct FakeSink {
    got: Mutex<Vec<(String, Origin)>>,
}

impl BundleSink for FakeSink {
    fn install<'a>(
        &'a self,
        dir: &'a Path,
        origin: &'a Origin,
    ) -> Pin<Box<dyn Future<Output = Result<Outcome, Refusal>> + Send + 'a>> {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        self.got.lock().unwrap().push((name, origin.clone()));
        Box::pin(async {
            Ok(Outcome::AlreadyActive {
                label: "fake@1".into(),
            })
        })
    }
}

#[tokio::test]
async fn only_usb_mass_storage_is_mounted_and_every_stick_is_recorded() {
    let t = tempfile::tempdir().unwrap();
    let sys = t.path().join("sys");
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let sata = fake::sata_disk(&sys, "sda");
    fake::device(
        &sys,
        "/devices/pci0000:00/0000:00:04.0/virtio1/block/vda",
        "block",
        &[],
    );
    fake::device(&sys, "/devices/virtual/block/loop0", "block", &[]);
    let stick = fake::usb_stick(&sys, "2-1", "08", "sdb", "SER-ONE");
    let empty = fake::usb_stick(&sys, "2-2", "08", "sdc", "SER-EMPTY");
    let two = fake::usb_stick(&sys, "2-3", "08", "sdd", "SER-TWO");
    let odd = fake::usb_stick(&sys, "2-4", "ff", "sde", "SER-ODD");

    // What each partition holds.
    let contents = t.path().join("contents");
    std::fs::create_dir_all(contents.join("one/bundle")).unwrap();
    std::fs::write(contents.join("one/bundle/manifest.toml"), "x").unwrap();
    std::fs::write(contents.join("one/notes.txt"), "x").unwrap();
    std::fs::create_dir_all(contents.join("empty")).unwrap();
    for b in ["a", "b"] {
        std::fs::create_dir_all(contents.join("two").join(b)).unwrap();
        std::fs::write(contents.join("two").join(b).join("manifest.toml"), "x").unwrap();
    }
    let dev = t.path().join("dev");
    let mut mounter = FakeMounter::default();
    for (devname, what) in [
        ("sdb1", "one"),
        ("sdc1", "empty"),
        ("sdd1", "two"),
        ("sda1", "one"),
        ("sde1", "one"),
    ] {
        mounter
            .content
            .insert(dev.join(devname), contents.join(what));
    }
    let mounter = Arc::new(mounter);
    let sink = Arc::new(FakeSink::default());
    let audit = support::audit_log(&data);
    let watcher = UsbWatcher::new(
        Sysfs::new(&sys),
        mounter.clone(),
        dev.clone(),
        t.path().join("run/usb"),
        sink.clone(),
        audit,
    )
    .unwrap();
    let mut events = vec![
        event(UeventAction::Add, &parent(&sata), "disk"),
        event(UeventAction::Add, &sata, "partition"),
        event(
            UeventAction::Add,
            "/devices/pci0000:00/0000:00:04.0/virtio1/block/vda",
            "disk",
        ),
        event(UeventAction::Add, "/devices/virtual/block/loop0", "disk"),
    ];
    for p in [&stick, &empty, &two, &odd] {
        events.push(event(UeventAction::Add, &parent(p), "disk"));
        events.push(event(UeventAction::Add, p, "partition"));
    }
    for p in [&stick, &empty, &two, &odd] {
        events.push(event(UeventAction::Remove, p, "partition"));
        events.push(event(UeventAction::Remove, &parent(p), "disk"));
    }
    for ev in &events {
        if let Some(task) = watcher.handle(ev).await {
            task.await.unwrap();
        }
    }

    let calls = mounter.calls.lock().unwrap().clone();
    assert!(
        calls.iter().all(|c| !c.contains("sda")
            && !c.contains("vda")
            && !c.contains("loop")
            && !c.contains("sde")),
        "touched a disk that is not a USB stick: {calls:?}"
    );
    let mounts: Vec<_> = calls.iter().filter(|c| c.starts_with("mount")).collect();
    assert_eq!(
        mounts.len(),
        6,
        "each stick's disk and partition were tried: {calls:?}"
    );
    let unmounts = calls.iter().filter(|c| c.starts_with("unmount")).count();
    assert_eq!(
        unmounts, 3,
        "each mounted partition was unmounted: {calls:?}"
    );
    let got = sink.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "bundle");
    assert_eq!(got[0].1.serial, "SER-ONE");
    assert_eq!(got[0].1.vendor, "SanDisk");
    assert_eq!(got[0].1.device, "sdb1");

    let records = support::audit_records(&data);
    let summary: Vec<_> = records
        .iter()
        .filter(|r| r.action != Action::Startup && r.action != Action::Seal)
        .map(|r| {
            format!(
                "{} {} {}",
                r.action.name(),
                r.detail.get("serial").cloned().unwrap_or_default(),
                r.detail
                    .get("reason")
                    .or(r.detail.get("accepted"))
                    .cloned()
                    .unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "usb_inserted SER-ONE true",
            "usb_inserted SER-EMPTY true",
            "bundle_rejected SER-EMPTY no_bundle",
            "usb_inserted SER-TWO true",
            "bundle_rejected SER-TWO several_bundles",
            "usb_inserted SER-ODD false",
            "usb_removed SER-ONE ",
            "usb_removed SER-EMPTY ",
            "usb_removed SER-TWO ",
            "usb_removed SER-ODD ",
        ]
    );
    let odd_record = records
        .iter()
        .find(|r| r.detail.get("serial").map(String::as_str) == Some("SER-ODD"))
        .unwrap();
    assert_eq!(odd_record.detail["interface_class"], "ff");
    assert_eq!(odd_record.detail["usb_id"], "0781:5581");
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The options of the mount at `target`, from /proc/self/mountinfo.
fn mount_options(target: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().find_map(|l| {
        let f: Vec<_> = l.split(' ').collect();
        (Path::new(f[4]) == target)
            .then(|| format!("{} {}", f[5], l.split(" - ").nth(1).unwrap_or("")))
    })
}

/// The real installer, checking the mount while it is in use.
struct CheckingSink {
    installer: Installer,
    seen: Mutex<Option<String>>,
}

impl BundleSink for CheckingSink {
    fn install<'a>(
        &'a self,
        dir: &'a Path,
        origin: &'a Origin,
    ) -> Pin<Box<dyn Future<Output = Result<Outcome, Refusal>> + Send + 'a>> {
        *self.seen.lock().unwrap() = mount_options(dir.parent().unwrap());
        Box::pin(self.installer.install(dir, origin))
    }
}

struct Loop(String);
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bundle_on_a_real_ext4_stick_is_mounted_read_only_installed_and_unmounted() {
    support::require_root();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let s = signer(t.path());
    // The stick's files, then an ext4 image made from them and a loop device for it.
    let content = t.path().join("stick");
    s.bundle(&content.join("clinic-model"), "clinic", 1, &tiny(7));
    std::fs::write(content.join("readme.txt"), "extra files are ignored").unwrap();
    let image = t.path().join("stick.img");
    sh(Command::new("truncate").args(["-s", "64M"]).arg(&image));
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(&image));
    let loopdev = sh(Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&image));
    let _detach = Loop(loopdev.clone());
    let devname = loopdev.trim_start_matches("/dev/").to_owned();

    // sysfs says the loop device is a USB stick (the real path is a mount, not sysfs).
    let sys = t.path().join("sys");
    let stick = fake::usb_stick(&sys, "3-1", "08", "sdq", "EXT4-STICK");
    let devpath = format!("{}/{devname}", parent(&stick));
    fake::device(&sys, &devpath, "block", &[]);

    let (store, _) = Store::open(&data.join("models")).unwrap();
    let first = s.bundle(&t.path().join("first"), "clinic", 0, &tiny(1));
    let serving = support::launch(
        "phibox-worker",
        &first.join("model.gguf"),
        support::settings(),
    );
    let h = supervisor::inference::spawn_manager(serving.clone());
    let audit = support::audit_log(&data);
    let installer = Installer::new(
        store.clone(),
        s.trusted.clone(),
        serving,
        h.clone(),
        audit.clone(),
    );
    let sink = Arc::new(CheckingSink {
        installer,
        seen: Mutex::new(None),
    });
    let mount_dir = t.path().join("run/usb");
    let watcher = UsbWatcher::new(
        Sysfs::new(&sys),
        Arc::new(supervisor::usb::KernelMounter),
        PathBuf::from("/dev"),
        mount_dir.clone(),
        sink.clone(),
        audit,
    )
    .unwrap();
    let task = watcher
        .handle(&event(UeventAction::Add, &devpath, "disk"))
        .await
        .unwrap();
    task.await.unwrap();

    let seen = sink
        .seen
        .lock()
        .unwrap()
        .clone()
        .expect("mounted during the install");
    let (opts, fs) = seen.split_once(' ').unwrap();
    for o in ["ro", "nosuid", "nodev", "noexec", "noatime"] {
        assert!(opts.split(',').any(|x| x == o), "{o} missing from {opts}");
    }
    assert!(fs.starts_with("ext4 "), "{fs}");
    assert_eq!(
        mount_options(&mount_dir.join(&devname)),
        None,
        "unmounted after the install"
    );
    assert_eq!(
        store.check_active().unwrap().unwrap().manifest.label(),
        "clinic@1"
    );
    watcher
        .handle(&event(UeventAction::Remove, &devpath, "disk"))
        .await;
    let actions: Vec<_> = support::audit_records(&data)
        .iter()
        .filter(|r| r.detail.get("serial").map(String::as_str) == Some("EXT4-STICK"))
        .map(|r| r.action)
        .collect();
    assert_eq!(
        actions,
        [
            Action::UsbInserted,
            Action::BundleInstalled,
            Action::BundleActivated,
            Action::UsbRemoved
        ]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_stick_present_at_start_is_found_by_the_start_up_scan() {
    let t = tempfile::tempdir().unwrap();
    let sys = t.path().join("sys");
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    fake::sata_disk(&sys, "sda");
    fake::usb_stick(&sys, "2-1", "08", "sdb", "SER-BOOT");
    let contents = t.path().join("contents");
    std::fs::create_dir_all(contents.join("bundle")).unwrap();
    std::fs::write(contents.join("bundle/manifest.toml"), "x").unwrap();
    let dev = t.path().join("dev");
    let mut mounter = FakeMounter::default();
    mounter.content.insert(dev.join("sdb1"), contents.clone());
    mounter.content.insert(dev.join("sda1"), contents);
    let mounter = Arc::new(mounter);
    let sink = Arc::new(FakeSink::default());
    let watcher = UsbWatcher::new(
        Sysfs::new(&sys),
        mounter.clone(),
        dev,
        t.path().join("run/usb"),
        sink.clone(),
        support::audit_log(&data),
    )
    .unwrap();
    for task in watcher.coldplug().await {
        task.await.unwrap();
    }
    let calls = mounter.calls.lock().unwrap().clone();
    assert!(calls.iter().all(|c| !c.contains("sda")), "{calls:?}");
    assert_eq!(sink.got.lock().unwrap().len(), 1);
    assert_eq!(sink.got.lock().unwrap()[0].1.serial, "SER-BOOT");
}

/// Holds the install until released, so the stick can be pulled in the middle of it.
struct BlockingSink {
    started: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl BundleSink for BlockingSink {
    fn install<'a>(
        &'a self,
        _dir: &'a Path,
        _origin: &'a Origin,
    ) -> Pin<Box<dyn Future<Output = Result<Outcome, Refusal>> + Send + 'a>> {
        Box::pin(async move {
            self.started.notify_one();
            self.release.notified().await;
            Err(Refusal::Task)
        })
    }
}

#[tokio::test]
async fn a_stick_pulled_during_an_install_is_detached_at_once_and_recorded() {
    let t = tempfile::tempdir().unwrap();
    let sys = t.path().join("sys");
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let part = fake::usb_stick(&sys, "2-1", "08", "sdb", "SER-PULLED");
    let contents = t.path().join("contents");
    std::fs::create_dir_all(contents.join("bundle")).unwrap();
    std::fs::write(contents.join("bundle/manifest.toml"), "x").unwrap();
    let dev = t.path().join("dev");
    let mut mounter = FakeMounter::default();
    mounter.content.insert(dev.join("sdb1"), contents);
    let mounter = Arc::new(mounter);
    let sink = Arc::new(BlockingSink {
        started: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let watcher = UsbWatcher::new(
        Sysfs::new(&sys),
        mounter.clone(),
        dev,
        t.path().join("run/usb"),
        sink.clone(),
        support::audit_log(&data),
    )
    .unwrap();
    let task = watcher
        .handle(&event(UeventAction::Add, &part, "partition"))
        .await
        .unwrap();
    sink.started.notified().await;
    // A second add event for the same partition while it is being read does nothing.
    assert!(watcher
        .handle(&event(UeventAction::Add, &part, "partition"))
        .await
        .is_none());
    watcher
        .handle(&event(UeventAction::Remove, &part, "partition"))
        .await;
    watcher
        .handle(&event(UeventAction::Remove, &parent(&part), "disk"))
        .await;
    {
        let calls = mounter.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(
            calls[1].starts_with("unmount") && calls[1].ends_with("detach=true"),
            "{calls:?}"
        );
    }
    sink.release.notify_one();
    task.await.unwrap();
    assert_eq!(mounter.calls.lock().unwrap().len(), 2, "no second unmount");
    let actions: Vec<_> = support::audit_records(&data)
        .iter()
        .filter(|r| r.detail.get("serial").map(String::as_str) == Some("SER-PULLED"))
        .map(|r| r.action)
        .collect();
    assert_eq!(actions, [Action::UsbInserted, Action::UsbRemoved]);
}
