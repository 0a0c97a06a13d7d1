//! Escape attempts for the confinement tests: each named attempt makes one forbidden syscall and
//! reports the errno it got. Under the sandbox most of them never report: seccomp kills the
//! process. Shared by the probe and by the worker's `--escape` self-test, so that the escape
//! tests run against the real worker binary in its serving state too.

use std::ffi::CString;

/// Every attempt this module knows.
pub const NAMES: &[&str] = &[
    "socket-inet",
    "socket-inet6",
    "socket-netlink",
    "socket-unix",
    "connect-unix",
    "open-read",
    "open-write",
    "create",
    "truncate",
    "execve",
    "fork",
    "ptrace",
    "process-vm-readv",
    "mount",
    "umount",
    "pivot-root",
    "chroot",
    "unshare",
    "setns",
    "bpf",
    "io-uring-setup",
    "userfaultfd",
    "perf-event-open",
    "keyctl",
    "add-key",
    "init-module",
    "kexec-load",
    "reboot",
    "kill",
    "capset",
    "ambient-raise",
    "setuid",
];

fn errno_of(r: libc::c_long) -> String {
    if r < 0 {
        format!(
            "errno {}",
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        )
    } else {
        "allowed".to_string()
    }
}

fn cpath(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// Buffers that syscall arguments point into; they live until the call has returned.
#[derive(Default)]
struct Buffers {
    strings: Vec<CString>,
    bytes: Vec<Vec<u8>>,
    words: Vec<Vec<usize>>,
}

impl Buffers {
    fn cstr(&mut self, s: &str) -> usize {
        self.strings.push(cpath(s));
        self.strings.last().map_or(0, |c| c.as_ptr() as usize)
    }
    fn zeroed(&mut self, len: usize) -> usize {
        self.bytes.push(vec![0u8; len]);
        self.bytes.last_mut().map_or(0, |b| b.as_mut_ptr() as usize)
    }
    fn words(&mut self, w: Vec<usize>) -> usize {
        self.words.push(w);
        self.words.last_mut().map_or(0, |b| b.as_mut_ptr() as usize)
    }
    fn sockaddr_un(&mut self, path: &str) -> usize {
        // struct sockaddr_un: sa_family_t (u16) then a 108-byte path.
        let mut b = vec![0u8; 110];
        b[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        for (d, s) in b[2..109].iter_mut().zip(path.bytes()) {
            *d = s;
        }
        self.bytes.push(b);
        self.bytes.last_mut().map_or(0, |b| b.as_mut_ptr() as usize)
    }
}

/// The syscall number and arguments of one escape attempt.
fn escape_call(name: &str, arg: &str, buf: &mut Buffers) -> Option<(libc::c_long, [usize; 6])> {
    let pid = arg.parse::<usize>().unwrap_or(1);
    let i = |v: i32| v as usize;
    let call = match name {
        "socket-inet" => (
            libc::SYS_socket,
            [i(libc::AF_INET), i(libc::SOCK_STREAM), 0, 0, 0, 0],
        ),
        "socket-inet6" => (
            libc::SYS_socket,
            [i(libc::AF_INET6), i(libc::SOCK_DGRAM), 0, 0, 0, 0],
        ),
        "socket-netlink" => (
            libc::SYS_socket,
            [i(libc::AF_NETLINK), i(libc::SOCK_RAW), 0, 0, 0, 0],
        ),
        "socket-unix" => (
            libc::SYS_socket,
            [i(libc::AF_UNIX), i(libc::SOCK_STREAM), 0, 0, 0, 0],
        ),
        "connect-unix" => (libc::SYS_connect, [3, buf.sockaddr_un(arg), 110, 0, 0, 0]),
        "open-read" => (
            libc::SYS_openat,
            [i(libc::AT_FDCWD), buf.cstr(arg), i(libc::O_RDONLY), 0, 0, 0],
        ),
        "open-write" => (
            libc::SYS_openat,
            [i(libc::AT_FDCWD), buf.cstr(arg), i(libc::O_WRONLY), 0, 0, 0],
        ),
        "create" => (
            libc::SYS_openat,
            [
                i(libc::AT_FDCWD),
                buf.cstr(arg),
                i(libc::O_CREAT | libc::O_WRONLY),
                0o600,
                0,
                0,
            ],
        ),
        "truncate" => (libc::SYS_truncate, [buf.cstr(arg), 0, 0, 0, 0, 0]),
        "execve" => {
            let path = buf.cstr(arg);
            let argv = buf.words(vec![path, 0]);
            let envp = buf.words(vec![0]);
            (libc::SYS_execve, [path, argv, envp, 0, 0, 0])
        }
        "fork" => (libc::SYS_clone, [i(libc::SIGCHLD), 0, 0, 0, 0, 0]),
        "ptrace" => (
            libc::SYS_ptrace,
            [i(libc::PTRACE_ATTACH as i32), pid, 0, 0, 0, 0],
        ),
        "process-vm-readv" => {
            let local_buf = buf.zeroed(8);
            let local = buf.words(vec![local_buf, 8]);
            let remote = buf.words(vec![0x40_0000, 8]);
            (libc::SYS_process_vm_readv, [pid, local, 1, remote, 1, 0])
        }
        "mount" => (
            libc::SYS_mount,
            [
                buf.cstr("none"),
                buf.cstr("/proc"),
                buf.cstr("tmpfs"),
                0,
                0,
                0,
            ],
        ),
        "umount" => (
            libc::SYS_umount2,
            [buf.cstr("/proc"), i(libc::MNT_DETACH), 0, 0, 0, 0],
        ),
        "pivot-root" => (
            libc::SYS_pivot_root,
            [buf.cstr("/"), buf.cstr("/"), 0, 0, 0, 0],
        ),
        "chroot" => (libc::SYS_chroot, [buf.cstr("/proc"), 0, 0, 0, 0, 0]),
        "unshare" => (
            libc::SYS_unshare,
            [i(libc::CLONE_NEWUSER | libc::CLONE_NEWNET), 0, 0, 0, 0, 0],
        ),
        "setns" => (libc::SYS_setns, [0, i(libc::CLONE_NEWNET), 0, 0, 0, 0]),
        "bpf" => (libc::SYS_bpf, [0, buf.zeroed(128), 128, 0, 0, 0]),
        "io-uring-setup" => (libc::SYS_io_uring_setup, [8, buf.zeroed(120), 0, 0, 0, 0]),
        "userfaultfd" => (libc::SYS_userfaultfd, [0; 6]),
        "perf-event-open" => (
            libc::SYS_perf_event_open,
            [buf.zeroed(128), 0, usize::MAX, usize::MAX, 0, 0],
        ),
        // KEYCTL_GET_KEYRING_ID of the session keyring (-3).
        "keyctl" => (libc::SYS_keyctl, [0, (-3isize) as usize, 0, 0, 0, 0]),
        "add-key" => {
            let (t, d) = (buf.cstr("user"), buf.cstr("phibox"));
            (libc::SYS_add_key, [t, d, d, 6, (-3isize) as usize, 0])
        }
        "init-module" => (libc::SYS_init_module, [0; 6]),
        "kexec-load" => (libc::SYS_kexec_load, [0; 6]),
        "reboot" => (
            libc::SYS_reboot,
            [
                i(libc::LINUX_REBOOT_MAGIC1),
                i(libc::LINUX_REBOOT_MAGIC2),
                i(libc::LINUX_REBOOT_CMD_CAD_OFF),
                0,
                0,
                0,
            ],
        ),
        "kill" => (libc::SYS_kill, [pid, i(libc::SIGTERM), 0, 0, 0, 0]),
        "capset" => {
            // __user_cap_header_struct { version 3, pid 0 }, then two data structs, all bits set.
            let hdr = buf.words(vec![0x2008_0522]);
            let data = buf.words(vec![usize::MAX; 3]);
            (libc::SYS_capset, [hdr, data, 0, 0, 0, 0])
        }
        // PR_CAP_AMBIENT_RAISE of CAP_SYS_ADMIN (21).
        "ambient-raise" => (
            libc::SYS_prctl,
            [
                i(libc::PR_CAP_AMBIENT),
                i(libc::PR_CAP_AMBIENT_RAISE),
                21,
                0,
                0,
                0,
            ],
        ),
        "setuid" => (libc::SYS_setuid, [0; 6]),
        _ => return None,
    };
    Some(call)
}

/// Tries one escape; returns its outcome as text (`errno N`, `allowed` or `unknown escape`).
pub fn attempt(name: &str, arg: &str) -> String {
    let mut buf = Buffers::default();
    let Some((nr, a)) = escape_call(name, arg, &mut buf) else {
        return format!("unknown escape {name}");
    };
    // SAFETY: every pointer argument points into `buf`, which outlives the call and holds
    // buffers of the sizes the syscall reads or writes; the probe exists to attempt this call.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    drop(buf);
    errno_of(r)
}
