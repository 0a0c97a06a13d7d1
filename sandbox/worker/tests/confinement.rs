//! The worker binary itself under its sandbox: every escape denied in its serving state, hostile
//! model files fail inside the sandbox, and prompt text never reaches its output. Needs root.

mod support;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use models::testmodel::{write_hostile, Hostile};
use sandbox::protocol::Event;
use sandbox::Termination;
use support::*;

const SIGSYS: i32 = 31;

/// A pipe for the worker's stderr; returns (our read end, the Stdio to hand over).
fn stderr_pipe() -> (std::fs::File, Stdio) {
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    (std::fs::File::from(r), Stdio::from(w))
}

fn read_all(mut f: std::fs::File) -> String {
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn every_escape_is_denied_to_the_serving_worker() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let host_pid = std::process::id().to_string();
    let model_host = model.to_string_lossy().into_owned();
    let mut failures = Vec::new();
    for &name in sandbox::escape::NAMES {
        let arg = match name {
            "open-read" | "open-write" | "truncate" => model_host.as_str(),
            "execve" => WORKER,
            "ptrace" | "process-vm-readv" | "kill" => host_pid.as_str(),
            "create" => "/model/new",
            _ => "",
        };
        for arg in [arg, "/model/model.gguf"]
            .iter()
            .take(if name == "open-read" { 2 } else { 1 })
        {
            let (err, stdio) = stderr_pipe();
            let mut c = start(
                &model,
                &["--threads", "1", "--escape", name, "--escape-arg", arg],
                stdio,
            );
            assert!(matches!(
                c.next(Duration::from_secs(60)),
                Some(Event::Hello { .. })
            ));
            let end = c.child.wait().unwrap();
            drop(c);
            let text = read_all(err);
            let reached = text.contains(&format!("trying {name}"));
            if !(reached
                && end == Termination::Signaled(SIGSYS)
                && !text.contains(&format!("escape {name}:")))
            {
                failures.push(format!("{name} {arg}: {end:?}, stderr {text:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "escapes not killed by seccomp:\n{}",
        failures.join("\n")
    );
}

#[test]
fn hostile_model_files_fail_inside_the_sandbox() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    for kind in [
        Hostile::Truncated,
        Hostile::AbsurdTensor,
        Hostile::BadMetadata,
        Hostile::Garbage,
        Hostile::DuplicateTokens,
    ] {
        let path = t.path().join(format!("{kind:?}.gguf"));
        write_hostile(kind, &path).unwrap();
        let (err, stdio) = stderr_pipe();
        let mut c = start(&path, &["--threads", "1"], stdio);
        assert!(
            matches!(c.next(Duration::from_secs(60)), Some(Event::Hello { .. })),
            "{kind:?}"
        );
        match c.next(Duration::from_secs(60)) {
            Some(Event::LoadFailed { reason }) => {
                eprintln!("DEBUG {kind:?}: {reason}");
                assert!(!reason.is_empty())
            }
            None => {} // died without a word (a crash inside the sandbox)
            other => panic!("{kind:?}: the worker accepted a broken model: {other:?}"),
        }
        let end = c.child.wait().unwrap();
        drop(c);
        assert_ne!(end, Termination::Exited(0), "{kind:?}");
        let text = read_all(err);
        assert!(!text.contains("audit"), "{text}");
    }
}

#[test]
fn prompt_text_never_reaches_the_workers_output() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let (err, stdio) = stderr_pipe();
    let mut c = start(&model, &["--threads", "2"], stdio);
    assert!(matches!(c.ready(), Event::Ready { .. }));
    let canary = "CANARY-PHI-5f1c2e Jane Roe DOB 1970-01-01";
    c.generate(1, canary, greedy(16));
    let out = c.collect(&[1], Duration::from_secs(60));
    assert!(out[0].end.is_some());
    // An invalid request's error must not echo the prompt either.
    c.generate(2, &format!("{canary}\0"), greedy(16));
    let out = c.collect(&[2], Duration::from_secs(60));
    assert!(!format!("{:?}", out[0].end).contains("CANARY"));
    c.send(&sandbox::protocol::Request::Shutdown);
    assert_eq!(c.child.wait().unwrap(), Termination::Exited(0));
    drop(c);
    let text = read_all(err);
    assert!(!text.contains("CANARY") && !text.contains("Jane"), "{text}");
}
