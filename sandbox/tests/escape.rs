//! Escape tests: the probe, confined by the real launcher under the real worker policy, tries
//! every way out and each attempt must be denied with the expected errno or kill the probe
//! with SIGSYS. Needs root (CI runs it as root); without root it fails, it never skips.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use sandbox::{ConfinedChild, DataFile, SandboxSpec, Termination};

const SIGSYS: i32 = 31;
const JAIL: &str = env!("CARGO_BIN_EXE_phibox-jail");
const PROBE: &str = env!("CARGO_BIN_EXE_phibox-sandbox-probe");

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the sandbox escape tests need root (namespaces, mounts, uid switch): run them as root"
    );
}

struct Fixture {
    dir: tempfile::TempDir,
    model: PathBuf,
}

fn fixture() -> Fixture {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend((0..300_000u32).map(|i| (i * 7 % 251) as u8));
    std::fs::write(&model, bytes).unwrap();
    Fixture { dir, model }
}

fn spec(f: &Fixture, args: &[&str]) -> SandboxSpec {
    let mut spec = SandboxSpec::new(PROBE, 65534, 65534);
    spec.args = args.iter().map(|s| s.to_string()).collect();
    spec.data_files.push(DataFile {
        source: f.model.clone(),
        path: "/model/model.gguf".into(),
    });
    spec
}

fn start(spec: &SandboxSpec) -> ConfinedChild {
    let plan = spec.plan().expect("plan");
    sandbox::spawn(Path::new(JAIL), &plan, Stdio::inherit(), Stdio::inherit()).expect("spawn")
}

fn receive(child: &ConfinedChild, timeout: Duration) -> Option<String> {
    let fd = child.control();
    let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(fd), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    if poll(&mut fds, PollTimeout::from(ms)).ok()? == 0 {
        return None;
    }
    let mut buf = [0u8; 512];
    match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Sigsys,
    Errno(i32),
}

fn attempt(f: &Fixture, name: &str, arg: &str) -> (Termination, Option<String>) {
    let mut child = start(&spec(f, &["escape", name, arg]));
    let trying = receive(&child, Duration::from_secs(20));
    assert_eq!(
        trying.as_deref(),
        Some(format!("trying {name}").as_str()),
        "the probe did not reach {name}"
    );
    let reply = receive(&child, Duration::from_secs(20));
    let end = child.wait().unwrap();
    (end, reply)
}

#[test]
fn every_escape_is_denied() {
    let f = fixture();
    let model = "/model/model.gguf";
    let host_pid = std::process::id().to_string();
    let data_dir = f.dir.path().to_string_lossy().into_owned();
    let data_file = f.model.to_string_lossy().into_owned();
    let sock_path = f.dir.path().join("host.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let sock = sock_path.to_string_lossy().into_owned();
    let cases: Vec<(&str, &str, Expect)> = vec![
        ("socket-inet", "", Expect::Sigsys),
        ("socket-inet6", "", Expect::Sigsys),
        ("socket-netlink", "", Expect::Sigsys),
        ("socket-unix", "", Expect::Sigsys),
        ("connect-unix", &sock, Expect::Sigsys),
        ("open-read", "/etc/shadow", Expect::Errno(libc::ENOENT)),
        ("open-read", "/etc/passwd", Expect::Errno(libc::ENOENT)),
        ("open-read", &data_dir, Expect::Errno(libc::ENOENT)),
        ("open-read", &data_file, Expect::Errno(libc::ENOENT)),
        ("open-read", "/proc/1/environ", Expect::Errno(libc::EACCES)),
        ("open-read", "/proc/self/mem", Expect::Errno(libc::EACCES)),
        ("create", "/newfile", Expect::Sigsys),
        ("create", "/model/new", Expect::Sigsys),
        ("open-write", model, Expect::Sigsys),
        ("truncate", model, Expect::Sigsys),
        ("execve", PROBE, Expect::Sigsys),
        ("execve", "/bin/sh", Expect::Sigsys),
        ("fork", "", Expect::Sigsys),
        ("ptrace", &host_pid, Expect::Sigsys),
        ("process-vm-readv", &host_pid, Expect::Sigsys),
        ("mount", "", Expect::Sigsys),
        ("umount", "", Expect::Sigsys),
        ("pivot-root", "", Expect::Sigsys),
        ("chroot", "", Expect::Sigsys),
        ("unshare", "", Expect::Sigsys),
        ("setns", "", Expect::Sigsys),
        ("bpf", "", Expect::Sigsys),
        ("io-uring-setup", "", Expect::Sigsys),
        ("userfaultfd", "", Expect::Sigsys),
        ("perf-event-open", "", Expect::Sigsys),
        ("keyctl", "", Expect::Sigsys),
        ("add-key", "", Expect::Sigsys),
        ("init-module", "", Expect::Sigsys),
        ("kexec-load", "", Expect::Sigsys),
        ("reboot", "", Expect::Sigsys),
        ("kill", &host_pid, Expect::Sigsys),
        ("capset", "", Expect::Sigsys),
        ("ambient-raise", "", Expect::Sigsys),
        ("setuid", "", Expect::Sigsys),
    ];
    let mut failures = Vec::new();
    for (name, arg, expect) in &cases {
        let (end, reply) = attempt(&f, name, arg);
        let ok = match expect {
            Expect::Sigsys => end == Termination::Signaled(SIGSYS) && reply.is_none(),
            Expect::Errno(e) => {
                end == Termination::Exited(0) && reply.as_deref() == Some(&format!("errno {e}"))
            }
        };
        if !ok {
            failures.push(format!(
                "{name} {arg}: expected {expect:?}, got {end:?} {reply:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "escapes not denied as expected:\n{}",
        failures.join("\n")
    );
    assert!(nix::sys::signal::kill(nix::unistd::Pid::this(), None).is_ok());
}

#[test]
fn harmless_work_succeeds_and_the_child_looks_confined_from_outside() {
    let f = fixture();
    let spec = spec(&f, &["serve", "/model/model.gguf"]);
    let plan = spec.plan().unwrap();
    let mut child =
        sandbox::spawn(Path::new(JAIL), &plan, Stdio::inherit(), Stdio::inherit()).unwrap();
    let reply = receive(&child, Duration::from_secs(30)).expect("probe reply");
    let bytes = std::fs::read(&f.model).unwrap();
    let sum = bytes
        .iter()
        .fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(b as u64));
    assert!(
        reply.starts_with(&format!(
            "ready bytes={} sum={sum:x} mem=16384 ",
            bytes.len()
        )),
        "{reply}"
    );

    let pid = child.pid();
    let threads = sandbox::inspect::threads(pid).unwrap();
    assert!(
        threads.len() >= 3,
        "the probe keeps idle threads: {threads:?}"
    );
    for t in &threads {
        assert_eq!(sandbox::inspect::confinement_problem(t), None);
        assert_eq!(t.get("Uid"), Some("65534\t65534\t65534\t65534"));
        assert_eq!(t.get("Gid"), Some("65534\t65534\t65534\t65534"));
        assert_eq!(t.get("Groups"), Some(""));
    }
    let main = threads.iter().find(|t| t.tid == pid.as_raw()).unwrap();
    assert_eq!(
        main.get("NSpid").and_then(|s| s.split_whitespace().last()),
        Some("1")
    );
    assert!(sandbox::inspect::own_net_namespace(pid).unwrap());
    let ifs = sandbox::inspect::interfaces(pid).unwrap();
    assert_eq!(
        ifs,
        vec![sandbox::inspect::Interface {
            name: "lo".into(),
            up: false
        }]
    );
    // Cross-check with iproute2 from outside.
    let ip = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ip", "-o", "link"])
        .output()
        .expect("nsenter and ip (util-linux, iproute2) are needed");
    let text = String::from_utf8_lossy(&ip.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(": lo:") && text.contains("state DOWN") && !text.contains(",UP"),
        "{text}"
    );

    // Only stdio and the control socket are open.
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    fds.sort_unstable();
    assert_eq!(fds, vec![0, 1, 2, 3]);
    let fd3 = std::fs::read_link(format!("/proc/{pid}/fd/3")).unwrap();
    assert!(fd3.to_string_lossy().starts_with("socket:"), "{fd3:?}");
    let host = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-u", "hostname"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&host.stdout).trim(),
        "phibox-sandbox"
    );

    let entries = sandbox::inspect::root_entries(pid).unwrap();
    let planned: std::collections::BTreeSet<PathBuf> =
        plan.root.iter().map(|e| e.path().to_path_buf()).collect();
    assert_eq!(
        entries, planned,
        "the root holds exactly the planned entries"
    );
    for (mount, ro) in sandbox::inspect::mounts(pid).unwrap() {
        assert!(ro, "{mount:?} is writable");
    }
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        std::fs::read_link("/proc/self/ns/pid").unwrap()
    );
    for ns in ["mnt", "ipc", "uts", "cgroup"] {
        assert_ne!(
            std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap(),
            std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap(),
            "{ns} namespace is shared"
        );
    }

    send(child.control().as_raw_fd(), b"quit", MsgFlags::empty()).unwrap();
    assert_eq!(child.wait().unwrap(), Termination::Exited(0));
}

#[test]
fn the_probe_refuses_to_run_unconfined() {
    require_root();
    let out = std::process::Command::new(PROBE)
        .args(["serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running under the phibox sandbox"));
}

#[test]
fn a_setup_failure_is_reported_with_its_step_and_path() {
    let f = fixture();
    let mut plan = spec(&f, &["serve"]).plan().unwrap();
    for e in &mut plan.root {
        if let sandbox::RootEntry::File { source, path, .. } = e {
            if path == Path::new("/model/model.gguf") {
                *source = f.dir.path().join("vanished.gguf");
            }
        }
    }
    let err =
        sandbox::spawn(Path::new(JAIL), &plan, Stdio::inherit(), Stdio::inherit()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("pinning bind source") && msg.contains("vanished.gguf"),
        "{msg}"
    );
}

#[test]
fn dropping_the_handle_kills_the_confined_program() {
    let f = fixture();
    let child = start(&spec(&f, &["serve"]));
    let reply = receive(&child, Duration::from_secs(30)).unwrap();
    assert!(reply.starts_with("ready"), "{reply}");
    let pid = child.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(child);
    assert!(
        !Path::new(&format!("/proc/{pid}/status")).exists(),
        "the program outlived its handle"
    );
}
