//! The manager task: owns the worker's lifecycle and all traffic with it. One loop per worker
//! incarnation (`run_worker`) handles frames, caller commands and deadlines; between
//! incarnations the back-off waits while still answering callers.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sandbox::error_chain::chain;
use sandbox::protocol::{Event, Finish, Message, Request, Sampling, Usage, Validator};
use sandbox::{ConfinedChild, DataFile, SandboxSpec, Termination};
use tokio::sync::{mpsc, oneshot, watch};

use super::backoff::Backoff;
use super::handle::{Command, InferenceError, InferenceHandle, Status, StreamItem, TokenStream};
use super::link::{Link, Received};
use crate::audit::{Action, AuditLog, Entry};
use crate::config::WorkerSection;

/// Where the model appears inside the sandbox.
pub const MODEL_INSIDE: &str = "/model/model.gguf";
/// Host files the worker reads besides its model (libgomp sizes its pool from it).
const HOST_FILES: &[&str] = &["/sys/devices/system/cpu/possible"];

/// How to start the worker.
#[derive(Debug, Clone)]
pub struct WorkerLaunch {
    pub jail: PathBuf,
    pub program: PathBuf,
    pub model: PathBuf,
    /// Extra arguments after the ones derived from the configuration.
    pub extra_args: Vec<String>,
    pub settings: WorkerSection,
    pub allow_partial_landlock: bool,
    /// Where worker crashes and restarts are recorded (the journal always gets them).
    pub audit: Option<AuditLog>,
}

/// The model's files and where each appears inside the sandbox: the file itself as
/// [`MODEL_INSIDE`], or, when it is the first shard of a split model
/// (`PREFIX-00001-of-0000N.gguf`), every shard beside it under canonical shard names, which is
/// how llama.cpp finds the others from the first.
pub fn model_files(model: &Path) -> Vec<(PathBuf, PathBuf)> {
    let name = model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match models::gguf::split_file_name(&name) {
        Some((prefix, 1, count)) if count > 1 => (1..=count)
            .map(|no| {
                let host = model.with_file_name(format!("{prefix}-{no:05}-of-{count:05}.gguf"));
                let inside = PathBuf::from(format!("/model/model-{no:05}-of-{count:05}.gguf"));
                (host, inside)
            })
            .collect(),
        _ => vec![(model.to_owned(), PathBuf::from(MODEL_INSIDE))],
    }
}

impl WorkerLaunch {
    /// The sandbox request for this worker.
    pub fn spec(&self) -> SandboxSpec {
        let s = &self.settings;
        let mut spec = SandboxSpec::new(&self.program, s.uid, s.gid);
        let files = model_files(&self.model);
        spec.args = vec![
            "--model".into(),
            files[0].1.display().to_string(),
            "--slots".into(),
            s.slots.to_string(),
            "--context".into(),
            s.context.to_string(),
            "--threads".into(),
            s.threads.to_string(),
            "--max-tokens".into(),
            s.max_tokens.to_string(),
            "--queue".into(),
            s.queue.to_string(),
        ];
        spec.args.extend(self.extra_args.iter().cloned());
        for (source, path) in files {
            spec.data_files.push(DataFile { source, path });
        }
        spec.host_files = HOST_FILES
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect();
        spec.allow_partial_landlock = self.allow_partial_landlock;
        spec.limits.nice = s.nice;
        spec
    }
}

/// Why a worker incarnation ended.
#[derive(Debug)]
enum Exit {
    /// The socket closed: the worker exited or crashed.
    Closed,
    /// It broke the protocol or missed a deadline: killed.
    Fault(String),
    /// It could not load the model.
    LoadFailed(String),
    /// phiboxd is stopping.
    Shutdown,
    /// The worker finished its requests and left for a model change.
    Replaced,
}

struct Open {
    /// `None` once the caller dropped its stream (the worker was asked to cancel).
    tx: Option<mpsc::UnboundedSender<StreamItem>>,
}

struct Waiting {
    id: u64,
    messages: Vec<Message>,
    sampling: Sampling,
    tx: mpsc::UnboundedSender<StreamItem>,
}

struct Manager {
    launch: WorkerLaunch,
    commands_tx: mpsc::Sender<Command>,
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<Status>,
    open: HashMap<u64, Open>,
    waiting: VecDeque<Waiting>,
    next_id: u64,
    ready: bool,
    /// Set when a shutdown was asked for: the deadline for in-flight generations.
    stopping: Option<(Instant, Vec<oneshot::Sender<()>>)>,
    /// The last load failure, while no worker has loaded since.
    load_error: Option<String>,
    /// A requested model change: the new model and who waits for it.
    change: Option<(PathBuf, oneshot::Sender<Result<(), InferenceError>>)>,
    /// Who waits for the worker started after a model change.
    change_waiter: Option<oneshot::Sender<Result<(), InferenceError>>>,
}

/// Starts the manager on the current tokio runtime.
pub fn spawn_manager(launch: WorkerLaunch) -> InferenceHandle {
    let (commands_tx, commands) = mpsc::channel(256);
    let (status, status_rx) = watch::channel(Status::Starting);
    let handle = InferenceHandle {
        commands: commands_tx.clone(),
        status: status_rx,
    };
    let manager = Manager {
        launch,
        commands_tx,
        commands,
        status,
        open: HashMap::new(),
        waiting: VecDeque::new(),
        next_id: 1,
        ready: false,
        stopping: None,
        load_error: None,
        change: None,
        change_waiter: None,
    };
    tokio::spawn(manager.run());
    handle
}

fn end(tx: &mpsc::UnboundedSender<StreamItem>, item: StreamItem) {
    let _ = tx.send(item);
}

fn cancelled() -> StreamItem {
    StreamItem::Done {
        finish: Finish::Cancelled,
        usage: Usage {
            prompt_tokens: 0,
            generated_tokens: 0,
            prompt_ms: 0,
            generate_ms: 0,
        },
    }
}

impl Manager {
    async fn run(mut self) {
        let s = self.launch.settings.clone();
        let mut backoff = Backoff::new(s.restart_initial(), s.restart_max());
        loop {
            let _ = self.status.send(Status::Starting);
            let exit = match self.start().await {
                Ok(mut child) => {
                    for warning in child.warnings() {
                        tracing::warn!(%warning, "the worker's sandbox is weaker than required");
                    }
                    let launcher = child.launcher_pid();
                    crate::reaper::register(launcher);
                    let pid = child.pid().as_raw();
                    let exit = match child.take_control().map(Link::new) {
                        Some(Ok(mut link)) => self.run_worker(&mut link, &mut backoff, pid).await,
                        Some(Err(e)) => Exit::Fault(format!("control socket: {e}")),
                        None => Exit::Fault("no control socket".into()),
                    };
                    let ended = tokio::task::spawn_blocking(move || {
                        child.kill();
                        child.wait().ok()
                    })
                    .await
                    .ok()
                    .flatten();
                    crate::reaper::unregister(launcher);
                    self.after_exit(&exit, ended);
                    self.record_exit(&exit, ended).await;
                    match exit {
                        // Dying before it was ready is a failure to load the model (a crash in
                        // llama.cpp's loader, say): report it like one.
                        Exit::Closed if !self.ready => Exit::LoadFailed(format!(
                            "the worker ended while loading the model ({})",
                            describe(ended)
                        )),
                        other => other,
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the inference worker");
                    let exit = Exit::LoadFailed(e);
                    self.record_exit(&exit, None).await;
                    exit
                }
            };
            self.ready = false;
            if matches!(exit, Exit::Replaced) {
                if let Some((model, waiter)) = self.change.take() {
                    tracing::info!(model = %model.display(), "switching the model");
                    self.launch.model = model;
                    self.change_waiter = Some(waiter);
                }
                continue;
            }
            if let Exit::LoadFailed(reason) = &exit {
                if let Some(w) = self.change_waiter.take() {
                    let _ = w.send(Err(InferenceError::Unavailable(reason.clone())));
                }
                let _ = self.status.send(Status::Failed(reason.clone()));
                self.load_error = Some(reason.clone());
                for w in self.waiting.drain(..) {
                    end(
                        &w.tx,
                        StreamItem::Failed(InferenceError::Unavailable(reason.clone())),
                    );
                }
            }
            if self.stopping.is_some() || matches!(exit, Exit::Shutdown) {
                break;
            }
            let delay = backoff.failed(Instant::now());
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "restarting the inference worker after a delay"
            );
            self.record(
                Entry::new(Action::WorkerRestart).detail("delay_ms", delay.as_millis().to_string()),
            )
            .await;
            if !self.wait(delay).await {
                break;
            }
        }
        let _ = self.status.send(Status::Stopped);
        for w in self.waiting.drain(..) {
            end(&w.tx, StreamItem::Failed(InferenceError::ShuttingDown));
        }
        if let Some((_, done)) = self.stopping.take() {
            for d in done {
                let _ = d.send(());
            }
        }
        // Answer whoever still asks, until every handle is gone.
        while let Some(cmd) = self.commands.recv().await {
            match cmd {
                Command::ChangeModel { done, .. } => {
                    let _ = done.send(Err(InferenceError::ShuttingDown));
                }
                Command::Generate { reply, .. } => {
                    let _ = reply.send(Err(InferenceError::ShuttingDown));
                }
                Command::Shutdown { done } => {
                    let _ = done.send(());
                }
                Command::Ping { pong } => {
                    let _ = pong.send(());
                }
                Command::Cancel { .. } => {}
            }
        }
    }

    async fn start(&self) -> Result<ConfinedChild, String> {
        let spec = self.launch.spec();
        let jail = self.launch.jail.clone();
        tokio::task::spawn_blocking(move || {
            let plan = spec.plan().map_err(|e| chain(&e))?;
            sandbox::spawn(&jail, &plan, Stdio::null(), Stdio::inherit()).map_err(|e| chain(&e))
        })
        .await
        .map_err(|e| format!("spawn task: {e}"))?
    }

    /// Appends to the audit trail, if there is one; a failure is logged (the journal has the
    /// event either way).
    async fn record(&self, entry: Entry) {
        if let Some(audit) = &self.launch.audit {
            if let Err(e) = audit.append(entry).await {
                tracing::error!(error = %chain(&e), "cannot record a worker event in the audit trail");
            }
        }
    }

    /// Records an unplanned end of a worker (crash, fault, failed load) in the audit trail.
    async fn record_exit(&self, exit: &Exit, ended: Option<Termination>) {
        let (kind, reason) = match exit {
            Exit::Closed if self.ready => ("crashed", describe(ended)),
            Exit::Closed => ("ended_while_loading", describe(ended)),
            Exit::Fault(why) => ("protocol_fault", why.clone()),
            Exit::LoadFailed(why) => ("load_failed", why.chars().take(300).collect()),
            Exit::Shutdown | Exit::Replaced => return,
        };
        let model = self
            .launch
            .model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.record(
            Entry::new(Action::WorkerCrash)
                .model(model)
                .detail("kind", kind)
                .detail("reason", reason),
        )
        .await;
    }

    /// Logs the end of an incarnation and fails its open requests.
    fn after_exit(&mut self, exit: &Exit, ended: Option<Termination>) {
        match exit {
            Exit::Closed => tracing::error!(termination = ?ended, "the inference worker ended"),
            Exit::Fault(why) => {
                tracing::error!(fault = %why, termination = ?ended, "inference worker fault; killed")
            }
            Exit::LoadFailed(why) => {
                tracing::error!(reason = %why, "the inference worker could not load the model")
            }
            Exit::Shutdown | Exit::Replaced => {
                tracing::info!(termination = ?ended, "the inference worker stopped")
            }
        }
        let error = if matches!(exit, Exit::Shutdown) {
            InferenceError::ShuttingDown
        } else {
            InferenceError::Restarted
        };
        for (_, o) in self.open.drain() {
            if let Some(tx) = o.tx {
                end(&tx, StreamItem::Failed(error.clone()));
            }
        }
    }

    /// Waits out the back-off while answering callers; false if phiboxd is stopping.
    async fn wait(&mut self, delay: Duration) -> bool {
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                cmd = self.commands.recv() => {
                    let Some(cmd) = cmd else { return false };
                    self.command(cmd, None).await;
                    if self.stopping.is_some() {
                        return false;
                    }
                    if self.change_waiter.is_some() {
                        // A model change cuts the back-off short.
                        return true;
                    }
                }
            }
        }
    }

    async fn run_worker(&mut self, link: &mut Link, backoff: &mut Backoff, pid: i32) -> Exit {
        let mut validator = Validator::default();
        let ready_by = tokio::time::Instant::now() + self.launch.settings.ready_timeout();
        let mut shutdown_sent = false;
        loop {
            let stop_at = self
                .stopping
                .as_ref()
                .map(|(t, _)| tokio::time::Instant::from_std(*t));
            let leaving = self.stopping.is_some() || self.change.is_some();
            if leaving && self.open.is_empty() && !shutdown_sent {
                let _ = link
                    .send(&Request::Shutdown.encode().unwrap_or_default())
                    .await;
                shutdown_sent = true;
            }
            tokio::select! {
                received = link.recv() => {
                    let event = match received {
                        Err(e) => return Exit::Fault(format!("control socket: {e}")),
                        Ok(Received::Closed) => {
                            return if self.stopping.is_some() {
                                Exit::Shutdown
                            } else if shutdown_sent && self.change.is_some() {
                                Exit::Replaced
                            } else {
                                Exit::Closed
                            };
                        }
                        Ok(Received::Oversized(n)) => return Exit::Fault(format!("frame of {n} bytes")),
                        Ok(Received::Frame(frame)) => match validator.check(frame) {
                            Ok(e) => e,
                            Err(v) => return Exit::Fault(v.to_string()),
                        },
                    };
                    if let Some(exit) = self.event(event, link, &mut validator, backoff, pid).await {
                        return exit;
                    }
                }
                cmd = self.commands.recv() => {
                    let Some(cmd) = cmd else { return Exit::Shutdown };
                    self.command(cmd, Some((link, &mut validator))).await;
                }
                _ = tokio::time::sleep_until(ready_by), if !self.ready => {
                    return Exit::Fault(format!("not ready within {:?}", self.launch.settings.ready_timeout()));
                }
                _ = tokio::time::sleep_until(stop_at.unwrap_or_else(tokio::time::Instant::now)), if stop_at.is_some() => {
                    return Exit::Shutdown;
                }
            }
        }
    }

    async fn event(
        &mut self,
        event: Event,
        link: &Link,
        validator: &mut Validator,
        backoff: &mut Backoff,
        pid: i32,
    ) -> Option<Exit> {
        match event {
            Event::Hello { worker, .. } => tracing::info!(%worker, "inference worker started"),
            Event::Ready { facts, slots } => {
                tracing::info!(
                    architecture = %facts.architecture,
                    parameters = facts.parameters,
                    quantization = %facts.quantization,
                    context = facts.context_length,
                    slots,
                    "inference worker ready"
                );
                self.ready = true;
                self.load_error = None;
                if let Some(w) = self.change_waiter.take() {
                    let _ = w.send(Ok(()));
                }
                backoff.ready(Instant::now());
                let _ = self.status.send(Status::Ready { facts, slots, pid });
                for w in std::mem::take(&mut self.waiting) {
                    self.submit(w.id, w.messages, w.sampling, w.tx, link, validator)
                        .await;
                }
            }
            Event::LoadFailed { reason } => return Some(Exit::LoadFailed(reason)),
            Event::Token { id, text } => {
                let dropped = match self.open.get(&id).and_then(|o| o.tx.as_ref()) {
                    Some(tx) => tx.send(StreamItem::Token(text)).is_err(),
                    None => false,
                };
                if dropped {
                    self.abandon(id, link).await;
                }
            }
            Event::Done { id, finish, usage } => {
                if let Some(tx) = self.open.remove(&id).and_then(|o| o.tx) {
                    end(&tx, StreamItem::Done { finish, usage });
                }
            }
            Event::Failed { id, error } => {
                if let Some(tx) = self.open.remove(&id).and_then(|o| o.tx) {
                    end(&tx, StreamItem::Failed(InferenceError::Request(error)));
                }
            }
        }
        None
    }

    /// The caller went away: stop generating for it.
    async fn abandon(&mut self, id: u64, link: &Link) {
        if let Some(o) = self.open.get_mut(&id) {
            if o.tx.take().is_some() {
                if let Ok(frame) = (Request::Cancel { id }).encode() {
                    let _ = link.send(&frame).await;
                }
            }
        }
    }

    async fn submit(
        &mut self,
        id: u64,
        messages: Vec<Message>,
        sampling: Sampling,
        tx: mpsc::UnboundedSender<StreamItem>,
        link: &Link,
        validator: &mut Validator,
    ) {
        let frame = match (Request::Generate {
            id,
            messages,
            sampling,
        })
        .encode()
        {
            Ok(f) => f,
            Err(_) => return end(&tx, StreamItem::Failed(InferenceError::TooLarge)),
        };
        validator.opened(id);
        self.open.insert(
            id,
            Open {
                tx: Some(tx.clone()),
            },
        );
        if link.send(&frame).await.is_err() {
            // The worker is gone; the socket's end-of-file will restart it.
            self.open.remove(&id);
            end(&tx, StreamItem::Failed(InferenceError::Restarted));
        }
    }

    async fn command(&mut self, cmd: Command, live: Option<(&Link, &mut Validator)>) {
        match cmd {
            Command::Generate {
                messages,
                sampling,
                reply,
            } => {
                if self.stopping.is_some() {
                    let _ = reply.send(Err(InferenceError::ShuttingDown));
                    return;
                }
                if let (Some(reason), false) = (&self.load_error, self.ready) {
                    let _ = reply.send(Err(InferenceError::Unavailable(reason.clone())));
                    return;
                }
                let id = self.next_id;
                self.next_id += 1;
                let (tx, items) = mpsc::unbounded_channel();
                let stream = TokenStream {
                    id,
                    items,
                    commands: self.commands_tx.clone(),
                    finished: false,
                };
                match live {
                    Some((link, validator)) if self.ready && self.change.is_none() => {
                        self.submit(id, messages, sampling, tx, link, validator)
                            .await;
                    }
                    _ => {
                        if self.waiting.len() >= self.launch.settings.queue as usize {
                            let _ = reply.send(Err(InferenceError::Busy));
                            return;
                        }
                        self.waiting.push_back(Waiting {
                            id,
                            messages,
                            sampling,
                            tx,
                        });
                    }
                }
                let _ = reply.send(Ok(stream));
            }
            Command::Cancel { id } => {
                if let Some(i) = self.waiting.iter().position(|w| w.id == id) {
                    if let Some(w) = self.waiting.remove(i) {
                        end(&w.tx, cancelled());
                    }
                } else if let Some((link, _)) = live {
                    if self.open.contains_key(&id) {
                        if let Ok(frame) = (Request::Cancel { id }).encode() {
                            let _ = link.send(&frame).await;
                        }
                    }
                }
            }
            Command::Shutdown { done } => {
                let grace = self.launch.settings.shutdown_grace();
                match &mut self.stopping {
                    Some((_, waiters)) => waiters.push(done),
                    None => {
                        tracing::info!(
                            grace_secs = grace.as_secs(),
                            "inference stopping: finishing in-flight generations"
                        );
                        self.stopping = Some((Instant::now() + grace, vec![done]));
                    }
                }
                for w in self.waiting.drain(..) {
                    end(&w.tx, StreamItem::Failed(InferenceError::ShuttingDown));
                }
            }
            Command::Ping { pong } => {
                let _ = pong.send(());
            }
            Command::ChangeModel { model, done } => {
                if self.stopping.is_some() {
                    let _ = done.send(Err(InferenceError::ShuttingDown));
                } else if let Some((_, old)) = self.change.replace((model, done)) {
                    // A newer request supersedes one still pending.
                    let _ = old.send(Err(InferenceError::Unavailable(
                        "superseded by another model change".into(),
                    )));
                } else if live.is_none() {
                    // No worker is running (back-off): switch at once.
                    if let Some((model, done)) = self.change.take() {
                        self.launch.model = model;
                        self.load_error = None;
                        self.change_waiter = Some(done);
                    }
                }
            }
        }
    }
}

fn describe(t: Option<Termination>) -> String {
    match t {
        Some(Termination::Exited(c)) => format!("exit code {c}"),
        Some(Termination::Signaled(s)) => format!("killed by signal {s}"),
        Some(Termination::LauncherKilled(s)) => format!("launcher killed by signal {s}"),
        None => "unknown end".into(),
    }
}
