//! Power loss during an install: a child process installs a new model bundle with the real
//! installer (real worker, real probe) and is SIGKILLed at one checkpoint of the install; this
//! is repeated for every checkpoint. After each kill the parent opens the store as phiboxd does
//! at start-up and checks that the box is on exactly the old or the new model as the
//! checkpoint implies, that the active files match their manifest, that staging and unused
//! versions are gone, and that the active model loads in the confined worker and answers.
//!
//! A process kill is not a power cut (the page cache survives it); what it proves is that every
//! intermediate state on disk is one the start-up recovery handles. The fsync order that makes
//! the same states the only ones a power cut can leave is in `models::bundle::store`.
//!
//! `harness = false`: this binary is both the test and, with PHIBOX_POWER_LOSS_CHILD set, the
//! installer it kills.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use models::bundle::install::Step;
use models::bundle::store::{ActivationStep, Store};
use models::bundle::{prepare, Prepared, Quiet};
use supervisor::inference::{spawn_manager, Status, StreamItem};
use supervisor::install::{Checkpoint, Installer, Origin};
use support::bundles::{signer, tiny, Signer};
use support::{fixed, launch, settings, user};

const CHILD: &str = "PHIBOX_POWER_LOSS_CHILD";
const DIR: &str = "PHIBOX_POWER_LOSS_DIR";

/// Every checkpoint, in install order, and whether the new model is active after a kill there.
fn checkpoints() -> Vec<(Checkpoint, bool)> {
    vec![
        (Checkpoint::Step(Step::Verified), false),
        (Checkpoint::Step(Step::Staged), false),
        (Checkpoint::MidCopy, false),
        (Checkpoint::Step(Step::Copied(0)), false),
        (Checkpoint::Step(Step::Checked), false),
        (Checkpoint::ProbeStarted, false),
        (Checkpoint::ProbePassed, false),
        (
            Checkpoint::Step(Step::Activation(ActivationStep::Sealed)),
            false,
        ),
        (
            Checkpoint::Step(Step::Activation(ActivationStep::Moved)),
            false,
        ),
        (
            Checkpoint::Step(Step::Activation(ActivationStep::Activated)),
            true,
        ),
        (Checkpoint::Switched, true),
        (Checkpoint::Cleaned, true),
    ]
}

fn root(dir: &Path) -> PathBuf {
    dir.join("data/models")
}

/// The installer, killed at checkpoint number `target`.
fn child(dir: &Path, target: usize) -> ! {
    let (point, _) = checkpoints()[target];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (store, _) = Store::open(&root(dir)).unwrap();
        let keys = models::bundle::TrustedKeys::load_dir(&dir.join("trusted")).unwrap();
        let active = store.active().unwrap().unwrap().primary();
        let serving = launch("phibox-worker", &active, settings());
        let h = spawn_manager(serving.clone());
        h.wait_for(|s| matches!(s, Status::Ready { .. })).await;
        let audit = support::audit_log(&dir.join("data"));
        let mut installer = Installer::new(store, keys, serving, h, audit);
        installer.hook = Some(Arc::new(move |c| {
            if c == point {
                let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::SIGKILL);
            }
        }));
        let r = installer
            .install(&dir.join("stick/new"), &Origin::default())
            .await;
        eprintln!("the install ended without reaching {point:?}: {r:?}");
        std::process::exit(3);
    })
}

/// A box with the old model installed and a stick with the new one.
fn prepare_box(dir: &Path, s: &Signer) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let old = s.bundle(&dir.join("stick/old"), "clinic", 1, &tiny(1));
    // The new model spans several copy chunks, so that a kill can land inside the copy.
    let mut big = models::testmodel::LlamaConfig::small();
    big.seed = 3;
    let new = s.bundle(&dir.join("stick/new"), "clinic", 2, &big);
    assert!(
        std::fs::metadata(new.join("model.gguf")).unwrap().len()
            > 2 * models::bundle::copy::CHUNK as u64
    );
    let (store, _) = Store::open(&root(dir)).unwrap();
    match prepare(&store, &s.trusted, &old, &mut Quiet).unwrap() {
        Prepared::Staged(staged) => {
            staged.activate(&store, &mut Quiet).unwrap();
        }
        other => panic!("{other:?}"),
    }
}

async fn answers(model: &Path) -> bool {
    let h = spawn_manager(launch("phibox-worker", model, settings()));
    let ready = tokio::time::timeout(
        Duration::from_secs(60),
        h.wait_for(|s| matches!(s, Status::Ready { .. })),
    )
    .await
    .is_ok();
    let mut ok = false;
    if ready {
        let mut stream = h.generate(user("hello"), fixed(4)).await.unwrap();
        while let Some(item) = stream.next().await {
            ok = matches!(item, StreamItem::Done { .. });
        }
    }
    h.shutdown().await;
    ok
}

fn parent() {
    support::require_root();
    let t = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (n, (point, new_active)) in checkpoints().into_iter().enumerate() {
        let dir = t.path().join(format!("round-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let s = signer(&dir);
        prepare_box(&dir, &s);
        let status = Command::new(std::env::current_exe().unwrap())
            .env(CHILD, n.to_string())
            .env(DIR, &dir)
            .status()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "the child was to be killed at {point:?}: {status:?}"
        );
        // phiboxd's start-up: open the store (which cleans up), load the active model.
        let (store, recovery) = Store::open(&root(&dir)).unwrap();
        let active = store
            .check_active()
            .unwrap()
            .unwrap_or_else(|| panic!("no active model after a kill at {point:?}"));
        let want = if new_active { "clinic@2" } else { "clinic@1" };
        assert_eq!(active.manifest.label(), want, "after a kill at {point:?}");
        let staging: Vec<_> = std::fs::read_dir(root(&dir).join("staging"))
            .unwrap()
            .collect();
        assert!(staging.is_empty(), "staging left after {point:?}");
        let versions: Vec<_> = std::fs::read_dir(root(&dir).join("versions"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(versions, [want], "after a kill at {point:?}");
        assert!(
            rt.block_on(answers(&active.primary())),
            "the active model does not answer after a kill at {point:?}"
        );
        // And the install can simply be repeated.
        let repeat = rt.block_on(async {
            let keys = s.trusted.clone();
            let serving = launch("phibox-worker", &active.primary(), settings());
            let h = spawn_manager(serving.clone());
            let audit = support::audit_log(&dir.join("data"));
            let installer = Installer::new(store.clone(), keys, serving, h.clone(), audit);
            let r = installer
                .install(&dir.join("stick/new"), &Origin::default())
                .await;
            h.shutdown().await;
            r
        });
        assert!(repeat.is_ok(), "repeating after {point:?}: {repeat:?}");
        assert_eq!(
            store.check_active().unwrap().unwrap().manifest.label(),
            "clinic@2"
        );
        eprintln!(
            "killed at {point:?}: {want} active, cleaned {recovery:?}, answers, repeat installs"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!(
        "bundle_power_loss: {} kill points passed in {:.0?}",
        checkpoints().len(),
        started.elapsed()
    );
}

fn main() {
    match (std::env::var(CHILD), std::env::var(DIR)) {
        (Ok(n), Ok(dir)) => child(Path::new(&dir), n.parse().unwrap()),
        _ => parent(),
    }
}
