//! The resolved confinement plan: everything the launcher needs to build the child's world,
//! computed by the (trusted) supervisor and handed to `phibox-jail` as JSON. The launcher does
//! no discovery of its own, so what a child can see is decided in one reviewable place.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a path appears inside the child's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootEntry {
    /// An empty directory (a parent of something else).
    Dir { path: PathBuf },
    /// A symlink recreated inside the root, e.g. `/lib64 -> usr/lib64` on merged-/usr hosts.
    Symlink { link: PathBuf, target: PathBuf },
    /// A read-only bind mount of one host file at `path`.
    File {
        source: PathBuf,
        path: PathBuf,
        kind: FileKind,
    },
}

impl RootEntry {
    /// The path the entry occupies inside the child's root.
    pub fn path(&self) -> &std::path::Path {
        match self {
            RootEntry::Dir { path } | RootEntry::File { path, .. } => path,
            RootEntry::Symlink { link, .. } => link,
        }
    }
}

/// What a bound file is for; decides its mount flags and landlock rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// The program itself or its ELF interpreter: read and execute.
    Executable,
    /// A shared library or loader data: read (mapped executable by the loader).
    Library,
    /// Plain data such as a model file: read, never executed.
    Data,
    /// A character device node such as `/dev/null`: read, device access kept.
    Device,
}

/// Resource limits applied to the child (soft = hard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Open files; small, the worker needs its model, the socket and stdio.
    pub nofile: u64,
    /// Processes + threads of the child's real uid on the whole host.
    pub nproc: u64,
    /// The child's nice value (0–19: a higher one yields the CPU to everything else first).
    #[serde(default)]
    pub nice: i32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            nofile: 64,
            nproc: 512,
            nice: 0,
        }
    }
}

/// Everything the launcher does, in data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Program to execute, as a path inside the new root (bound at its host path).
    pub program: PathBuf,
    /// argv[1..].
    pub args: Vec<String>,
    /// The complete environment of the child; nothing is inherited.
    pub env: Vec<(String, String)>,
    /// The child's root, in creation order (parents before children).
    pub root: Vec<RootEntry>,
    /// Host uid and gid the child runs as; never 0.
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub limits: Limits,
    /// Spawn even if the kernel can only partially enforce landlock. Logged loudly.
    pub allow_partial_landlock: bool,
    /// The pid of the process that starts the launcher (filled in by `spawn`); the launcher
    /// refuses to run under any other parent.
    pub supervisor_pid: i32,
}
