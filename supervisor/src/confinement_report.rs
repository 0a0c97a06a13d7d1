//! Checks a running worker's confinement from outside, the way an auditor would, and renders
//! the findings. phiboxd refuses to keep a worker whose confinement does not hold.

use nix::unistd::Pid;
use sandbox::inspect;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot inspect the worker (pid {pid})")]
    Inspect {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("the worker is not confined: {0}")]
    NotConfined(String),
}

/// The facts established about a running worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub pid: i32,
    pub threads: usize,
    pub uid: String,
    pub interfaces: Vec<inspect::Interface>,
    pub root_entries: usize,
    pub mounts: usize,
}

/// Inspects `pid` and fails unless every confinement fact holds.
pub fn check(pid: Pid, planned_entries: usize) -> Result<Report, ReportError> {
    let io = |source| ReportError::Inspect {
        pid: pid.as_raw(),
        source,
    };
    let threads = inspect::threads(pid).map_err(io)?;
    if threads.is_empty() {
        return Err(ReportError::NotConfined("no threads found".into()));
    }
    for t in &threads {
        if let Some(problem) = inspect::confinement_problem(t) {
            return Err(ReportError::NotConfined(problem));
        }
    }
    let uid = threads[0].get("Uid").unwrap_or("").to_string();
    if uid.split_whitespace().any(|u| u == "0") {
        return Err(ReportError::NotConfined(format!("runs with uid {uid}")));
    }
    if !inspect::own_net_namespace(pid).map_err(io)? {
        return Err(ReportError::NotConfined(
            "shares the host's network namespace".into(),
        ));
    }
    let interfaces = inspect::interfaces(pid).map_err(io)?;
    if interfaces.iter().any(|i| i.up || i.name != "lo") {
        return Err(ReportError::NotConfined(format!(
            "has network interfaces {interfaces:?}"
        )));
    }
    let root = inspect::root_entries(pid).map_err(io)?;
    if root.len() != planned_entries {
        return Err(ReportError::NotConfined(format!(
            "its root holds {} entries, {planned_entries} were planned",
            root.len()
        )));
    }
    let mounts = inspect::mounts(pid).map_err(io)?;
    if let Some((m, _)) = mounts.iter().find(|(_, ro)| !ro) {
        return Err(ReportError::NotConfined(format!(
            "{} is writable",
            m.display()
        )));
    }
    Ok(Report {
        pid: pid.as_raw(),
        threads: threads.len(),
        uid,
        interfaces,
        root_entries: root.len(),
        mounts: mounts.len(),
    })
}

impl Report {
    /// Human-readable lines for the start-up summary.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!("worker pid {} (pid 1 in its own pid, mount, ipc, uts and cgroup namespaces)", self.pid),
            format!("all {} threads: Seccomp 2 (filter), NoNewPrivs 1, every capability set empty", self.threads),
            format!("runs as uid/gid {}", self.uid.split_whitespace().next().unwrap_or("?")),
            "network namespace of its own holding only a loopback that is down".to_string(),
            format!("root holds exactly the {} planned entries; all {} mounts read-only", self.root_entries, self.mounts),
            "landlock ABI 6 fully enforced (read-only access to the bound files, no TCP, scoped signals and abstract sockets)".to_string(),
        ]
    }
}
