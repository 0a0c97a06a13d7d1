//! Looking at a confined process from outside, as an auditor would: the seccomp, no_new_privs,
//! capability and uid lines of every thread, its network namespace and interfaces, its mounts
//! and the entries of its root. Used by the tests and by phiboxd's start-up report.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

/// The confinement-relevant lines of one thread's `/proc/<pid>/task/<tid>/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadStatus {
    pub tid: i32,
    pub fields: BTreeMap<String, String>,
}

impl ThreadStatus {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

/// Status of every thread of `pid`.
pub fn threads(pid: Pid) -> io::Result<Vec<ThreadStatus>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path().join("status"))?;
        let fields = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        out.push(ThreadStatus { tid, fields });
    }
    out.sort_by_key(|t| t.tid);
    Ok(out)
}

/// Why a thread does not look confined, if it does not.
pub fn confinement_problem(t: &ThreadStatus) -> Option<String> {
    let zero = "0000000000000000";
    let expect = [
        ("Seccomp", "2"),
        ("NoNewPrivs", "1"),
        ("CapInh", zero),
        ("CapPrm", zero),
        ("CapEff", zero),
        ("CapBnd", zero),
        ("CapAmb", zero),
    ];
    for (k, v) in expect {
        if t.get(k) != Some(v) {
            return Some(format!("thread {} has {k}: {:?}", t.tid, t.get(k)));
        }
    }
    None
}

/// Whether `pid` is in a different network namespace than the caller.
pub fn own_net_namespace(pid: Pid) -> io::Result<bool> {
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net"))?;
    let ours = std::fs::read_link("/proc/self/ns/net")?;
    Ok(theirs != ours)
}

/// An interface of the child's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub up: bool,
}

/// The interfaces in `pid`'s network namespace, read from a helper thread that joins it.
pub fn interfaces(pid: Pid) -> io::Result<Vec<Interface>> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::scope(|s| {
        s.spawn(|| -> io::Result<Vec<Interface>> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let mut seen = BTreeMap::new();
            for a in nix::ifaddrs::getifaddrs()? {
                let up = a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
                seen.entry(a.interface_name).or_insert(up);
            }
            Ok(seen
                .into_iter()
                .map(|(name, up)| Interface { name, up })
                .collect())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace helper thread panicked")))
    })
}

/// Every path in `pid`'s root, except below its `/proc` mount.
pub fn root_entries(pid: Pid) -> io::Result<BTreeSet<PathBuf>> {
    let base = PathBuf::from(format!("/proc/{pid}/root"));
    let mut out = BTreeSet::new();
    let mut stack = vec![PathBuf::from("/")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(base.join(dir.strip_prefix("/").unwrap_or(&dir)))? {
            let entry = entry?;
            let path = dir.join(entry.file_name());
            if entry.file_type()?.is_dir() && path != Path::new("/proc") {
                stack.push(path.clone());
            }
            out.insert(path);
        }
    }
    Ok(out)
}

/// The mount points of `pid` with whether each is read-only.
pub fn mounts(pid: Pid) -> io::Result<Vec<(PathBuf, bool)>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let opts = f.get(5)?;
            Some((PathBuf::from(f.get(4)?), opts.split(',').any(|o| o == "ro")))
        })
        .collect())
}
