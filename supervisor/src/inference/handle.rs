//! What callers (the web UI, the dev self-test) hold: a cheap, cloneable handle to ask for
//! generations, each answered with a stream of tokens that ends with a final item. Dropping a
//! stream cancels its generation.

use sandbox::protocol::{Finish, Message, ModelFacts, Phi, RequestError, Sampling, Usage};
use tokio::sync::{mpsc, oneshot, watch};

/// Why a generation did not complete. Messages are for the user; none carries prompt text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferenceError {
    #[error("inference restarted, please retry")]
    Restarted,
    #[error("inference is unavailable: {0}")]
    Unavailable(String),
    #[error("phibox is shutting down")]
    ShuttingDown,
    #[error("too many requests are waiting; please retry shortly")]
    Busy,
    #[error("the request is too large")]
    TooLarge,
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// One item of a token stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    Token(Phi),
    /// The last item of a successful generation.
    Done {
        finish: Finish,
        usage: Usage,
    },
    /// The last item of a failed one.
    Failed(InferenceError),
}

/// The worker's state, as callers (and the status page) see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Starting,
    Ready {
        facts: ModelFacts,
        slots: u32,
        /// The worker's pid on the host.
        pid: i32,
    },
    /// The last start failed; another attempt follows after the back-off.
    Failed(String),
    Stopped,
}

#[derive(Debug)]
pub(crate) enum Command {
    Generate {
        messages: Vec<Message>,
        sampling: Sampling,
        reply: oneshot::Sender<Result<TokenStream, InferenceError>>,
    },
    Cancel {
        id: u64,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    Ping {
        pong: oneshot::Sender<()>,
    },
    ChangeModel {
        model: std::path::PathBuf,
        done: oneshot::Sender<Result<(), InferenceError>>,
    },
}

/// A handle to the inference manager.
#[derive(Debug, Clone)]
pub struct InferenceHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) status: watch::Receiver<Status>,
}

/// The tokens of one generation.
#[derive(Debug)]
pub struct TokenStream {
    pub(crate) id: u64,
    pub(crate) items: mpsc::UnboundedReceiver<StreamItem>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) finished: bool,
}

impl TokenStream {
    /// The next item; `None` after the final one.
    pub async fn next(&mut self) -> Option<StreamItem> {
        if self.finished {
            return None;
        }
        let item = self
            .items
            .recv()
            .await
            .unwrap_or(StreamItem::Failed(InferenceError::Restarted));
        if matches!(item, StreamItem::Done { .. } | StreamItem::Failed(_)) {
            self.finished = true;
        }
        Some(item)
    }

    /// Stops the generation; a final `Done` with `Cancelled` follows unless it already ended.
    pub async fn cancel(&self) {
        let _ = self.commands.send(Command::Cancel { id: self.id }).await;
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.commands.try_send(Command::Cancel { id: self.id });
        }
    }
}

impl InferenceHandle {
    /// Starts a generation.
    pub async fn generate(
        &self,
        messages: Vec<Message>,
        sampling: Sampling,
    ) -> Result<TokenStream, InferenceError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Generate {
                messages,
                sampling,
                reply,
            })
            .await
            .map_err(|_| InferenceError::ShuttingDown)?;
        rx.await.map_err(|_| InferenceError::ShuttingDown)?
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `pred`, returning it.
    pub async fn wait_for(&self, pred: impl Fn(&Status) -> bool) -> Status {
        let mut rx = self.status.clone();
        let result = rx.wait_for(|s| pred(s)).await;
        match result {
            Ok(s) => s.clone(),
            Err(_) => Status::Stopped,
        }
    }

    /// Whether the manager loop is alive and answering (for the systemd watchdog).
    pub async fn ping(&self) -> bool {
        let (pong, rx) = oneshot::channel();
        if self.commands.send(Command::Ping { pong }).await.is_err() {
            return false;
        }
        rx.await.is_ok()
    }

    /// Switches to another model: requests that arrive meanwhile wait, in-flight generations
    /// finish on the old model, then a worker on the new model starts. Returns once it is ready
    /// (or with the reason it could not load).
    pub async fn change_model(&self, model: std::path::PathBuf) -> Result<(), InferenceError> {
        let (done, rx) = oneshot::channel();
        self.commands
            .send(Command::ChangeModel { model, done })
            .await
            .map_err(|_| InferenceError::ShuttingDown)?;
        rx.await.map_err(|_| InferenceError::ShuttingDown)?
    }

    /// Stops accepting requests, lets in-flight ones finish up to the grace period, stops the
    /// worker; returns when it is gone.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
    }
}
