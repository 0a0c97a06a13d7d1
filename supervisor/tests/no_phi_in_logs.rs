//! A canary prompt goes through the whole chat path (audit record, manager, worker, back,
//! response record) with every log level enabled; it must appear in no log line and in no
//! file of the audit trail. Needs root. (The worker's own output is
//! checked by the worker's tests.)

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandbox::protocol::Finish;
use supervisor::audit::{Action, Actor};
use supervisor::chat::{Chat, ChatError, ChatStream};
use supervisor::inference::{spawn_manager, Status, StreamItem};
use support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Drains a chat stream; returns its last item.
async fn last_of(mut s: ChatStream) -> Result<StreamItem, ChatError> {
    let mut last = None;
    while let Some(item) = s.next().await {
        last = Some(item);
    }
    last.expect("a final item")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_prompt_appears_in_no_log_output_and_no_audit_file() {
    require_root();
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();
    let t = tempfile::tempdir().unwrap();
    let audit = audit_log(t.path());
    let mut l = launch("phibox-worker", &tiny_model(t.path()), settings());
    l.audit = Some(audit.clone());
    let h = spawn_manager(l);
    tokio::time::timeout(
        Duration::from_secs(120),
        h.wait_for(|s| matches!(s, Status::Ready { .. })),
    )
    .await
    .unwrap();
    let chat = Chat::new(h.clone(), audit.clone(), "tiny.gguf");
    let nurse = Actor {
        user_id: Some("jsmith".into()),
        user_role: Some("nurse".into()),
        session_id: Some("s-42".into()),
        ..Actor::default()
    };
    let canary = "CANARY-PHI-93ab Jane Roe MRN 0042";
    let last = last_of(
        chat.start(&nurse, "clinical_summary", user(canary), fixed(16))
            .await
            .unwrap(),
    )
    .await;
    assert!(
        matches!(
            last,
            Ok(StreamItem::Done {
                finish: Finish::Length,
                ..
            })
        ),
        "{last:?}"
    );
    // Also through the error paths: an over-long prompt and an abandoned stream.
    let long = canary.repeat(100);
    let last = last_of(
        chat.start(&nurse, "clinical_summary", user(&long), fixed(16))
            .await
            .unwrap(),
    )
    .await;
    assert!(matches!(last, Ok(StreamItem::Failed(_))), "{last:?}");
    let s = chat
        .start(&nurse, "clinical_summary", user(canary), fixed(100))
        .await
        .unwrap();
    drop(s);
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.shutdown().await;
    audit.close().await.unwrap();
    // Fail closed: once the trail cannot record, no chat starts.
    assert!(matches!(
        chat.start(&nurse, "clinical_summary", user("anything"), fixed(4))
            .await,
        Err(ChatError::Audit(_))
    ));

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("inference worker ready"),
        "logging was captured: {text}"
    );
    assert!(!text.contains("CANARY") && !text.contains("Jane"), "{text}");
    let stored = audit_bytes(t.path());
    assert!(
        !stored.contains("CANARY") && !stored.contains("Jane"),
        "{stored}"
    );

    // What the trail does hold: who, what, keyed hashes and lengths, in order.
    let rs = audit_records(t.path());
    let actions: Vec<Action> = rs.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        vec![
            Action::ChatRequest,
            Action::ChatResponseCompleted,
            Action::ChatRequest,
            Action::ChatResponseFailed,
            Action::ChatRequest,
            Action::ChatResponseCancelled,
            Action::Seal,
        ]
    );
    let request = &rs[0];
    assert_eq!(request.user_id.as_deref(), Some("jsmith"));
    assert_eq!(request.session_id.as_deref(), Some("s-42"));
    assert_eq!(request.model.as_deref(), Some("tiny.gguf"));
    assert_eq!(
        request.prompt_length_chars,
        Some(canary.chars().count() as u64)
    );
    assert!(audit
        .hash_key()
        .matches(canary, request.prompt_hash.as_deref().unwrap()));
    let response = &rs[1];
    assert_eq!(response.detail["request_seq"], "0");
    assert_eq!(response.detail["finish"], "length");
    assert!(response
        .response_hash
        .as_deref()
        .unwrap()
        .starts_with("hmac-sha256:"));
    assert_eq!(rs[3].detail["error"], "request");
}
