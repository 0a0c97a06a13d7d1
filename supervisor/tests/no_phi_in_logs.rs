//! A canary prompt goes through the whole inference path (manager, worker, back) with every
//! log level enabled; it must appear in no log line. Needs root. (The worker's own output is
//! checked by the worker's tests.)

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandbox::protocol::Finish;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_prompt_appears_in_no_log_output() {
    require_root();
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();
    let t = tempfile::tempdir().unwrap();
    let h = spawn_manager(launch("phibox-worker", &tiny_model(t.path()), settings()));
    tokio::time::timeout(
        Duration::from_secs(120),
        h.wait_for(|s| matches!(s, Status::Ready { .. })),
    )
    .await
    .unwrap();
    let canary = "CANARY-PHI-93ab Jane Roe MRN 0042";
    let (_, last) = complete(&h, canary, fixed(16)).await;
    assert!(matches!(
        last,
        StreamItem::Done {
            finish: Finish::Length,
            ..
        }
    ));
    // Also through the error paths: an over-long prompt and a cancelled stream.
    let (_, last) = complete(&h, &canary.repeat(100), fixed(16)).await;
    assert!(matches!(last, StreamItem::Failed(_)), "{last:?}");
    let s = h.generate(user(canary), fixed(100)).await.unwrap();
    drop(s);
    h.shutdown().await;
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("inference worker ready"),
        "logging was captured: {text}"
    );
    assert!(!text.contains("CANARY") && !text.contains("Jane"), "{text}");
}
