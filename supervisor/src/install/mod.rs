//! Installing a signed model bundle into the box: the `models` crate verifies and stages it
//! (signature first, copy hashed, GGUF checked), `probe` loads it in a confined worker, the
//! store activates it atomically, the serving worker switches (in-flight chats finish on the
//! old model), and the old version is removed once the new one serves. Every outcome goes into
//! the audit trail with its reason; progress goes to the journal and the admin page.

pub mod boot;
pub mod probe;
pub mod progress;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use models::bundle::install::Step;
use models::bundle::store::{Installed, Store};
use models::bundle::{prepare, InstallError, Observer, Prepared, TrustedKeys};
use tokio::sync::{watch, Mutex};

use crate::audit::{Action, AuditLog, Entry};
use crate::inference::{InferenceHandle, WorkerLaunch};
pub use probe::{ProbeError, ProbeSettings};
pub use progress::{Phase, Progress};

/// Where a bundle came from (recorded with every outcome).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The kernel's device name, e.g. `sdb1`.
    pub device: String,
    pub vendor: String,
    pub product: String,
    pub serial: String,
}

/// Points of an install that a test can stop the process at (the power-loss test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    Step(Step),
    /// Part of the first file is copied.
    MidCopy,
    ProbeStarted,
    ProbePassed,
    /// The serving worker runs the new model.
    Switched,
    /// The old version is removed.
    Cleaned,
}

/// Why an install ended without a new model.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Bundle(#[from] InstallError),
    #[error("the probe failed: {0}")]
    Probe(ProbeError),
    #[error("the serving worker did not start on the new model: {0}")]
    Switch(String),
    #[error("another install is running")]
    Busy,
    #[error("the installer task failed")]
    Task,
}

impl Refusal {
    /// The stable name recorded in the trail (docs/bundles.md lists them).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Bundle(e) => e.reason(),
            Refusal::Probe(_) => "probe_failed",
            Refusal::Switch(_) => "switch_failed",
            Refusal::Busy => "busy",
            Refusal::Task => "internal_error",
        }
    }
}

/// What a finished install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The bundle's model now serves.
    Installed { label: String, removed: Vec<String> },
    /// It was already the active model: nothing copied.
    AlreadyActive { label: String },
}

type Hook = Arc<dyn Fn(Checkpoint) + Send + Sync>;

/// The installer of one box.
pub struct Installer {
    store: Store,
    keys: TrustedKeys,
    serving: WorkerLaunch,
    handle: InferenceHandle,
    audit: AuditLog,
    pub probe: ProbeSettings,
    progress: watch::Sender<Progress>,
    running: Mutex<()>,
    /// Called at every checkpoint (tests stop the process there).
    pub hook: Option<Hook>,
    /// The model name chats record; set to the new version once it serves.
    pub label: Option<crate::chat::ModelLabel>,
}

impl std::fmt::Debug for Installer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installer")
            .field("store", &self.store)
            .field("keys", &self.keys.ids())
            .finish_non_exhaustive()
    }
}

struct Watch<'a> {
    tracker: progress::Tracker,
    hook: Option<&'a Hook>,
    mid_copy_seen: bool,
}

impl Observer for Watch<'_> {
    fn step(&mut self, step: Step) {
        if let Some(h) = self.hook {
            h(Checkpoint::Step(step));
        }
        if step == Step::Checked {
            self.tracker.phase(Phase::Checking);
        }
    }

    fn progress(&mut self, done: u64, total: u64) {
        self.tracker.copied(done, total);
        if !self.mid_copy_seen && done < total {
            self.mid_copy_seen = true;
            if let Some(h) = self.hook {
                h(Checkpoint::MidCopy);
            }
        }
    }
}

impl Installer {
    /// `serving` is how the serving worker is started (the probe uses the same sandbox);
    /// `handle` is that worker's manager.
    pub fn new(
        store: Store,
        keys: TrustedKeys,
        serving: WorkerLaunch,
        handle: InferenceHandle,
        audit: AuditLog,
    ) -> Installer {
        Installer {
            store,
            keys,
            serving,
            handle,
            audit,
            probe: ProbeSettings::default(),
            progress: watch::channel(Progress::default()).0,
            running: Mutex::new(()),
            hook: None,
            label: None,
        }
    }

    /// The current install's progress (the admin page).
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn trusted_keys(&self) -> &TrustedKeys {
        &self.keys
    }

    fn checkpoint(&self, c: Checkpoint) {
        if let Some(h) = &self.hook {
            h(c);
        }
    }

    async fn record(&self, entry: Entry, origin: &Origin) {
        let entry = entry
            .detail("device", &origin.device)
            .detail("vendor", &origin.vendor)
            .detail("product", &origin.product)
            .detail("serial", &origin.serial);
        if let Err(e) = self.audit.append(entry).await {
            tracing::error!(
                error = sandbox::error_chain::chain(&e),
                "audit record of a bundle install failed"
            );
        }
    }

    /// Installs the bundle in directory `bundle` (on a mounted stick).
    pub async fn install(&self, bundle: &Path, origin: &Origin) -> Result<Outcome, Refusal> {
        let Ok(_running) = self.running.try_lock() else {
            let refusal = Refusal::Busy;
            self.refused(&refusal, None, origin).await;
            return Err(refusal);
        };
        let tracker = progress::Tracker::new(self.progress.clone());
        tracker.start();
        let started = Instant::now();
        let result = self.run(bundle, origin, tracker, started).await;
        match &result {
            Ok(outcome) => {
                let (label, message) = match outcome {
                    Outcome::Installed { label, .. } => (
                        label.clone(),
                        format!("model {label} is installed and serving; you can remove the stick"),
                    ),
                    Outcome::AlreadyActive { label } => (
                        label.clone(),
                        format!("model {label} is already installed; nothing to do; you can remove the stick"),
                    ),
                };
                tracing::info!(bundle = %label, "{message}");
                progress::Tracker::new(self.progress.clone()).phase(Phase::Done { label, message });
            }
            Err((refusal, label)) => self.refused(refusal, label.clone(), origin).await,
        }
        if let Ok(outcome) = &result {
            self.recorded_success(outcome, origin).await;
        }
        result.map_err(|(r, _)| r)
    }

    async fn recorded_success(&self, outcome: &Outcome, origin: &Origin) {
        match outcome {
            Outcome::Installed { label, removed } => {
                self.record(
                    Entry::new(Action::BundleActivated)
                        .model(label)
                        .detail("removed", removed.join(",")),
                    origin,
                )
                .await
            }
            Outcome::AlreadyActive { label } => {
                self.record(
                    Entry::new(Action::BundleRejected)
                        .model(label)
                        .detail("reason", "already_active"),
                    origin,
                )
                .await
            }
        }
    }

    async fn refused(&self, refusal: &Refusal, label: Option<String>, origin: &Origin) {
        let message = sandbox::error_chain::chain(refusal);
        tracing::warn!(reason = refusal.reason(), error = %message, "model bundle refused; you can remove the stick");
        let mut entry = Entry::new(Action::BundleRejected)
            .detail("reason", refusal.reason())
            .detail("message", message.chars().take(400).collect::<String>());
        if let Some(l) = &label {
            entry = entry.model(l);
        }
        self.record(entry, origin).await;
        progress::Tracker::new(self.progress.clone()).phase(Phase::Refused {
            reason: refusal.reason().into(),
            message: format!("{message}; you can remove the stick"),
        });
    }

    async fn run(
        &self,
        bundle: &Path,
        origin: &Origin,
        tracker: progress::Tracker,
        started: Instant,
    ) -> Result<Outcome, (Refusal, Option<String>)> {
        let store = self.store.clone();
        let keys = self.keys.clone();
        let dir = bundle.to_owned();
        let hook = self.hook.clone();
        let (prepared, tracker) = tokio::task::spawn_blocking(move || {
            let mut watch = Watch {
                tracker,
                hook: hook.as_ref(),
                mid_copy_seen: false,
            };
            let r = prepare(&store, &keys, &dir, &mut watch);
            (r, watch.tracker)
        })
        .await
        .map_err(|_| (Refusal::Task, None))?;
        let staged = match prepared.map_err(|e| (Refusal::Bundle(e), None))? {
            Prepared::AlreadyActive { manifest, .. } => {
                return Ok(Outcome::AlreadyActive {
                    label: manifest.label(),
                })
            }
            Prepared::Staged(s) => s,
        };
        let label = staged.manifest.label();
        let with_label = |r: Refusal| (r, Some(label.clone()));
        tracker.bundle(format!(
            "{} {} (sequence {})",
            staged.manifest.name, staged.manifest.version, staged.manifest.sequence
        ));
        tracker.phase(Phase::Probing);
        tracing::info!(bundle = %label, "the copy is verified; the stick is no longer needed; probing the model");
        self.checkpoint(Checkpoint::ProbeStarted);
        probe::probe(&self.serving, &staged.primary(), &self.probe)
            .await
            .map_err(|e| with_label(Refusal::Probe(e)))?;
        self.checkpoint(Checkpoint::ProbePassed);
        tracker.phase(Phase::Activating);
        let store = self.store.clone();
        let hook = self.hook.clone();
        let manifest = staged.manifest.clone();
        let signer = staged.signer;
        let installed: Installed = tokio::task::spawn_blocking(move || {
            let mut watch = Watch {
                tracker,
                hook: hook.as_ref(),
                mid_copy_seen: true,
            };
            staged.activate(&store, &mut watch)
        })
        .await
        .map_err(|_| with_label(Refusal::Task))?
        .map_err(|e| with_label(Refusal::Bundle(e)))?;
        self.record_installed(&manifest, signer, started, origin)
            .await;
        progress::Tracker::new(self.progress.clone()).phase(Phase::Switching);
        self.handle
            .change_model(installed.primary())
            .await
            .map_err(|e| with_label(Refusal::Switch(e.to_string())))?;
        if let Some(l) = &self.label {
            l.set(&label);
        }
        self.checkpoint(Checkpoint::Switched);
        let store = self.store.clone();
        let removed = tokio::task::spawn_blocking(move || store.remove_inactive())
            .await
            .map_err(|_| with_label(Refusal::Task))?
            .map_err(|e| with_label(Refusal::Bundle(InstallError::Store(e))))?;
        self.checkpoint(Checkpoint::Cleaned);
        Ok(Outcome::Installed { label, removed })
    }

    async fn record_installed(
        &self,
        m: &models::bundle::Manifest,
        signer: models::bundle::KeyId,
        started: Instant,
        origin: &Origin,
    ) {
        let entry = Entry::new(Action::BundleInstalled)
            .model(m.label())
            .detail("version", &m.version)
            .detail("signer", signer.to_string())
            .detail("bytes", m.total_size().to_string())
            .detail("seconds", started.elapsed().as_secs().to_string());
        let entry = entry
            .detail("architecture", &m.model.architecture)
            .detail("quantization", &m.model.quantization);
        self.record(entry, origin).await;
    }

    /// The model the serving worker should load at start: the store's active version.
    pub fn active_model(
        store: &Store,
    ) -> Result<Option<PathBuf>, models::bundle::store::StoreError> {
        Ok(store.active()?.map(|i| i.primary()))
    }
}
