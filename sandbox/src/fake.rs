//! A recording fake of [`Host`] for unit tests of the setup logic without root.

use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;

use crate::host::Host;
use crate::landlock_rules::{Enforcement, LandlockError, Rule};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Unshare(CloneFlags),
    Sethostname(String),
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
    },
    Umount(PathBuf),
    PinSource(PathBuf),
    ReleaseSources,
    Mkdir(PathBuf),
    CreateFile(PathBuf),
    Symlink(PathBuf, PathBuf),
    Rmdir(PathBuf),
    PivotRoot(PathBuf, PathBuf),
    Chdir(PathBuf),
    CapClear(String),
    CapDropBounding(Capability),
    SetgroupsEmpty,
    Setresgid(u32),
    Setresuid(u32),
    NoNewPrivs,
    Setrlimit(Resource, u64),
    SetNice(i32),
    Landlock(Vec<Rule>),
    CloseFdsExcept(Vec<RawFd>),
    Seccomp,
    Execve(PathBuf, Vec<String>),
}

type FailWhen = Box<dyn Fn(&Call) -> bool>;

#[derive(Default)]
pub struct FakeHost {
    pub calls: Vec<Call>,
    /// Fails the first call this predicate matches (with EPERM).
    pub fail: Option<FailWhen>,
    /// What landlock reports; `Full` when unset.
    pub landlock: Option<Enforcement>,
}

impl std::fmt::Debug for FakeHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHost")
            .field("calls", &self.calls)
            .finish()
    }
}

impl FakeHost {
    fn record(&mut self, call: Call) -> io::Result<()> {
        let fail = self.fail.as_ref().is_some_and(|f| f(&call));
        self.calls.push(call);
        if fail {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        } else {
            Ok(())
        }
    }
}

impl Host for FakeHost {
    fn unshare(&mut self, flags: CloneFlags) -> io::Result<()> {
        self.record(Call::Unshare(flags))
    }
    fn sethostname(&mut self, name: &str) -> io::Result<()> {
        self.record(Call::Sethostname(name.into()))
    }
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        _data: Option<&str>,
    ) -> io::Result<()> {
        self.record(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.into(),
            fstype: fstype.map(str::to_string),
            flags,
        })
    }
    fn umount(&mut self, target: &Path, _flags: MntFlags) -> io::Result<()> {
        self.record(Call::Umount(target.into()))
    }
    fn pin_source(&mut self, path: &Path) -> io::Result<PathBuf> {
        self.record(Call::PinSource(path.into()))?;
        Ok(PathBuf::from("/proc/self/fd/pinned").join(path.strip_prefix("/").unwrap_or(path)))
    }
    fn release_sources(&mut self) {
        let _ = self.record(Call::ReleaseSources);
    }
    fn mkdir(&mut self, path: &Path) -> io::Result<()> {
        self.record(Call::Mkdir(path.into()))
    }
    fn create_file(&mut self, path: &Path) -> io::Result<()> {
        self.record(Call::CreateFile(path.into()))
    }
    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(Call::Symlink(target.into(), link.into()))
    }
    fn rmdir(&mut self, path: &Path) -> io::Result<()> {
        self.record(Call::Rmdir(path.into()))
    }
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.record(Call::PivotRoot(new_root.into(), put_old.into()))
    }
    fn chdir(&mut self, path: &Path) -> io::Result<()> {
        self.record(Call::Chdir(path.into()))
    }
    fn cap_clear(&mut self, set: CapSet) -> io::Result<()> {
        self.record(Call::CapClear(format!("{set:?}")))
    }
    fn cap_drop_bounding(&mut self, cap: Capability) -> io::Result<()> {
        self.record(Call::CapDropBounding(cap))
    }
    fn setgroups_empty(&mut self) -> io::Result<()> {
        self.record(Call::SetgroupsEmpty)
    }
    fn setresgid(&mut self, gid: u32) -> io::Result<()> {
        self.record(Call::Setresgid(gid))
    }
    fn setresuid(&mut self, uid: u32) -> io::Result<()> {
        self.record(Call::Setresuid(uid))
    }
    fn set_no_new_privs(&mut self) -> io::Result<()> {
        self.record(Call::NoNewPrivs)
    }
    fn set_nice(&mut self, nice: i32) -> io::Result<()> {
        self.record(Call::SetNice(nice))
    }
    fn setrlimit(&mut self, resource: Resource, value: u64) -> io::Result<()> {
        self.record(Call::Setrlimit(resource, value))
    }
    fn landlock(&mut self, rules: &[Rule]) -> Result<Enforcement, LandlockError> {
        let _ = self.record(Call::Landlock(rules.to_vec()));
        Ok(self.landlock.unwrap_or(Enforcement::Full))
    }
    fn close_fds_except(&mut self, keep: &[RawFd]) -> io::Result<()> {
        self.record(Call::CloseFdsExcept(keep.to_vec()))
    }
    fn seccomp(&mut self, _program: &seccompiler::BpfProgram) -> io::Result<()> {
        self.record(Call::Seccomp)
    }
    fn execve(&mut self, program: &Path, args: &[String], _env: &[(String, String)]) -> io::Error {
        let _ = self.record(Call::Execve(program.into(), args.to_vec()));
        io::Error::from_raw_os_error(libc::ENOENT)
    }
}
