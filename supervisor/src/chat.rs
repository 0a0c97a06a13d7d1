//! One chat turn as the product runs it (DESIGN.md, "Data flow of one chat request"): the
//! `chat_request` record (keyed hash and length of the user's text, never the text) is durable
//! before inference starts; the tokens stream back; the `chat_response_*` record (completed,
//! cancelled or failed, with the response's keyed hash and length) is durable before the final
//! item reaches the caller. If the trail cannot record, nothing is generated (fail closed).
//! The web UI drives chats through this; so does the dev self-test. Where a transcript store
//! is attached, each signed-in turn (user message and response, exactly as hashed) is stored
//! after its response record.

use sandbox::protocol::{Finish, Message, Phi, Role, Sampling};

use crate::audit::{Action, Actor, AuditError, AuditLog, Entry};
use crate::inference::{InferenceError, InferenceHandle, StreamItem, TokenStream};
use crate::store::transcripts::NewTurn;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("the audit trail cannot record this request, so it was not run")]
    Audit(#[source] AuditError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("a chat needs a user message last")]
    NoUserMessage,
    #[error("the conversation could not be stored")]
    Store(#[source] crate::store::StoreError),
}

/// The serving model's name as audit records show it; the installer replaces it when a bundle
/// is activated.
#[derive(Debug, Clone, Default)]
pub struct ModelLabel(std::sync::Arc<std::sync::RwLock<String>>);

impl ModelLabel {
    pub fn new(name: impl Into<String>) -> ModelLabel {
        ModelLabel(std::sync::Arc::new(std::sync::RwLock::new(name.into())))
    }

    pub fn get(&self) -> String {
        self.0.read().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn set(&self, name: impl Into<String>) {
        if let Ok(mut m) = self.0.write() {
            *m = name.into();
        }
    }
}

/// What chats go through: the inference handle and the audit trail.
#[derive(Debug, Clone)]
pub struct Chat {
    inference: InferenceHandle,
    audit: AuditLog,
    /// The model's name in audit records.
    model: ModelLabel,
    /// Where turns are kept for investigations (none: not kept).
    transcripts: Option<crate::store::Store>,
}

/// The text the request record hashes: the user's message of this turn.
pub fn turn_text(messages: &[Message]) -> Option<&Phi> {
    messages
        .last()
        .filter(|m| m.role == Role::User)
        .map(|m| &m.content)
}

impl Chat {
    pub fn new(inference: InferenceHandle, audit: AuditLog, model: impl Into<String>) -> Chat {
        Chat {
            inference,
            audit,
            model: ModelLabel::new(model),
            transcripts: None,
        }
    }

    /// Keeps every signed-in turn in `store`.
    pub fn with_transcripts(mut self, store: crate::store::Store) -> Chat {
        self.transcripts = Some(store);
        self
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The model name shown in this chat's audit records.
    pub fn model_label(&self) -> ModelLabel {
        self.model.clone()
    }

    /// Records the request durably, then starts the generation. `template` names the task in
    /// the transcript.
    pub async fn start(
        &self,
        actor: &Actor,
        template: &str,
        messages: Vec<Message>,
        sampling: Sampling,
    ) -> Result<ChatStream, ChatError> {
        let text = turn_text(&messages).ok_or(ChatError::NoUserMessage)?;
        let started = self.audit.now();
        let model = self.model.get();
        let request = Entry::new(Action::ChatRequest)
            .actor(actor)
            .model(model.clone())
            .prompt(self.audit.hash_key(), text)
            .detail("messages", messages.len().to_string())
            .detail("max_tokens", sampling.max_tokens.to_string());
        let seq = self
            .audit
            .append(request)
            .await
            .map_err(ChatError::Audit)?
            .seq;
        let keep = match (&self.transcripts, &actor.session_id, &actor.user_id) {
            (Some(store), Some(session_id), Some(user_id)) => Some(Keep {
                store: store.clone(),
                turn: NewTurn {
                    session_id: session_id.clone(),
                    user_id: user_id.clone(),
                    started,
                    template: template.to_owned(),
                    user_text: text.clone(),
                    response: Phi(String::new()),
                    finish: String::new(),
                    request_seq: seq,
                },
            }),
            _ => None,
        };
        let respond = Responder {
            audit: self.audit.clone(),
            actor: actor.clone(),
            model,
            request_seq: seq,
            keep,
        };
        match self.inference.generate(messages, sampling).await {
            Ok(tokens) => Ok(ChatStream {
                tokens,
                text: Phi(String::new()),
                respond: Some(respond),
            }),
            Err(e) => {
                respond.failed(&e, &Phi(String::new())).await;
                Err(e.into())
            }
        }
    }
}

/// Where and what to store of one turn.
#[derive(Debug)]
struct Keep {
    store: crate::store::Store,
    turn: NewTurn,
}

/// Writes the response record of one request (and then its transcript).
#[derive(Debug)]
struct Responder {
    audit: AuditLog,
    actor: Actor,
    model: String,
    request_seq: u64,
    keep: Option<Keep>,
}

impl Responder {
    fn entry(&self, action: Action, text: &Phi) -> Entry {
        Entry::new(action)
            .actor(&self.actor)
            .model(self.model.clone())
            .response(self.audit.hash_key(), text)
            .detail("request_seq", self.request_seq.to_string())
    }

    /// Stores the transcript of the turn, if it is kept.
    async fn keep(&self, finish: &str, text: &Phi) -> Result<(), crate::store::StoreError> {
        let Some(k) = &self.keep else {
            return Ok(());
        };
        let mut turn = k.turn.clone();
        turn.response = text.clone();
        turn.finish = finish.to_owned();
        k.store.save_turn(turn).await.map(|_| ())
    }

    async fn done(&self, finish: Finish, generated: u32, text: &Phi) -> Result<(), ChatError> {
        let action = if finish == Finish::Cancelled {
            Action::ChatResponseCancelled
        } else {
            Action::ChatResponseCompleted
        };
        let entry = self
            .entry(action, text)
            .detail("finish", finish.name())
            .detail("generated_tokens", generated.to_string());
        self.audit.append(entry).await.map_err(ChatError::Audit)?;
        self.keep(finish.name(), text)
            .await
            .map_err(ChatError::Store)
    }

    async fn failed(&self, error: &InferenceError, text: &Phi) {
        let entry = self
            .entry(Action::ChatResponseFailed, text)
            .detail("error", error_kind(error));
        if let Err(e) = self.audit.append(entry).await {
            tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot record a failed chat response");
        }
        if let Err(e) = self.keep("failed", text).await {
            tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot store a failed chat turn");
        }
    }
}

/// A PHI-free name for an inference error.
fn error_kind(e: &InferenceError) -> &'static str {
    match e {
        InferenceError::Restarted => "restarted",
        InferenceError::Unavailable(_) => "unavailable",
        InferenceError::ShuttingDown => "shutting_down",
        InferenceError::Busy => "busy",
        InferenceError::TooLarge => "too_large",
        InferenceError::Request(_) => "request",
    }
}

/// The tokens of one chat turn. Dropping it early cancels the generation and still records
/// the response as cancelled.
#[derive(Debug)]
pub struct ChatStream {
    tokens: TokenStream,
    /// The response so far: hashed into the response record, then dropped.
    text: Phi,
    respond: Option<Responder>,
}

impl ChatStream {
    /// The next item; the final one (`Done` or `Failed`) comes only after the response record
    /// is durable. If it cannot be recorded, the caller gets `Failed` instead of `Done`.
    pub async fn next(&mut self) -> Option<Result<StreamItem, ChatError>> {
        let item = self.tokens.next().await?;
        match item {
            StreamItem::Token(t) => {
                self.text.0.push_str(&t.0);
                Some(Ok(StreamItem::Token(t)))
            }
            StreamItem::Done { finish, usage } => {
                let respond = self.respond.take()?;
                match respond
                    .done(finish, usage.generated_tokens, &self.text)
                    .await
                {
                    Ok(()) => Some(Ok(StreamItem::Done { finish, usage })),
                    Err(e) => Some(Err(e)),
                }
            }
            StreamItem::Failed(e) => {
                if let Some(respond) = self.respond.take() {
                    respond.failed(&e, &self.text).await;
                }
                Some(Ok(StreamItem::Failed(e)))
            }
        }
    }

    /// Asks the worker to stop; the stream then ends with `Done { finish: Cancelled }`.
    pub async fn cancel(&self) {
        self.tokens.cancel().await;
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        let Some(respond) = self.respond.take() else {
            return;
        };
        let text = std::mem::replace(&mut self.text, Phi(String::new()));
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = respond.done(Finish::Cancelled, 0, &text).await {
                        tracing::error!(error = %sandbox::error_chain::chain(&e), "cannot record an abandoned chat response");
                    }
                });
            }
            Err(_) => tracing::error!(
                "a chat stream was dropped outside the runtime; its response record is missing"
            ),
        }
    }
}
