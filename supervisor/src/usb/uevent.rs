//! Kernel uevents for block devices, read from the kernel's own netlink multicast group
//! (NETLINK_KOBJECT_UEVENT, group 1) so that the box needs no udev rules of its own. A message
//! is `ACTION@DEVPATH\0KEY=VALUE\0…`; only messages sent by the kernel (netlink port 0) are
//! believed, since any local process may send to the group.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recvfrom, socket, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use tokio::io::unix::AsyncFd;

/// Largest message read (the kernel's uevent buffer is 2 KiB).
const MAX_MESSAGE: usize = 8192;

/// What happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UeventAction {
    Add,
    Remove,
    Change,
    Other,
}

/// One block-device uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: UeventAction,
    /// Below /sys, e.g. `/devices/pci0000:00/…/block/sdb/sdb1`.
    pub devpath: String,
    pub subsystem: String,
    /// e.g. `sdb1`; the node is `/dev/<devname>`.
    pub devname: String,
    /// `disk` or `partition`.
    pub devtype: String,
}

/// Parses a kernel uevent message; `None` for anything malformed or not about a block device.
pub fn parse(msg: &[u8]) -> Option<Uevent> {
    let mut parts = msg.split(|b| *b == 0).filter(|p| !p.is_empty());
    let header = std::str::from_utf8(parts.next()?).ok()?;
    let (_, header_path) = header.split_once('@')?;
    let mut ev = Uevent {
        action: UeventAction::Other,
        devpath: String::new(),
        subsystem: String::new(),
        devname: String::new(),
        devtype: String::new(),
    };
    for part in parts {
        let Ok(kv) = std::str::from_utf8(part) else {
            continue;
        };
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        match k {
            "ACTION" => {
                ev.action = match v {
                    "add" => UeventAction::Add,
                    "remove" => UeventAction::Remove,
                    "change" => UeventAction::Change,
                    _ => UeventAction::Other,
                }
            }
            "DEVPATH" => ev.devpath = v.to_owned(),
            "SUBSYSTEM" => v.clone_into(&mut ev.subsystem),
            "DEVNAME" => v.clone_into(&mut ev.devname),
            "DEVTYPE" => v.clone_into(&mut ev.devtype),
            _ => {}
        }
    }
    let plain = |s: &str| {
        !s.is_empty() && !s.contains("..") && !s.contains('/') && s.chars().all(|c| !c.is_control())
    };
    if ev.subsystem != "block"
        || ev.devpath != header_path
        || !ev.devpath.starts_with("/devices/")
        || ev.devpath.contains("/../")
        || !plain(&ev.devname)
    {
        return None;
    }
    Some(ev)
}

/// What the `usb_uevent` fuzz target runs: the parser never panics, and what it accepts
/// names a device node directly in /dev and a path below /sys/devices.
#[doc(hidden)]
pub fn fuzz_check(msg: &[u8]) {
    if let Some(ev) = parse(msg) {
        assert!(!ev.devname.is_empty() && !ev.devname.contains('/') && ev.devname != "..");
        assert!(ev.devpath.starts_with("/devices/") && !ev.devpath.contains("/../"));
        assert_eq!(ev.subsystem, "block");
    }
}

/// The kernel's uevent socket.
#[derive(Debug)]
pub struct UeventSocket {
    fd: AsyncFd<OwnedFd>,
}

impl UeventSocket {
    /// Subscribes to the kernel's uevents (needs root).
    pub fn open() -> std::io::Result<UeventSocket> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))?;
        // Sound for the reason given in inference::link: the OwnedFd moves into the AsyncFd.
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        Ok(UeventSocket { fd })
    }

    /// The next block-device event sent by the kernel.
    pub async fn next(&self) -> std::io::Result<Uevent> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let mut guard = self.fd.readable().await?;
            let got = guard.try_io(|fd| {
                recvfrom::<NetlinkAddr>(fd.get_ref().as_raw_fd(), &mut buf).map_err(Into::into)
            });
            match got {
                Ok(Ok((n, Some(from)))) if from.pid() == 0 => {
                    if let Some(ev) = parse(&buf[..n]) {
                        return Ok(ev);
                    }
                }
                // From a process, not the kernel, or no sender: ignored.
                Ok(Ok(_)) => {}
                // ENOBUFS: the kernel dropped events; keep reading (the caller rescans).
                Ok(Err(e)) if e.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(fields: &[&str]) -> Vec<u8> {
        let mut m = Vec::new();
        for f in fields {
            m.extend_from_slice(f.as_bytes());
            m.push(0);
        }
        m
    }

    #[test]
    fn a_partition_event_is_read() {
        let p = "/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb/sdb1";
        let m = msg(&[
            &format!("add@{p}"),
            "ACTION=add",
            &format!("DEVPATH={p}"),
            "SUBSYSTEM=block",
            "MAJOR=8",
            "MINOR=17",
            "DEVNAME=sdb1",
            "DEVTYPE=partition",
            "SEQNUM=4242",
        ]);
        let ev = parse(&m).unwrap();
        assert_eq!(ev.action, UeventAction::Add);
        assert_eq!(ev.devname, "sdb1");
        assert_eq!(ev.devtype, "partition");
        assert_eq!(ev.devpath, p);
    }

    #[test]
    fn other_subsystems_and_crafted_messages_are_ignored() {
        let usb = msg(&[
            "add@/devices/x",
            "ACTION=add",
            "DEVPATH=/devices/x",
            "SUBSYSTEM=usb",
        ]);
        assert_eq!(parse(&usb), None);
        for bad in [
            // DEVNAME that would leave /dev.
            msg(&[
                "add@/devices/x",
                "ACTION=add",
                "DEVPATH=/devices/x",
                "SUBSYSTEM=block",
                "DEVNAME=../etc/shadow",
            ]),
            // Header and DEVPATH disagree.
            msg(&[
                "add@/devices/x",
                "ACTION=add",
                "DEVPATH=/devices/y",
                "SUBSYSTEM=block",
                "DEVNAME=sdb",
            ]),
            // A path outside /sys/devices.
            msg(&[
                "add@/../../etc",
                "ACTION=add",
                "DEVPATH=/../../etc",
                "SUBSYSTEM=block",
                "DEVNAME=sdb",
            ]),
            msg(&[
                "add@/devices/a/../../x",
                "ACTION=add",
                "DEVPATH=/devices/a/../../x",
                "SUBSYSTEM=block",
                "DEVNAME=sdb",
            ]),
            // udev's own format, and garbage.
            b"libudev\0\xfe\xed\xca\xfe".to_vec(),
            vec![0xff; 40],
            Vec::new(),
        ] {
            assert_eq!(parse(&bad), None, "{:?}", String::from_utf8_lossy(&bad));
        }
    }
}
