//! The installer with the real worker: a signed bundle is staged, probe-loaded in its own
//! confined worker, activated, the serving worker switches while an in-flight chat finishes on
//! the old model, and the old version is removed; a model that crashes the loader or never
//! answers fails the probe while the old model keeps serving. Every outcome is in the trail.

mod support;

use std::time::Duration;

use models::bundle::store::Store;
use supervisor::audit::Action;
use supervisor::inference::{spawn_manager, Status, StreamItem};
use supervisor::install::{Installer, Origin, Outcome, Phase};
use support::bundles::{signer, tiny};
use support::{audit_log, audit_records, fixed, launch, require_root, settings, user};

fn origin() -> Origin {
    Origin {
        device: "sdz1".into(),
        vendor: "Acme".into(),
        product: "Stick".into(),
        serial: "SER123".into(),
    }
}

async fn pid(h: &supervisor::inference::InferenceHandle) -> i32 {
    match tokio::time::timeout(
        Duration::from_secs(60),
        h.wait_for(|s| matches!(s, Status::Ready { .. })),
    )
    .await
    .unwrap()
    {
        Status::Ready { pid, .. } => pid,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bundle_is_probed_activated_and_served_while_chats_finish_on_the_old_model() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let s = signer(t.path());
    let first = s.bundle(&t.path().join("stick/first"), "tiny", 1, &tiny(1));
    let (store, _) = Store::open(&data.join("models")).unwrap();
    let audit = audit_log(&data);
    // The box's first model comes from a bundle too; the worker starts on it.
    let serving = launch("phibox-worker", &first.join("model.gguf"), settings());
    let h = spawn_manager(serving.clone());
    let old_pid = pid(&h).await;
    let installer = std::sync::Arc::new(Installer::new(
        store.clone(),
        s.trusted.clone(),
        serving,
        h.clone(),
        audit.clone(),
    ));
    let outcome = installer.install(&first, &origin()).await.unwrap();
    assert!(matches!(outcome, Outcome::Installed { ref label, .. } if label == "tiny@1"));
    let p1 = pid(&h).await;
    assert_ne!(p1, old_pid, "the serving worker now runs the store's copy");

    // A long chat is running when the next version arrives.
    let second = s.bundle(&t.path().join("stick/second"), "tiny", 2, &tiny(2));
    let mut chat = h.generate(user("a long answer"), fixed(120)).await.unwrap();
    assert!(matches!(chat.next().await, Some(StreamItem::Token(_))));
    let progress = installer.progress();
    let outcome = installer.install(&second, &origin()).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Installed {
            label: "tiny@2".into(),
            removed: vec!["tiny@1".into()]
        }
    );
    let mut last = None;
    while let Some(item) = chat.next().await {
        last = Some(item);
    }
    assert!(
        matches!(last, Some(StreamItem::Done { ref usage, .. }) if usage.generated_tokens == 120),
        "the in-flight chat finished on the old model: {last:?}"
    );
    let p2 = pid(&h).await;
    assert_ne!(p2, p1);
    let active = store.check_active().unwrap().unwrap();
    assert_eq!(active.manifest.label(), "tiny@2");
    assert!(active.dir.starts_with(data.join("models/versions")));
    match &progress.borrow().phase {
        Phase::Done { message, .. } => assert!(message.contains("you can remove the stick")),
        other => panic!("{other:?}"),
    }
    // The same bundle again is a no-op; an older one is refused.
    assert_eq!(
        installer.install(&second, &origin()).await.unwrap(),
        Outcome::AlreadyActive {
            label: "tiny@2".into()
        }
    );
    assert_eq!(pid(&h).await, p2, "a no-op does not restart the worker");
    let e = installer.install(&first, &origin()).await.unwrap_err();
    assert_eq!(e.reason(), "rollback");

    let records = audit_records(&data);
    let bundle_records: Vec<_> = records
        .iter()
        .filter(|r| {
            matches!(
                r.action,
                Action::BundleInstalled | Action::BundleActivated | Action::BundleRejected
            )
        })
        .collect();
    let actions: Vec<_> = bundle_records
        .iter()
        .map(|r| (r.action, r.detail.get("reason").cloned()))
        .collect();
    assert_eq!(
        actions,
        vec![
            (Action::BundleInstalled, None),
            (Action::BundleActivated, None),
            (Action::BundleInstalled, None),
            (Action::BundleActivated, None),
            (Action::BundleRejected, Some("already_active".into())),
            (Action::BundleRejected, Some("rollback".into())),
        ]
    );
    for r in &bundle_records {
        assert_eq!(r.detail.get("serial").map(String::as_str), Some("SER123"));
        assert_eq!(r.detail.get("vendor").map(String::as_str), Some("Acme"));
    }
    assert_eq!(
        bundle_records[2].detail.get("signer"),
        Some(&s.id.to_string())
    );

    // The administrator's page shows the model, the trusted key and the last outcome.
    let web_data = t.path().join("web");
    std::fs::create_dir_all(&web_data).unwrap();
    let hash = supervisor::auth::local::hash_password("pw-for-tests").unwrap();
    let users = supervisor::auth::local::LocalUsers::new(
        vec![supervisor::auth::local::LocalUser {
            id: "adam".into(),
            name: "Adam Admin".into(),
            department: None,
            role: supervisor::auth::Role::Admin,
            password_hash: hash,
        }],
        false,
    )
    .unwrap();
    let mut state = support::web::state(
        &web_data,
        users,
        std::sync::Arc::new(supervisor::clock::SystemClock),
    );
    state.installer = Some(installer.clone());
    let server = support::web::serve_app(&web_data, state).await;
    let a = server.https;
    let (cookie, _) = support::web::signed_in(a, &web_data, "adam", "pw-for-tests", "/").await;
    let page =
        support::web::browser(a, &web_data, "GET", "/admin", Some(&cookie), None, false).await;
    assert!(
        page.body
            .contains("Serving <strong>tiny</strong> version v2 (sequence 2)"),
        "{}",
        page.body
    );
    assert!(page.body.contains(&s.id.to_string()));
    assert!(
        page.body.contains("Refused (rollback)") && page.body.contains("you can remove the stick"),
        "{}",
        page.body
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_that_crashes_the_loader_or_never_answers_fails_the_probe() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let s = signer(t.path());
    let good = s.bundle(&t.path().join("stick/good"), "tiny", 1, &tiny(1));
    let (store, _) = Store::open(&data.join("models")).unwrap();
    let audit = audit_log(&data);
    let serving = launch("phibox-worker", &good.join("model.gguf"), settings());
    let h = spawn_manager(serving.clone());
    pid(&h).await;
    let mut installer = Installer::new(
        store.clone(),
        s.trusted.clone(),
        serving,
        h.clone(),
        audit.clone(),
    );
    installer.install(&good, &origin()).await.unwrap();
    let serving_pid = pid(&h).await;

    // Two tokens with the same text: a valid GGUF header, but llama.cpp aborts while loading
    // the vocabulary.
    let crash = t.path().join("stick/crash");
    std::fs::create_dir_all(&crash).unwrap();
    models::testmodel::write_hostile(
        models::testmodel::Hostile::DuplicateTokens,
        &crash.join("model.gguf"),
    )
    .unwrap();
    s.seal(&crash, "tiny", 2);
    let e = installer.install(&crash, &origin()).await.unwrap_err();
    assert_eq!(e.reason(), "probe_failed", "{e}");
    assert!(e.to_string().contains("did not load"), "{e}");

    // A model that loads but does not produce its tokens within the deadline (as a model that
    // hangs would): refused too.
    let slow = s.bundle(&t.path().join("stick/slow"), "tiny", 3, &tiny(3));
    installer.probe.generate_timeout = Duration::from_millis(1);
    let e = installer.install(&slow, &origin()).await.unwrap_err();
    assert_eq!(e.reason(), "probe_failed", "{e}");
    assert!(e.to_string().contains("within"), "{e}");

    // A loader that never finishes (a stand-in worker that never reports ready): the probe
    // gives up after its deadline.
    let hang = s.bundle(&t.path().join("stick/hang"), "tiny", 4, &tiny(4));
    installer.probe.generate_timeout = Duration::from_secs(30);
    installer.probe.load_timeout = Duration::from_secs(2);
    let mut stalling = launch("phibox-sandbox-probe", &good.join("model.gguf"), settings());
    stalling.extra_args = vec!["stall".into()];
    let mut hanging_installer = Installer::new(
        store.clone(),
        s.trusted.clone(),
        stalling,
        h.clone(),
        audit.clone(),
    );
    hanging_installer.probe = installer.probe.clone();
    let started = std::time::Instant::now();
    let e = hanging_installer
        .install(&hang, &origin())
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "probe_failed", "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    // The old model served throughout and still does; nothing was left in staging.
    assert_eq!(pid(&h).await, serving_pid);
    assert_eq!(
        store.check_active().unwrap().unwrap().manifest.label(),
        "tiny@1"
    );
    let mut stream = h.generate(user("still here"), fixed(4)).await.unwrap();
    let mut last = None;
    while let Some(item) = stream.next().await {
        last = Some(item);
    }
    assert!(matches!(last, Some(StreamItem::Done { .. })), "{last:?}");
    assert!(std::fs::read_dir(data.join("models/staging"))
        .unwrap()
        .next()
        .is_none());
    let reasons: Vec<_> = audit_records(&data)
        .into_iter()
        .filter(|r| r.action == Action::BundleRejected)
        .map(|r| r.detail.get("reason").cloned().unwrap_or_default())
        .collect();
    assert_eq!(reasons, ["probe_failed", "probe_failed", "probe_failed"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_split_into_shards_is_installed_and_served_whole() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let s = signer(t.path());
    let first = s.bundle(&t.path().join("stick/first"), "tiny", 1, &tiny(1));
    // The same model as one file and as three shards: greedy answers must be identical.
    let whole = t.path().join("whole.gguf");
    models::testmodel::write_llama(&tiny(5), &whole).unwrap();
    let split = t.path().join("stick/split");
    std::fs::create_dir_all(&split).unwrap();
    let shards = models::testmodel::write_llama_split(&tiny(5), &split, "tiny", 3).unwrap();
    assert_eq!(shards.len(), 3);
    s.seal(&split, "tiny", 2);
    let m = models::bundle::Manifest::parse(&std::fs::read(split.join("manifest.toml")).unwrap())
        .unwrap();
    assert_eq!(m.files.len(), 3);
    assert_eq!(m.model.parameters, tiny(5).parameters());

    let (store, _) = Store::open(&data.join("models")).unwrap();
    let audit = audit_log(&data);
    let serving = launch("phibox-worker", &first.join("model.gguf"), settings());
    let h = spawn_manager(serving.clone());
    pid(&h).await;
    let installer = Installer::new(store.clone(), s.trusted.clone(), serving, h.clone(), audit);
    installer.install(&split, &origin()).await.unwrap();
    let active = store.check_active().unwrap().unwrap();
    assert!(active.primary().ends_with("tiny-00001-of-00003.gguf"));
    let (from_shards, _) = support::complete(&h, "compare", fixed(24)).await;
    h.shutdown().await;

    let reference = spawn_manager(launch("phibox-worker", &whole, settings()));
    pid(&reference).await;
    let (from_whole, _) = support::complete(&reference, "compare", fixed(24)).await;
    reference.shutdown().await;
    assert!(!from_whole.is_empty());
    assert_eq!(from_shards, from_whole, "the shards are the whole model");
}
