//! Shared by phiboxd's inference tests: the real worker and launcher, a generated model.

#![allow(dead_code)]

pub mod bundles;
pub mod slapd;
pub mod web;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox::protocol::{Message, Phi, Role, Sampling};
use supervisor::config::WorkerSection;
use supervisor::inference::{InferenceHandle, StreamItem, WorkerLaunch};

/// The workspace's binaries, built beside phiboxd by `cargo test --workspace`.
pub fn binary(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_phiboxd")).with_file_name(name);
    assert!(
        p.is_file(),
        "{} is missing: build the whole workspace",
        p.display()
    );
    p
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests run the worker in its sandbox, which needs root: run them as root"
    );
}

pub fn tiny_model(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.gguf");
    models::testmodel::write_llama(&models::testmodel::LlamaConfig::tiny(), &p).unwrap();
    p
}

pub fn launch(program: &str, model: &Path, settings: WorkerSection) -> WorkerLaunch {
    WorkerLaunch {
        jail: binary("phibox-jail"),
        program: binary(program),
        model: model.to_path_buf(),
        extra_args: Vec::new(),
        settings,
        allow_partial_landlock: false,
        audit: None,
    }
}

pub fn settings() -> WorkerSection {
    WorkerSection {
        slots: 4,
        context: 256,
        threads: 2,
        restart_initial_ms: 50,
        restart_max_secs: 1,
        shutdown_grace_secs: 10,
        ..WorkerSection::default()
    }
}

pub fn user(text: &str) -> Vec<Message> {
    vec![Message {
        role: Role::User,
        content: Phi(text.into()),
    }]
}

pub fn fixed(max_tokens: u32) -> Sampling {
    Sampling {
        max_tokens,
        ignore_eos: true,
        ..Sampling::default()
    }
}

/// Text and the final item of a generation.
pub async fn complete(h: &InferenceHandle, prompt: &str, s: Sampling) -> (String, StreamItem) {
    let mut stream = h.generate(user(prompt), s).await.expect("accepted");
    let mut text = String::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("no hang")
            .expect("a final item");
        match item {
            StreamItem::Token(t) => text.push_str(&t.0),
            last => return (text, last),
        }
    }
}

/// A provisioned audit trail in `dir` (real clock).
pub fn audit_log(dir: &Path) -> supervisor::audit::AuditLog {
    let mut o =
        supervisor::audit::Options::new(dir, std::sync::Arc::new(supervisor::clock::SystemClock));
    o.provision = true;
    supervisor::audit::AuditLog::open(o).unwrap().0
}

/// Every record of the trail in `dir`, in order.
pub fn audit_records(dir: &Path) -> Vec<supervisor::audit::Record> {
    supervisor::audit::reader::records(&dir.join("audit"), None, None).unwrap()
}

/// Every byte under the audit directory, as text (to search for what must not be there).
pub fn audit_bytes(dir: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir.join("audit")).unwrap().flatten() {
        if e.path().is_file() {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()));
        }
    }
    all
}
