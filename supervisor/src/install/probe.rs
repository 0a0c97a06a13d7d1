//! The probe: a staged model is loaded in a confined worker of its own (the same sandbox as the
//! serving one, one slot, a small context) and must generate a few tokens within deadlines
//! before it may be activated. A model that crashes, hangs or fails the loader fails the probe
//! and never reaches the serving worker; the old model serves throughout.

use std::path::Path;
use std::time::Duration;

use sandbox::protocol::{Message, ModelFacts, Phi, Role, Sampling};

use crate::inference::{spawn_manager, InferenceHandle, Status, StreamItem, WorkerLaunch};

/// A fixed, PHI-free prompt.
const PROMPT: &str = "Reply with the word ready.";

/// Limits of one probe.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// Loading the model (the worker is killed after this).
    pub load_timeout: Duration,
    /// Generating `tokens` tokens.
    pub generate_timeout: Duration,
    pub tokens: u32,
    /// KV cells of the probe's one slot.
    pub context: u32,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            load_timeout: Duration::from_secs(300),
            generate_timeout: Duration::from_secs(120),
            tokens: 4,
            context: 256,
        }
    }
}

/// Why a probe failed (the text is for the admin and the audit detail: no PHI in it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("the model did not load: {0}")]
    Load(String),
    #[error("the model did not load within {0:?}")]
    LoadTimeout(Duration),
    #[error("the model loaded but did not generate: {0}")]
    Generate(String),
    #[error("the model did not generate {tokens} tokens within {limit:?}")]
    GenerateTimeout { tokens: u32, limit: Duration },
}

async fn load(h: &InferenceHandle, limit: Duration) -> Result<ModelFacts, ProbeError> {
    let waited = tokio::time::timeout(
        limit,
        h.wait_for(|s| matches!(s, Status::Ready { .. } | Status::Failed(_))),
    )
    .await;
    match waited {
        Ok(Status::Ready { facts, .. }) => Ok(facts),
        Ok(Status::Failed(why)) => Err(ProbeError::Load(why)),
        Ok(other) => Err(ProbeError::Load(format!("{other:?}"))),
        Err(_) => Err(ProbeError::LoadTimeout(limit)),
    }
}

async fn generate(h: &InferenceHandle, s: &ProbeSettings) -> Result<(), ProbeError> {
    let messages = vec![Message {
        role: Role::User,
        content: Phi(PROMPT.into()),
    }];
    let sampling = Sampling {
        max_tokens: s.tokens,
        ignore_eos: true,
        ..Sampling::default()
    };
    let run = async {
        let mut stream = h
            .generate(messages, sampling)
            .await
            .map_err(|e| ProbeError::Generate(e.to_string()))?;
        loop {
            match stream.next().await {
                Some(StreamItem::Token(_)) => {}
                Some(StreamItem::Done { usage, .. }) if usage.generated_tokens >= 1 => {
                    return Ok(())
                }
                Some(StreamItem::Done { .. }) => {
                    return Err(ProbeError::Generate("no tokens".into()))
                }
                Some(StreamItem::Failed(e)) => return Err(ProbeError::Generate(e.to_string())),
                None => return Err(ProbeError::Generate("the stream ended".into())),
            }
        }
    };
    tokio::time::timeout(s.generate_timeout, run)
        .await
        .unwrap_or(Err(ProbeError::GenerateTimeout {
            tokens: s.tokens,
            limit: s.generate_timeout,
        }))
}

/// Loads `model` in a new confined worker started like `serving` and generates a few tokens;
/// the worker is stopped before this returns.
pub async fn probe(
    serving: &WorkerLaunch,
    model: &Path,
    s: &ProbeSettings,
) -> Result<ModelFacts, ProbeError> {
    let mut launch = serving.clone();
    launch.model = model.to_owned();
    // Crashes of the probe are the probe's result, recorded with the bundle's refusal.
    launch.audit = None;
    launch.settings.slots = 1;
    launch.settings.context = s.context;
    launch.settings.ready_timeout_secs = s.load_timeout.as_secs().max(1);
    launch.settings.shutdown_grace_secs = 0;
    let h = spawn_manager(launch);
    let result = async {
        let facts = load(&h, s.load_timeout + Duration::from_secs(5)).await?;
        generate(&h, s).await?;
        Ok(facts)
    }
    .await;
    h.shutdown().await;
    result
}
