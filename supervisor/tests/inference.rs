//! The inference manager with the real worker in its sandbox: concurrent callers, crashes and
//! restarts, protocol faults, hostile models, graceful shutdown. Needs root.

mod support;

use std::time::Duration;

use sandbox::protocol::Finish;
use supervisor::audit::Action;
use supervisor::inference::{spawn_manager, InferenceError, Status, StreamItem};
use support::*;

/// The final item is a generation that ran to its max_tokens.
fn assert_done_by_length(last: &Option<StreamItem>) {
    assert!(
        matches!(
            last,
            Some(StreamItem::Done {
                finish: Finish::Length,
                ..
            })
        ),
        "{last:?}"
    );
}

/// Skips tokens; the stream's final item.
async fn final_item(s: &mut supervisor::inference::TokenStream) -> Option<StreamItem> {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), s.next())
            .await
            .expect("no hang")
        {
            Some(StreamItem::Token(_)) => continue,
            other => return other,
        }
    }
}

async fn ready(h: &supervisor::inference::InferenceHandle) -> i32 {
    ready_other_than(h, 0).await
}

/// Waits for a ready worker whose pid is not `old`.
async fn ready_other_than(h: &supervisor::inference::InferenceHandle, old: i32) -> i32 {
    let s = tokio::time::timeout(
        Duration::from_secs(120),
        h.wait_for(|s| match s {
            Status::Ready { pid, .. } => *pid != old,
            Status::Failed(_) => true,
            _ => false,
        }),
    )
    .await
    .expect("the worker starts");
    match s {
        Status::Ready { pid, .. } => pid,
        other => panic!("{other:?}"),
    }
}

/// The nice value of every thread of `pid` (field 19 of /proc/…/task/…/stat).
fn thread_nice(pid: i32) -> Vec<i64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| {
            let after = &stat[stat.rfind(')')? + 2..];
            after.split_whitespace().nth(16)?.parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_callers_each_get_their_own_stream() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let h = spawn_manager(launch("phibox-worker", &tiny_model(t.path()), settings()));
    let pid = ready(&h).await;
    let prompts: Vec<String> = (0..10).map(|i| format!("ward round {i}")).collect();
    let mut sequential = Vec::new();
    for p in &prompts {
        sequential.push(complete(&h, p, fixed(24)).await);
    }
    let tasks: Vec<_> = prompts
        .iter()
        .map(|p| {
            let h = h.clone();
            let p = p.clone();
            tokio::spawn(async move { complete(&h, &p, fixed(24)).await })
        })
        .collect();
    for (task, seq) in tasks.into_iter().zip(&sequential) {
        let got = task.await.unwrap();
        assert_eq!(
            got.0, seq.0,
            "a batched stream differs from the same prompt alone"
        );
        assert!(matches!(
            got.1,
            StreamItem::Done {
                finish: Finish::Length,
                ..
            }
        ));
    }
    // The worker yields the CPU to phiboxd: every thread, the decode threads included.
    let nice = thread_nice(pid);
    assert!(nice.len() > 1 && nice.iter().all(|&n| n == 10), "{nice:?}");
    h.shutdown().await;
    assert_eq!(h.status(), Status::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_fails_open_requests_clearly_and_is_restarted() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let mut l = launch("phibox-worker", &tiny_model(t.path()), settings());
    l.audit = Some(audit_log(t.path()));
    let h = spawn_manager(l);
    let pid = ready(&h).await;
    let mut streams = Vec::new();
    for i in 0..3 {
        streams.push(
            h.generate(user(&format!("long {i}")), fixed(200))
                .await
                .unwrap(),
        );
    }
    // Wait until generation is under way, then kill the worker.
    let first = tokio::time::timeout(Duration::from_secs(30), streams[0].next())
        .await
        .unwrap();
    assert!(matches!(first, Some(StreamItem::Token(_))), "{first:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for s in &mut streams {
        let last = final_item(s).await;
        assert_eq!(last, Some(StreamItem::Failed(InferenceError::Restarted)));
        assert_eq!(
            InferenceError::Restarted.to_string(),
            "inference restarted, please retry"
        );
    }
    ready_other_than(&h, pid).await;
    let (text, last) = complete(&h, "after the restart", fixed(8)).await;
    assert!(matches!(last, StreamItem::Done { .. }), "{last:?}");
    assert!(!text.is_empty());
    h.shutdown().await;
    // The crash and the restart are in the audit trail.
    let events: Vec<(Action, Option<String>)> = audit_records(t.path())
        .into_iter()
        .map(|r| (r.action, r.detail.get("kind").cloned()))
        .collect();
    assert_eq!(
        events,
        vec![
            (Action::WorkerCrash, Some("crashed".into())),
            (Action::WorkerRestart, None)
        ]
    );
    let crash = &audit_records(t.path())[0];
    assert_eq!(crash.model.as_deref(), Some("tiny.gguf"));
    assert!(crash.detail["reason"].contains("signal"), "{crash:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_protocol_violation_is_a_worker_fault() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let mut l = launch("phibox-sandbox-probe", &tiny_model(t.path()), settings());
    l.audit = Some(audit_log(t.path()));
    let h = spawn_manager(probe_launch(l));
    let pid = ready(&h).await;
    let mut stream = h.generate(user("x"), fixed(4)).await.unwrap();
    let last = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap();
    assert_eq!(last, Some(StreamItem::Failed(InferenceError::Restarted)));
    // The misbehaving worker was killed and a new one started.
    ready_other_than(&h, pid).await;
    assert!(!std::path::Path::new(&format!("/proc/{pid}/status")).exists());
    h.shutdown().await;
    let first = &audit_records(t.path())[0];
    assert_eq!(first.action, Action::WorkerCrash);
    assert_eq!(first.detail["kind"], "protocol_fault", "{first:?}");
}

/// The probe as a worker that breaks the protocol at the first request.
fn probe_launch(mut l: supervisor::inference::WorkerLaunch) -> supervisor::inference::WorkerLaunch {
    l.program = binary("phibox-sandbox-probe");
    l.extra_args = vec!["misbehave".into()];
    l.settings.ready_timeout_secs = 30;
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_model_is_reported_without_crashing_phiboxd() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("bad.gguf");
    models::testmodel::write_hostile(models::testmodel::Hostile::AbsurdTensor, &path).unwrap();
    let h = spawn_manager(launch("phibox-worker", &path, settings()));
    let status = tokio::time::timeout(
        Duration::from_secs(60),
        h.wait_for(|s| matches!(s, Status::Failed(_))),
    )
    .await
    .unwrap();
    let Status::Failed(reason) = status else {
        unreachable!()
    };
    assert!(reason.contains("could not load the model"), "{reason}");
    // A model whose loading crashes llama.cpp is reported as a load failure too.
    let crash = t.path().join("crash.gguf");
    models::testmodel::write_hostile(models::testmodel::Hostile::DuplicateTokens, &crash).unwrap();
    match h.change_model(crash).await {
        Err(InferenceError::Unavailable(r)) => {
            assert!(
                r.contains("the worker ended while loading the model (killed by signal"),
                "{r}"
            )
        }
        other => panic!("{other:?}"),
    }
    match h.generate(user("x"), fixed(4)).await {
        // The last failure is the one reported.
        Err(InferenceError::Unavailable(r)) => {
            assert!(r.contains("while loading the model"), "{r}")
        }
        other => panic!("{other:?}"),
    }
    assert!(h.ping().await, "the manager keeps running");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_in_flight_generations_finish_and_refuses_new_ones() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let h = spawn_manager(launch("phibox-worker", &tiny_model(t.path()), settings()));
    let pid = ready(&h).await;
    let mut stream = h.generate(user("finish me"), fixed(64)).await.unwrap();
    let first = stream.next().await;
    assert!(matches!(first, Some(StreamItem::Token(_))), "{first:?}");
    let h2 = h.clone();
    let stopping = tokio::spawn(async move { h2.shutdown().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        h.generate(user("too late"), fixed(4)).await.err(),
        Some(InferenceError::ShuttingDown)
    );
    let last = final_item(&mut stream).await;
    assert_done_by_length(&last);
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.status(), Status::Stopped);
    assert!(!std::path::Path::new(&format!("/proc/{pid}/status")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changing_the_model_lets_in_flight_requests_finish_first() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let old = tiny_model(t.path());
    let new = t.path().join("other.gguf");
    let cfg = models::testmodel::LlamaConfig {
        seed: 99,
        ..models::testmodel::LlamaConfig::tiny()
    };
    models::testmodel::write_llama(&cfg, &new).unwrap();
    let h = spawn_manager(launch("phibox-worker", &old, settings()));
    let pid = ready(&h).await;
    let (old_text, _) = complete(&h, "compare", fixed(16)).await;
    let mut in_flight = h.generate(user("still old"), fixed(48)).await.unwrap();
    assert!(matches!(in_flight.next().await, Some(StreamItem::Token(_))));
    let h2 = h.clone();
    let change = tokio::spawn(async move { h2.change_model(new).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A request made during the change waits and is served by the new model.
    let h3 = h.clone();
    let during = tokio::spawn(async move { complete(&h3, "compare", fixed(16)).await });
    let last = final_item(&mut in_flight).await;
    assert_done_by_length(&last);
    tokio::time::timeout(Duration::from_secs(60), change)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (during_text, _) = tokio::time::timeout(Duration::from_secs(60), during)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(during_text, old_text, "served by the new model");
    let Status::Ready { pid: new_pid, .. } = h.status() else {
        panic!()
    };
    assert_ne!(new_pid, pid);
    // A model that cannot load is reported to whoever asked for it.
    let bad = t.path().join("bad.gguf");
    models::testmodel::write_hostile(models::testmodel::Hostile::Truncated, &bad).unwrap();
    match h.change_model(bad).await {
        Err(InferenceError::Unavailable(r)) => assert!(r.contains("could not load"), "{r}"),
        other => panic!("{other:?}"),
    }
    h.shutdown().await;
}
