//! Starting the real worker confined, on a generated model, and talking to it synchronously.

#![allow(dead_code)]

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use sandbox::protocol::{Event, Message, Phi, Request, Role, Sampling, Validator};
use sandbox::{ConfinedChild, DataFile, SandboxSpec};

pub const WORKER: &str = env!("CARGO_BIN_EXE_phibox-worker");

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the worker tests run the worker in its sandbox, which needs root: run them as root"
    );
}

/// The launcher, built beside the worker by `cargo test --workspace`.
pub fn jail() -> PathBuf {
    let p = Path::new(WORKER).with_file_name("phibox-jail");
    assert!(
        p.is_file(),
        "{} is missing: build the whole workspace",
        p.display()
    );
    p
}

/// Files the worker reads besides its model (see docs/worker.md).
pub fn worker_spec(model: &Path, args: &[&str]) -> SandboxSpec {
    let mut spec = SandboxSpec::new(WORKER, 65534, 65534);
    spec.args = ["--model", "/model/model.gguf"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect();
    spec.data_files.push(DataFile {
        source: model.to_path_buf(),
        path: "/model/model.gguf".into(),
    });
    spec.host_files
        .push("/sys/devices/system/cpu/possible".into());
    spec
}

pub struct Client {
    pub child: ConfinedChild,
    pub validator: Validator,
    pub hello: Option<Event>,
}

pub fn start(model: &Path, args: &[&str], stderr: Stdio) -> Client {
    let plan = worker_spec(model, args).plan().expect("plan");
    let child = sandbox::spawn(&jail(), &plan, Stdio::null(), stderr).expect("spawn");
    Client {
        child,
        validator: Validator::default(),
        hello: None,
    }
}

impl Client {
    /// The next event, validated, or None on timeout / closed socket.
    pub fn next(&mut self, timeout: Duration) -> Option<Event> {
        let fd = self.child.control();
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        if poll(&mut fds, PollTimeout::from(ms)).ok()? == 0 {
            return None;
        }
        let mut buf = vec![0u8; sandbox::protocol::MAX_FRAME];
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
        if n == 0 {
            return None;
        }
        Some(
            self.validator
                .check(&buf[..n])
                .expect("the worker speaks the protocol"),
        )
    }

    /// Waits for hello and ready; returns the ready event.
    pub fn ready(&mut self) -> Event {
        let hello = self.next(Duration::from_secs(60)).expect("hello");
        assert!(matches!(hello, Event::Hello { .. }), "{hello:?}");
        self.hello = Some(hello);
        self.next(Duration::from_secs(120))
            .expect("ready or load-failed")
    }

    pub fn send(&mut self, r: &Request) {
        if let Request::Generate { id, .. } = r {
            self.validator.opened(*id);
        }
        send(
            self.child.control().as_raw_fd(),
            &r.encode().unwrap(),
            MsgFlags::empty(),
        )
        .unwrap();
    }

    pub fn generate(&mut self, id: u64, prompt: &str, sampling: Sampling) {
        self.send(&Request::Generate {
            id,
            messages: vec![Message {
                role: Role::User,
                content: Phi(prompt.into()),
            }],
            sampling,
        });
    }

    /// Collects events until every id in `ids` is done or failed.
    pub fn collect(&mut self, ids: &[u64], timeout: Duration) -> Vec<Outcome> {
        let mut out: Vec<Outcome> = ids.iter().map(|&id| Outcome::new(id)).collect();
        let deadline = Instant::now() + timeout;
        while out.iter().any(|o| o.end.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {ids:?}");
            let Some(e) = self.next(left) else {
                panic!("the worker stopped answering while waiting for {ids:?}")
            };
            let o = |id: u64, out: &mut Vec<Outcome>| -> usize {
                out.iter()
                    .position(|o| o.id == id)
                    .expect("event for a request of this test")
            };
            match e {
                Event::Token { id, text } => {
                    let i = o(id, &mut out);
                    out[i].text.push_str(&text.0);
                    out[i].tokens += 1;
                }
                Event::Done { id, finish, usage } => {
                    let i = o(id, &mut out);
                    out[i].end = Some(End::Done(finish, usage));
                }
                Event::Failed { id, error } => {
                    let i = o(id, &mut out);
                    out[i].end = Some(End::Failed(error));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Done(sandbox::protocol::Finish, sandbox::protocol::Usage),
    Failed(sandbox::protocol::RequestError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub id: u64,
    pub text: String,
    pub tokens: usize,
    pub end: Option<End>,
}

impl Outcome {
    fn new(id: u64) -> Outcome {
        Outcome {
            id,
            text: String::new(),
            tokens: 0,
            end: None,
        }
    }
}

pub fn greedy(max_tokens: u32) -> Sampling {
    Sampling {
        max_tokens,
        ..Sampling::default()
    }
}

/// A tiny random llama model in `dir`.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.gguf");
    models::testmodel::write_llama(&models::testmodel::LlamaConfig::tiny(), &p).unwrap();
    p
}
