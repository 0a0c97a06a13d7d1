//! Dev mode (`phiboxd --dev`): the same code as the appliance on a laptop or CI machine, with a
//! data directory in the working tree instead of the encrypted volume. It never weakens the
//! confinement silently: a partial landlock needs an explicit flag and is announced loudly.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox::protocol::{Message, Phi, Role, Sampling};

use crate::audit::{self, Action, Actor, AuditError, AuditLog, Entry};
use crate::chat::Chat;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::confinement_report::{self, ReportError};
use crate::inference::{self, Status, StreamItem, WorkerLaunch};
use crate::programs::{ProgramError, Programs};

/// The inference worker's program name.
pub const WORKER_PROGRAM: &str = "phibox-worker";
/// A fixed, PHI-free question whose answer shows the model works.
pub const SELF_TEST_PROMPT: &str = "A hospital discharge letter is a document that";

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("phiboxd must run as root to confine the worker (namespaces, mounts, uid switch)")]
    NotRoot,
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no model: pass --model or set worker.model in the configuration")]
    NoModel,
    #[error("model file {path} is not readable")]
    Model {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Programs(#[from] ProgramError),
    #[error("the inference worker did not start: {0}")]
    Worker(String),
    #[error(transparent)]
    Confinement(#[from] ReportError),
    #[error("the self-test generation failed: {0}")]
    SelfTest(String),
    #[error("waiting for a stop signal")]
    Signals(#[source] std::io::Error),
    #[error("the audit trail")]
    Audit(#[from] AuditError),
    #[error("the web UI's TLS certificate")]
    Tls(#[from] crate::web::tls::TlsError),
    #[error("starting the web UI")]
    Web(#[from] crate::web::server::ServeError),
    #[error("the dev users")]
    Users(#[from] crate::auth::local::LocalUsersError),
    #[error("the directory")]
    Directory(#[from] crate::auth::directory::DirectoryError),
    #[error("the database")]
    Store(#[from] crate::store::StoreError),
    #[error("model bundles")]
    Bundles(#[from] crate::install::boot::BootError),
}

/// Dev mode's local accounts (one per role) and their shared password, in `secrets/`.
pub const DEV_USERS_FILE: &str = "dev-users.toml";
pub const DEV_PASSWORD_FILE: &str = "dev-password";
/// The break-glass accounts' file in `secrets/` unless configured elsewhere.
pub const BREAK_GLASS_FILE: &str = "break-glass.toml";
/// Dev mode's one emergency account (password: the dev password).
pub const DEV_EMERGENCY_USER: &str = "emergency";

/// Dev mode's accounts: the users (one per role), the break-glass accounts and their shared
/// password, created with a fresh random password on first use.
struct DevAccounts {
    users: crate::auth::local::LocalUsers,
    break_glass: crate::auth::local::LocalUsers,
    password: String,
}

fn dev_accounts(data_dir: &Path, break_glass_file: Option<&Path>) -> Result<DevAccounts, DevError> {
    use crate::auth::local::{hash_password, LocalUser, LocalUsers, LocalUsersError};
    use crate::auth::Role;
    let secrets = data_dir.join("secrets");
    let users = secrets.join(DEV_USERS_FILE);
    let pw_file = secrets.join(DEV_PASSWORD_FILE);
    let read_password = || {
        std::fs::read_to_string(&pw_file)
            .map(|p| p.trim().to_owned())
            .map_err(|source| LocalUsersError::Read {
                path: pw_file.clone(),
                source,
            })
    };
    if !users.exists() || !pw_file.exists() {
        const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
        let mut raw = [0u8; 14];
        getrandom::fill(&mut raw).map_err(|e| LocalUsersError::Hash(e.to_string()))?;
        let password: String = raw
            .iter()
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
            .collect();
        let hash = hash_password(&password)?;
        let accounts: Vec<LocalUser> = [
            (Role::Clinician, "Dev Clinician", Some("internal_medicine")),
            (Role::Nurse, "Dev Nurse", Some("nursing")),
            (Role::Admin, "Dev Admin", None),
            (Role::PrivacyOfficer, "Dev Privacy Officer", None),
            (Role::Auditor, "Dev Auditor", None),
        ]
        .into_iter()
        .map(|(role, name, dept)| LocalUser {
            id: role.name().to_owned(),
            name: name.to_owned(),
            department: dept.map(str::to_owned),
            role,
            password_hash: hash.clone(),
        })
        .collect();
        LocalUsers::save(&accounts, &users)?;
        crate::audit::keys::write_secret(&pw_file, format!("{password}\n").as_bytes())
            .map_err(|e| LocalUsersError::Hash(e.to_string()))?;
    }
    let password = read_password()?;
    let bg_file = match break_glass_file {
        Some(p) => p.to_path_buf(),
        None => {
            let p = secrets.join(BREAK_GLASS_FILE);
            if !p.exists() {
                let account = LocalUser {
                    id: DEV_EMERGENCY_USER.to_owned(),
                    name: "Emergency access (dev)".to_owned(),
                    department: None,
                    role: Role::Clinician,
                    password_hash: hash_password(&password)?,
                };
                LocalUsers::save(&[account], &p)?;
            }
            p
        }
    };
    Ok(DevAccounts {
        users: LocalUsers::load(&users, false)?,
        break_glass: LocalUsers::load(&bg_file, true)?,
        password,
    })
}

/// Dev-mode settings.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub data_dir: PathBuf,
    pub model: Option<PathBuf>,
    pub config: Config,
    pub allow_partial_landlock: bool,
    /// Stop right after the report and self-test instead of waiting for a signal.
    pub check_only: bool,
}

fn prepare_data_dir(path: &Path) -> Result<(), DevError> {
    let err = |source| DevError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Who the self-test runs as, in the audit trail.
fn self_test_actor() -> Actor {
    Actor {
        user_id: Some("phiboxd".into()),
        user_role: Some("system".into()),
        ..Actor::default()
    }
}

/// Runs the fixed self-test prompt through the audited chat path; returns the reply.
async fn self_test(chat: &Chat) -> Result<String, DevError> {
    let messages = vec![Message {
        role: Role::User,
        content: Phi(SELF_TEST_PROMPT.into()),
    }];
    let sampling = Sampling {
        max_tokens: 48,
        ..Sampling::default()
    };
    let mut stream = chat
        .start(&self_test_actor(), "self_test", messages, sampling)
        .await
        .map_err(|e| DevError::SelfTest(sandbox::error_chain::chain(&e)))?;
    let mut reply = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(StreamItem::Token(t)) => reply.push_str(&t.0),
            Ok(StreamItem::Done { .. }) => return Ok(reply),
            Ok(StreamItem::Failed(e)) => return Err(DevError::SelfTest(e.to_string())),
            Err(e) => return Err(DevError::SelfTest(sandbox::error_chain::chain(&e))),
        }
    }
    Ok(reply)
}

/// Opens the trail in `<data>/audit`, provisioning its secrets on first use (dev mode).
fn open_audit(data_dir: &Path, say: &mut (dyn FnMut(&str) + Send)) -> Result<AuditLog, DevError> {
    let mut o = audit::Options::new(data_dir, std::sync::Arc::new(SystemClock));
    o.provision = true;
    let (log, opened) = AuditLog::open(o)?;
    if opened.provisioned {
        say(&format!(
            "audit trail provisioned; its seal seed is in {} (dev mode only: on the appliance the \
             security officer keeps it offline)",
            data_dir
                .join("secrets")
                .join(audit::keys::SEAL_SEED_FILE)
                .display()
        ));
    }
    if let Some(p) = &opened.torn_moved_to {
        say(&format!(
            "audit trail: an interrupted last record was moved to {} and recorded",
            p.display()
        ));
    }
    say(&format!(
        "audit trail {} ({} records)",
        data_dir.join("audit").display(),
        opened.records
    ));
    Ok(log)
}

/// Runs phibox in dev mode; returns when stopped by SIGINT/SIGTERM (or at once with
/// `check_only`). `say` receives the human-readable summary lines.
pub async fn run(opts: DevOptions, say: &mut (dyn FnMut(&str) + Send)) -> Result<(), DevError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DevError::NotRoot);
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(DevError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DevError::Signals)?;

    say("WARNING: dev mode: the data directory is NOT encrypted; never put real patient data here");
    prepare_data_dir(&opts.data_dir)?;
    say(&format!(
        "data directory {} (mode 0700)",
        opts.data_dir.display()
    ));
    let audit = open_audit(&opts.data_dir, say)?;
    audit
        .append(
            Entry::new(Action::Startup)
                .detail("mode", "dev")
                .detail("version", env!("CARGO_PKG_VERSION")),
        )
        .await?;
    let result = serve(&opts, say, &audit, &mut term, &mut int).await;
    let how = match &result {
        Ok(how) => how.clone(),
        Err(_) => "error".to_owned(),
    };
    let closed = async {
        audit
            .append(Entry::new(Action::Shutdown).detail("reason", how))
            .await?;
        audit.close().await
    }
    .await;
    result?;
    closed?;
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The bundle installer, and the USB watcher when configured.
fn bundles(
    opts: &DevOptions,
    say: &mut (dyn FnMut(&str) + Send),
    store: models::bundle::Store,
    launch: WorkerLaunch,
    handle: &inference::InferenceHandle,
    audit: &AuditLog,
    chat: &Chat,
) -> Result<std::sync::Arc<crate::install::Installer>, DevError> {
    let cfg = &opts.config.bundles;
    let (keys, dir) = crate::install::boot::trusted_keys(cfg, &opts.data_dir, true)?;
    if keys.is_empty() {
        say(&format!(
            "model bundles: no trusted keys in {}: every bundle will be refused",
            dir.display()
        ));
    } else {
        let ids: Vec<String> = keys.ids().iter().map(ToString::to_string).collect();
        say(&format!(
            "model bundles: trusted key(s) {} from {}",
            ids.join(", "),
            dir.display()
        ));
    }
    let mut installer =
        crate::install::Installer::new(store, keys, launch, handle.clone(), audit.clone());
    installer.probe.load_timeout = Duration::from_secs(cfg.probe_load_secs);
    installer.probe.generate_timeout = Duration::from_secs(cfg.probe_generate_secs);
    installer.label = Some(chat.model_label());
    let installer = std::sync::Arc::new(installer);
    if cfg.watch_usb && !opts.check_only {
        crate::install::boot::watch_usb(cfg, installer.clone(), audit.clone())?;
        say(&format!(
            "watching for USB sticks with model bundles (mounted read-only in {})",
            cfg.mount_dir.display()
        ));
    }
    Ok(installer)
}

/// Everything after the audit trail is open; returns why it stopped.
async fn serve(
    opts: &DevOptions,
    say: &mut (dyn FnMut(&str) + Send),
    audit: &AuditLog,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> Result<String, DevError> {
    let models = crate::install::boot::open_store(&opts.data_dir)?;
    let cleaned = [
        &models.recovery.removed_staging,
        &models.recovery.removed_versions,
    ];
    if cleaned.iter().any(|c| !c.is_empty()) {
        say(&format!(
            "model store: removed what an interrupted install left ({})",
            cleaned
                .iter()
                .flat_map(|c| c.iter())
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // An explicit --model wins; then the installed bundle; then the configuration.
    let (model, model_name) = match (&opts.model, &models.active) {
        (Some(m), _) => (m.clone(), file_name(m)),
        (None, Some(active)) => (active.primary(), active.manifest.label()),
        (None, None) => {
            let m = opts.config.worker.model.clone().ok_or(DevError::NoModel)?;
            let name = file_name(&m);
            (m, name)
        }
    };
    std::fs::File::open(&model).map_err(|source| DevError::Model {
        path: model.clone(),
        source,
    })?;
    let programs = Programs::beside_self(WORKER_PROGRAM)?;
    if opts.allow_partial_landlock {
        say("WARNING: --allow-partial-landlock: the worker may run with a weaker landlock than required");
        tracing::warn!("landlock override requested: the worker may run partially confined");
    }
    let settings = opts.config.worker.clone();
    let wait = settings.ready_timeout() + Duration::from_secs(10);
    let launch = WorkerLaunch {
        jail: programs.jail,
        program: programs.worker,
        model: model.clone(),
        extra_args: Vec::new(),
        settings,
        allow_partial_landlock: opts.allow_partial_landlock,
        audit: Some(audit.clone()),
    };
    let root_entries = launch
        .spec()
        .plan()
        .map_err(|e| DevError::Worker(sandbox::error_chain::chain(&e)))?
        .root
        .len();
    let handle = inference::spawn_manager(launch.clone());
    tokio::spawn(crate::reaper::run());
    let status = tokio::time::timeout(
        wait,
        handle.wait_for(|s| matches!(s, Status::Ready { .. } | Status::Failed(_))),
    )
    .await
    .map_err(|_| DevError::Worker(format!("not ready within {wait:?}")))?;
    let (facts, slots, pid) = match status {
        Status::Ready { facts, slots, pid } => (facts, slots, pid),
        other => {
            handle.shutdown().await;
            return Err(DevError::Worker(match other {
                Status::Failed(r) => r,
                s => format!("{s:?}"),
            }));
        }
    };
    say(&format!(
        "inference worker ready: {} ({}, {} parameters, {}, trained context {}), {} slots, model {}",
        facts.architecture,
        if facts.chat_template == "model" {
            "with its own chat template"
        } else {
            "no chat template: prompts are plain text"
        },
        facts.parameters,
        facts.quantization,
        facts.context_length,
        slots,
        model.display()
    ));
    let report = tokio::task::spawn_blocking(move || {
        confinement_report::check(nix::unistd::Pid::from_raw(pid), root_entries)
    })
    .await
    .map_err(|e| DevError::Worker(e.to_string()))?;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            handle.shutdown().await;
            return Err(e.into());
        }
    };
    say("confinement verified from outside:");
    let mut lines = report.lines();
    if opts.allow_partial_landlock {
        lines.pop();
        lines.push(
            "landlock: --allow-partial-landlock is set; enforcement may be partial (see the log)"
                .into(),
        );
    }
    for line in lines {
        say(&format!("  - {line}"));
    }
    let store = crate::store::Store::open(&opts.data_dir.join(crate::store::FILE))?;
    let chat = Chat::new(handle.clone(), audit.clone(), model_name).with_transcripts(store.clone());
    let reply = match self_test(&chat).await {
        Ok(r) => r,
        Err(e) => {
            handle.shutdown().await;
            return Err(e);
        }
    };
    say(&format!(
        "self-test: asked {SELF_TEST_PROMPT:?}; the model answered: {:?}",
        reply.trim()
    ));
    let installer = bundles(opts, say, models.store, launch, &handle, audit, &chat)?;
    crate::notify::ready();
    if opts.check_only {
        crate::notify::stopping();
        handle.shutdown().await;
        say("check complete; stopped");
        return Ok("check".into());
    }
    tokio::spawn(crate::notify::watchdog(handle.clone()));
    let dev_accounts = dev_accounts(&opts.data_dir, opts.config.auth.break_glass_file.as_deref())?;
    let password = dev_accounts.password.clone();
    let directory = opts
        .config
        .directory
        .clone()
        .map(|d| crate::auth::directory::Directory::new(d, true))
        .transpose()?;
    if opts.config.web.idle_timeout_mins > 15 {
        say(&format!(
            "WARNING: sessions end after {} minutes without activity, longer than the recommended 15 (web.allow_long_idle_timeout)",
            opts.config.web.idle_timeout_mins
        ));
    }
    let web_state = crate::web::WebState {
        dev: true,
        chat: Some(chat.clone()),
        prompt_cap: crate::web::DEFAULT_PROMPT_CAP,
        reply_tokens: opts
            .config
            .worker
            .max_tokens
            .min(crate::web::DEFAULT_REPLY_TOKENS),
        store: store.clone(),
        audit_dir: opts.data_dir.join("audit"),
        config: std::sync::Arc::new(opts.config.clone()),
        installer: Some(installer),
        auth: std::sync::Arc::new(crate::web::Auth {
            accounts: crate::auth::signin::Accounts {
                local: directory.is_none().then_some(dev_accounts.users),
                directory,
                break_glass: Some(dev_accounts.break_glass),
            },
            sessions: crate::auth::session::Sessions::new(
                std::sync::Arc::new(SystemClock),
                jiff::SignedDuration::from_mins(i64::from(opts.config.web.idle_timeout_mins)),
            ),
            throttle: crate::auth::throttle::Throttle::new(std::sync::Arc::new(SystemClock)),
            audit: audit.clone(),
        }),
    };
    tokio::spawn(crate::web::signin::sweep(
        web_state.clone(),
        Duration::from_secs(30),
    ));
    tokio::spawn(crate::store::transcripts::keep_within(
        store.clone(),
        audit.clone(),
        opts.config.transcripts.retention_days,
        Duration::from_secs(3600),
    ));
    let (tls, generated) = crate::web::tls::for_data_dir(&opts.data_dir, true)?;
    if generated {
        say(&format!(
            "generated a self-signed TLS certificate in {} (dev mode only)",
            opts.data_dir.join("tls").display()
        ));
    }
    let web = crate::web::server::start(
        opts.config.web.https_addr(true),
        opts.config.web.http_addr(true),
        tls,
        crate::web::app(web_state.clone()),
    )
    .await?;
    say(&format!(
        "web UI: https://localhost:{}/ (self-signed certificate: the browser warns once){}",
        web.https.port(),
        web.http
            .map(|a| format!("; http://localhost:{}/ redirects there", a.port()))
            .unwrap_or_default()
    ));
    if let Some(d) = &opts.config.directory {
        say(&format!("sign-in: through the directory at {}", d.url));
    } else {
        say(&format!(
            "dev sign-in: user clinician, nurse, admin, privacy_officer or auditor, password {password} \
             (in {})",
            opts.data_dir.join("secrets").join(DEV_PASSWORD_FILE).display()
        ));
    }
    if opts.config.auth.break_glass_file.is_none() {
        say(&format!(
            "emergency (break-glass) sign-in: user {DEV_EMERGENCY_USER}, the same password; every use is recorded"
        ));
    }
    say("phibox is running; stop with Ctrl-C");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "stopping");
    crate::notify::stopping();
    web.stop(Duration::from_secs(5)).await;
    handle.shutdown().await;
    say(&format!("stopped on {name}; the worker has ended"));
    Ok(name.to_owned())
}
