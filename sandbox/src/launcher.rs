//! The confinement sequence run in the child before it executes the program, in the order the
//! mechanisms depend on each other: root, identity with capabilities, no_new_privs, rlimits,
//! landlock, descriptors, seccomp, execve. (The namespaces are entered by the launcher before it
//! forks the child, which becomes PID 1 of the new PID namespace.) Nothing untrusted has been
//! read by anyone at this point; the program itself reads untrusted input only after adding
//! its runtime filter (see [`crate::confine`]).

use std::convert::Infallible;
use std::os::fd::RawFd;
use std::path::PathBuf;

use crate::capabilities::{self, CapabilityError};
use crate::host::Host;
use crate::identity::{self, IdentityError};
use crate::landlock_rules::{self, Enforcement, LandlockError};
use crate::namespaces::{self, NamespaceError};
use crate::plan::Plan;
use crate::rlimits::{self, RlimitError};
use crate::rootfs::{self, RootfsError};
use crate::seccomp::{self, Policy, SeccompError, Stage};

/// A step of the setup failed; the child exits without running the program.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    #[error(transparent)]
    Rlimit(#[from] RlimitError),
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    #[error("landlock is only {0:?}ly enforced by this kernel (ABI 6 required); refusing to start (set allow_partial_landlock to override)")]
    LandlockNotEnforced(Enforcement),
    #[error("closing inherited file descriptors")]
    CloseFds(#[source] std::io::Error),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error("installing the seccomp filter")]
    SeccompInstall(#[source] std::io::Error),
    #[error("executing {program}")]
    Exec {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Hooks the launcher needs between steps (parent-death handling), kept out of [`Host`].
pub trait Lifecycle {
    /// Called right after the uid switch (which clears the parent-death signal).
    fn after_identity_switch(&mut self);
    /// Called when landlock is only partially enforced and the plan allows it.
    fn warn_partial_landlock(&mut self, enforcement: Enforcement);
}

/// Confines the calling process according to `plan` and executes the program. `keep` are the
/// descriptors that survive (besides stdio); descriptors meant to vanish at exec carry CLOEXEC.
pub fn confine_and_exec(
    plan: &Plan,
    host: &mut impl Host,
    life: &mut impl Lifecycle,
    keep: &[RawFd],
) -> Result<Infallible, SetupError> {
    namespaces::set_hostname(host, &plan.hostname)?;
    rootfs::build(plan, host)?;

    capabilities::drop_before_switch(host)?;
    identity::switch(host, plan.uid, plan.gid)?;
    capabilities::drop_after_switch(host)?;
    life.after_identity_switch();
    capabilities::no_new_privs(host)?;

    rlimits::apply(host, &plan.limits)?;
    // Build the filters before landlock/rlimits can get in the way of reading anything.
    let policy = Policy::worker()?;
    let clone3 = seccomp::clone3_enosys()?;
    let allow = policy.allow_list(Stage::Startup)?;

    match host.landlock(&landlock_rules::rules_for(plan))? {
        Enforcement::Full => {}
        partial if plan.allow_partial_landlock => life.warn_partial_landlock(partial),
        partial => return Err(SetupError::LandlockNotEnforced(partial)),
    }
    rlimits::apply_nofile(host, &plan.limits)?;
    host.close_fds_except(keep).map_err(SetupError::CloseFds)?;

    host.seccomp(&clone3).map_err(SetupError::SeccompInstall)?;
    host.seccomp(&allow).map_err(SetupError::SeccompInstall)?;
    let source = host.execve(&plan.program, &plan.args, &plan.env);
    Err(SetupError::Exec {
        program: plan.program.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, FakeHost};
    use crate::plan::{FileKind, Limits, RootEntry};
    use nix::mount::MsFlags;

    struct NoLife(Vec<Enforcement>);
    impl Lifecycle for NoLife {
        fn after_identity_switch(&mut self) {}
        fn warn_partial_landlock(&mut self, e: Enforcement) {
            self.0.push(e);
        }
    }

    fn plan() -> Plan {
        Plan {
            program: "/usr/bin/worker".into(),
            args: vec!["--x".into()],
            env: vec![],
            root: vec![
                RootEntry::Dir {
                    path: "/usr".into(),
                },
                RootEntry::Dir {
                    path: "/usr/bin".into(),
                },
                RootEntry::File {
                    source: "/usr/bin/worker".into(),
                    path: "/usr/bin/worker".into(),
                    kind: FileKind::Executable,
                },
                RootEntry::Symlink {
                    link: "/lib64".into(),
                    target: "usr/lib64".into(),
                },
                RootEntry::Dir {
                    path: "/dev".into(),
                },
                RootEntry::File {
                    source: "/dev/null".into(),
                    path: "/dev/null".into(),
                    kind: FileKind::Device,
                },
                RootEntry::Dir {
                    path: "/model".into(),
                },
                RootEntry::File {
                    source: "/data/m.gguf".into(),
                    path: "/model/m.gguf".into(),
                    kind: FileKind::Data,
                },
                RootEntry::Dir {
                    path: "/proc".into(),
                },
            ],
            uid: 65534,
            gid: 65534,
            hostname: "phibox-sandbox".into(),
            limits: Limits::default(),
            allow_partial_landlock: false,
            supervisor_pid: 1,
        }
    }

    fn run(host: &mut FakeHost, plan: &Plan) -> SetupError {
        let mut life = NoLife(vec![]);
        match confine_and_exec(plan, host, &mut life, &[3]) {
            Err(e) => e,
            Ok(never) => match never {},
        }
    }

    fn position(calls: &[Call], pred: impl Fn(&Call) -> bool) -> usize {
        calls.iter().position(pred).expect("call not made")
    }

    #[test]
    fn steps_run_in_the_required_order() {
        let mut host = FakeHost::default();
        let err = run(&mut host, &plan());
        // The fake's execve "fails", which is the only way the sequence returns.
        assert!(matches!(err, SetupError::Exec { .. }), "{err}");
        let c = &host.calls;
        let pivot = position(c, |c| matches!(c, Call::PivotRoot(..)));
        let bounding = position(c, |c| matches!(c, Call::CapDropBounding(_)));
        let uid = position(c, |c| matches!(c, Call::Setresuid(_)));
        let gid = position(c, |c| matches!(c, Call::Setresgid(_)));
        let groups = position(c, |c| matches!(c, Call::SetgroupsEmpty));
        let nnp = position(c, |c| matches!(c, Call::NoNewPrivs));
        let core = position(
            c,
            |c| matches!(c, Call::Setrlimit(r, 0) if *r == nix::sys::resource::Resource::RLIMIT_CORE),
        );
        let landlock = position(c, |c| matches!(c, Call::Landlock(_)));
        let nofile = position(
            c,
            |c| matches!(c, Call::Setrlimit(r, _) if *r == nix::sys::resource::Resource::RLIMIT_NOFILE),
        );
        let close = position(c, |c| matches!(c, Call::CloseFdsExcept(_)));
        let seccomp = position(c, |c| matches!(c, Call::Seccomp));
        let exec = position(c, |c| matches!(c, Call::Execve(..)));
        assert!(pivot < bounding && bounding < groups && groups < gid && gid < uid);
        assert!(uid < nnp && nnp < core && core < landlock && landlock < nofile);
        assert!(nofile < close && close < seccomp && seccomp < exec);
        // Two filters: clone3 -> ENOSYS, then the allow-list.
        assert_eq!(c.iter().filter(|c| matches!(c, Call::Seccomp)).count(), 2);
        assert_eq!(
            c[exec],
            Call::Execve("/usr/bin/worker".into(), vec!["--x".into()])
        );
    }

    #[test]
    fn the_cpu_priority_is_lowered_only_when_asked() {
        let mut host = FakeHost::default();
        run(&mut host, &plan());
        assert!(!host.calls.iter().any(|c| matches!(c, Call::SetNice(_))));
        let mut p = plan();
        p.limits.nice = 10;
        let mut host = FakeHost::default();
        run(&mut host, &p);
        let nice = position(&host.calls, |c| *c == Call::SetNice(10));
        let exec = position(&host.calls, |c| matches!(c, Call::Execve(..)));
        assert!(nice < exec);
    }

    #[test]
    fn every_bind_is_remounted_read_only_with_the_right_flags() {
        let mut host = FakeHost::default();
        run(&mut host, &plan());
        let remount = |target: &str| {
            host.calls.iter().find_map(|c| match c {
                Call::Mount {
                    target: t,
                    flags,
                    source: None,
                    ..
                } if t == std::path::Path::new(target) && flags.contains(MsFlags::MS_REMOUNT) => {
                    Some(*flags)
                }
                _ => None,
            })
        };
        let exe = remount("/tmp/usr/bin/worker").unwrap();
        assert!(exe.contains(MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID));
        assert!(!exe.contains(MsFlags::MS_NOEXEC));
        let dev = remount("/tmp/dev/null").unwrap();
        assert!(dev.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC));
        assert!(
            !dev.contains(MsFlags::MS_NODEV),
            "device nodes must stay usable"
        );
        let data = remount("/tmp/model/m.gguf").unwrap();
        assert!(data.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV));
        let root = remount("/").unwrap();
        assert!(root.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn sources_are_pinned_before_the_tmpfs_hides_them_and_old_root_is_detached() {
        let mut host = FakeHost::default();
        run(&mut host, &plan());
        let c = &host.calls;
        let last_pin = c
            .iter()
            .rposition(|c| matches!(c, Call::PinSource(_)))
            .unwrap();
        let tmpfs = position(
            c,
            |c| matches!(c, Call::Mount { fstype: Some(f), .. } if f == "tmpfs"),
        );
        assert!(last_pin < tmpfs);
        let umount = position(
            c,
            |c| matches!(c, Call::Umount(p) if p == std::path::Path::new("/.oldroot")),
        );
        let pivot = position(c, |c| matches!(c, Call::PivotRoot(..)));
        assert!(pivot < umount);
        assert!(c.contains(&Call::Symlink("usr/lib64".into(), "/tmp/lib64".into())));
        let proc_mount = position(
            c,
            |c| matches!(c, Call::Mount { fstype: Some(f), .. } if f == "proc"),
        );
        assert!(umount < proc_mount);
    }

    #[test]
    fn partial_landlock_is_refused_unless_overridden() {
        let mut host = FakeHost {
            landlock: Some(Enforcement::Partial),
            ..FakeHost::default()
        };
        let err = run(&mut host, &plan());
        assert!(
            matches!(err, SetupError::LandlockNotEnforced(Enforcement::Partial)),
            "{err}"
        );
        assert!(!host.calls.iter().any(|c| matches!(c, Call::Execve(..))));

        let mut host = FakeHost {
            landlock: Some(Enforcement::None),
            ..FakeHost::default()
        };
        let mut p = plan();
        p.allow_partial_landlock = true;
        let mut life = NoLife(vec![]);
        let err = confine_and_exec(&p, &mut host, &mut life, &[3]).unwrap_err();
        assert!(matches!(err, SetupError::Exec { .. }));
        assert_eq!(life.0, vec![Enforcement::None], "the override is announced");
    }

    #[test]
    fn a_failing_step_stops_the_sequence_with_its_own_error() {
        let mut host = FakeHost {
            fail: Some(Box::new(|c: &Call| matches!(c, Call::Setresuid(_)))),
            ..FakeHost::default()
        };
        let err = run(&mut host, &plan());
        assert!(
            matches!(
                err,
                SetupError::Identity(IdentityError::Uid { uid: 65534, .. })
            ),
            "{err}"
        );
        assert!(!host
            .calls
            .iter()
            .any(|c| matches!(c, Call::Seccomp | Call::Execve(..))));

        let mut host = FakeHost {
            fail: Some(Box::new(
                |c: &Call| matches!(c, Call::Mount { fstype: Some(f), .. } if f == "proc"),
            )),
            ..FakeHost::default()
        };
        let err = run(&mut host, &plan());
        assert!(
            matches!(err, SetupError::Rootfs(RootfsError::Proc(_))),
            "{err}"
        );
        assert!(!host.calls.iter().any(|c| matches!(c, Call::Setresuid(_))));
    }
}
