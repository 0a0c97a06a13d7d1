//! What a caller asks for (a program, its model files, the uid to run as) and how that becomes a
//! [`Plan`]: the program and its libraries bound at their host paths, data files at chosen
//! paths, `/dev/null`, `/dev/urandom`, GPU nodes when asked, an empty `/proc` mount point.

use std::path::{Path, PathBuf};

use crate::elf::{self, ElfError};
use crate::plan::{FileKind, Limits, Plan};
use crate::resolve::{ResolveError, RootBuilder};

/// Loader data read by the dynamic loader; it names library paths only.
const LD_CACHE: &str = "/etc/ld.so.cache";

/// A file to expose read-only inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Host path.
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub path: PathBuf,
}

/// The caller's request.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub data_files: Vec<DataFile>,
    /// Host files exposed at their own path (e.g. `/sys/devices/system/cpu/possible`).
    pub host_files: Vec<PathBuf>,
    /// Character devices exposed at their own path (GPU nodes).
    pub devices: Vec<PathBuf>,
    pub uid: u32,
    pub gid: u32,
    pub limits: Limits,
    pub allow_partial_landlock: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the sandboxed program must not run as root (uid {uid}, gid {gid})")]
    Root { uid: u32, gid: u32 },
    #[error("program {0} must be an absolute path")]
    RelativeProgram(PathBuf),
    #[error("nice value {0} is outside 0–19 (the sandbox may only lower its priority)")]
    Nice(i32),
    #[error("cannot find the libraries of {program}")]
    Libraries {
        program: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("cannot place {path} in the sandbox root")]
    Placement {
        path: PathBuf,
        #[source]
        source: ResolveError,
    },
}

/// The NVIDIA device nodes present under `dev` (normally `/dev`) that CUDA compute needs:
/// `nvidiactl`, `nvidia-uvm`, `nvidia-uvm-tools` and one `nvidiaN` per GPU. Add them to
/// [`SandboxSpec::devices`] only for a CUDA worker, whose wider policy allows their ioctls.
pub fn gpu_device_nodes(dev: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dev) else {
        return Vec::new();
    };
    let mut nodes: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            matches!(n.as_str(), "nvidiactl" | "nvidia-uvm" | "nvidia-uvm-tools")
                || n.strip_prefix("nvidia")
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|n| dev.join(n))
        .collect();
    nodes.sort();
    nodes
}

impl SandboxSpec {
    /// A spec for `program` with no data, running as `uid:gid`, default limits.
    pub fn new(program: impl Into<PathBuf>, uid: u32, gid: u32) -> Self {
        SandboxSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            data_files: Vec::new(),
            host_files: Vec::new(),
            devices: Vec::new(),
            uid,
            gid,
            limits: Limits::default(),
            allow_partial_landlock: false,
        }
    }

    /// Resolves the request into the launcher's plan.
    pub fn plan(&self) -> Result<Plan, SpecError> {
        if self.uid == 0 || self.gid == 0 {
            return Err(SpecError::Root {
                uid: self.uid,
                gid: self.gid,
            });
        }
        if !self.program.is_absolute() {
            return Err(SpecError::RelativeProgram(self.program.clone()));
        }
        if !(0..=19).contains(&self.limits.nice) {
            return Err(SpecError::Nice(self.limits.nice));
        }
        let deps = elf::dependencies(&self.program).map_err(|source| SpecError::Libraries {
            program: self.program.clone(),
            source,
        })?;
        let mut root = RootBuilder::default();
        let at = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SpecError::Placement { path, source }
        };
        let program = root
            .add_host_file(&self.program, FileKind::Executable)
            .map_err(at(&self.program))?;
        if let Some(interp) = &deps.interpreter {
            root.add_host_file(interp, FileKind::Executable)
                .map_err(at(interp))?;
        }
        for lib in &deps.libraries {
            root.add_host_file(lib, FileKind::Library)
                .map_err(at(lib))?;
        }
        if deps.interpreter.is_some() && Path::new(LD_CACHE).is_file() {
            root.add_host_file(Path::new(LD_CACHE), FileKind::Library)
                .map_err(at(Path::new(LD_CACHE)))?;
        }
        for dev in ["/dev/null", "/dev/urandom"]
            .iter()
            .map(PathBuf::from)
            .chain(self.devices.iter().cloned())
        {
            root.add_host_file(&dev, FileKind::Device)
                .map_err(at(&dev))?;
        }
        for f in &self.host_files {
            root.add_host_file(f, FileKind::Data).map_err(at(f))?;
        }
        for d in &self.data_files {
            root.add_file_at(&d.source, &d.path, FileKind::Data)
                .map_err(at(&d.path))?;
        }
        root.add_dir(Path::new("/proc"))
            .map_err(at(Path::new("/proc")))?;
        Ok(Plan {
            program,
            args: self.args.clone(),
            env: self.env.clone(),
            root: root.finish(),
            uid: self.uid,
            gid: self.gid,
            hostname: "phibox-sandbox".into(),
            limits: self.limits,
            allow_partial_landlock: self.allow_partial_landlock,
            // Set by `spawn` to the process that starts the launcher.
            supervisor_pid: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::RootEntry;

    #[test]
    fn gpu_nodes_are_the_compute_ones_only() {
        let t = tempfile::tempdir().unwrap();
        for n in [
            "nvidia0",
            "nvidia1",
            "nvidiactl",
            "nvidia-uvm",
            "nvidia-modeset",
            "nvidia-caps",
            "null",
            "nvidiax",
        ] {
            std::fs::write(t.path().join(n), b"").unwrap();
        }
        let names: Vec<String> = gpu_device_nodes(t.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["nvidia-uvm", "nvidia0", "nvidia1", "nvidiactl"]);
        assert!(gpu_device_nodes(&t.path().join("absent")).is_empty());
    }

    #[test]
    fn root_is_refused() {
        let err = SandboxSpec::new("/bin/true", 0, 65534).plan().unwrap_err();
        assert!(matches!(err, SpecError::Root { .. }));
    }

    #[test]
    fn plan_binds_program_libraries_devices_and_data_read_only() {
        let t = tempfile::NamedTempFile::new().unwrap();
        let mut spec = SandboxSpec::new("/bin/true", 65534, 65534);
        spec.data_files.push(DataFile {
            source: t.path().into(),
            path: "/model/m.gguf".into(),
        });
        let plan = spec.plan().unwrap();
        let kind_of = |p: &str| {
            plan.root.iter().find_map(|e| match e {
                RootEntry::File { path, kind, .. } if path == Path::new(p) => Some(*kind),
                _ => None,
            })
        };
        assert_eq!(kind_of("/dev/null"), Some(FileKind::Device));
        assert_eq!(kind_of("/dev/urandom"), Some(FileKind::Device));
        assert_eq!(kind_of("/model/m.gguf"), Some(FileKind::Data));
        assert_eq!(
            kind_of(plan.program.to_str().unwrap()),
            Some(FileKind::Executable)
        );
        assert!(plan
            .root
            .iter()
            .any(|e| matches!(e, RootEntry::File { kind: FileKind::Library, path, .. } if path.to_string_lossy().contains("libc.so"))));
        // Nothing from /etc but the loader cache.
        assert!(plan.root.iter().all(|e| !e.path().starts_with("/etc")
            || e.path() == Path::new("/etc")
            || e.path() == Path::new(LD_CACHE)));
    }
}
