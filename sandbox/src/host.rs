//! The narrow interface between the confinement logic and the kernel. Every privileged call the
//! launcher makes goes through [`Host`], so the order and arguments of the setup can be unit
//! tested against a recording fake without root, and the real implementation stays a thin,
//! obviously-correct mapping onto syscalls.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;

use crate::landlock_rules::{self, Enforcement, LandlockError, Rule};

/// Host-facing operations used while confining a child.
pub trait Host {
    fn unshare(&mut self, flags: CloneFlags) -> io::Result<()>;
    fn sethostname(&mut self, name: &str) -> io::Result<()>;
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount(&mut self, target: &Path, flags: MntFlags) -> io::Result<()>;
    /// Pins `path` (O_PATH) before the old root disappears; returns a path that names it.
    fn pin_source(&mut self, path: &Path) -> io::Result<PathBuf>;
    /// Closes every pinned source.
    fn release_sources(&mut self);
    fn mkdir(&mut self, path: &Path) -> io::Result<()>;
    fn create_file(&mut self, path: &Path) -> io::Result<()>;
    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()>;
    fn rmdir(&mut self, path: &Path) -> io::Result<()>;
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn chdir(&mut self, path: &Path) -> io::Result<()>;
    fn cap_clear(&mut self, set: CapSet) -> io::Result<()>;
    fn cap_drop_bounding(&mut self, cap: Capability) -> io::Result<()>;
    fn setgroups_empty(&mut self) -> io::Result<()>;
    fn setresgid(&mut self, gid: u32) -> io::Result<()>;
    fn setresuid(&mut self, uid: u32) -> io::Result<()>;
    fn set_no_new_privs(&mut self) -> io::Result<()>;
    fn setrlimit(&mut self, resource: Resource, value: u64) -> io::Result<()>;
    /// Sets this process's nice value (its threads, including later ones, inherit it).
    fn set_nice(&mut self, nice: i32) -> io::Result<()>;
    fn landlock(&mut self, rules: &[Rule]) -> Result<Enforcement, LandlockError>;
    fn close_fds_except(&mut self, keep: &[RawFd]) -> io::Result<()>;
    fn seccomp(&mut self, program: &seccompiler::BpfProgram) -> io::Result<()>;
    /// Replaces the process image; returns only on failure.
    fn execve(&mut self, program: &Path, args: &[String], env: &[(String, String)]) -> io::Error;
}

/// The real kernel.
#[derive(Debug, Default)]
pub struct RealHost {
    pinned: Vec<OwnedFd>,
}

fn io<T>(r: nix::Result<T>) -> io::Result<T> {
    r.map_err(io::Error::from)
}

fn caps_io(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

impl Host for RealHost {
    fn unshare(&mut self, flags: CloneFlags) -> io::Result<()> {
        io(nix::sched::unshare(flags))
    }
    fn sethostname(&mut self, name: &str) -> io::Result<()> {
        io(nix::unistd::sethostname(name))
    }
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        io(nix::mount::mount(source, target, fstype, flags, data))
    }
    fn umount(&mut self, target: &Path, flags: MntFlags) -> io::Result<()> {
        io(nix::mount::umount2(target, flags))
    }
    fn pin_source(&mut self, path: &Path) -> io::Result<PathBuf> {
        use nix::fcntl::{open, OFlag};
        let fd = io(open(
            path,
            OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            nix::sys::stat::Mode::empty(),
        ))?;
        let p = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        self.pinned.push(fd);
        Ok(p)
    }
    fn release_sources(&mut self) {
        self.pinned.clear();
    }
    fn mkdir(&mut self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn create_file(&mut self, path: &Path) -> io::Result<()> {
        std::fs::File::create(path).map(drop)
    }
    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }
    fn rmdir(&mut self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        io(nix::unistd::pivot_root(new_root, put_old))
    }
    fn chdir(&mut self, path: &Path) -> io::Result<()> {
        io(nix::unistd::chdir(path))
    }
    fn cap_clear(&mut self, set: CapSet) -> io::Result<()> {
        caps::clear(None, set).map_err(caps_io)
    }
    fn cap_drop_bounding(&mut self, cap: Capability) -> io::Result<()> {
        caps::drop(None, CapSet::Bounding, cap).map_err(caps_io)
    }
    fn setgroups_empty(&mut self) -> io::Result<()> {
        io(nix::unistd::setgroups(&[]))
    }
    fn setresgid(&mut self, gid: u32) -> io::Result<()> {
        let g = nix::unistd::Gid::from_raw(gid);
        io(nix::unistd::setresgid(g, g, g))
    }
    fn setresuid(&mut self, uid: u32) -> io::Result<()> {
        let u = nix::unistd::Uid::from_raw(uid);
        io(nix::unistd::setresuid(u, u, u))
    }
    fn set_no_new_privs(&mut self) -> io::Result<()> {
        io(nix::sys::prctl::set_no_new_privs())
    }
    fn setrlimit(&mut self, resource: Resource, value: u64) -> io::Result<()> {
        io(nix::sys::resource::setrlimit(resource, value, value))
    }
    fn set_nice(&mut self, nice: i32) -> io::Result<()> {
        // nix has no setpriority. `who` 0 is the calling thread's process; the launcher is
        // single-threaded here, and the program's threads are created after exec.
        // SAFETY: setpriority takes plain integers and touches no memory of ours.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    fn landlock(&mut self, rules: &[Rule]) -> Result<Enforcement, LandlockError> {
        landlock_rules::apply(rules)
    }
    fn close_fds_except(&mut self, keep: &[RawFd]) -> io::Result<()> {
        crate::fds::close_all_except(keep)
    }
    fn seccomp(&mut self, program: &seccompiler::BpfProgram) -> io::Result<()> {
        seccompiler::apply_filter(program).map_err(|e| io::Error::other(e.to_string()))
    }
    fn execve(&mut self, program: &Path, args: &[String], env: &[(String, String)]) -> io::Error {
        let build = || -> io::Result<(CString, Vec<CString>, Vec<CString>)> {
            let prog = cstring(&program.to_string_lossy())?;
            let mut argv = vec![prog.clone()];
            for a in args {
                argv.push(cstring(a)?);
            }
            let envp = env
                .iter()
                .map(|(k, v)| cstring(&format!("{k}={v}")))
                .collect::<io::Result<Vec<_>>>()?;
            Ok((prog, argv, envp))
        };
        match build() {
            Ok((prog, argv, envp)) => match nix::unistd::execve(&prog, &argv, &envp) {
                Err(e) => io::Error::from(e),
                Ok(never) => match never {},
            },
            Err(e) => e,
        }
    }
}
