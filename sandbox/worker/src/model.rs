//! Loading the model and describing it: facts for the supervisor, the chat template (the
//! model's own; none for a base model) and prompt tokenisation.

use std::num::NonZeroU32;
use std::path::Path;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use sandbox::protocol::{Message, ModelFacts, ParamError, RequestError, Role};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("initialising llama.cpp")]
    Backend(#[source] llama_cpp_2::LlamaCppError),
    #[error("llama.cpp could not load the model file")]
    Load(#[source] llama_cpp_2::LlamaModelLoadError),
}

/// A loaded model and what the worker needs to talk about it.
pub struct Loaded {
    pub backend: LlamaBackend,
    pub model: LlamaModel,
    /// The model's own chat template; `None` for a file without one (a base model), whose
    /// prompt is the messages' text as is.
    template: Option<LlamaChatTemplate>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("own_template", &self.template.is_some())
            .finish()
    }
}

/// Names of llama.cpp's `general.file_type` values (LLAMA_FTYPE_*).
fn quantization(file_type: Option<u32>) -> String {
    let name = match file_type {
        Some(0) => "F32",
        Some(1) => "F16",
        Some(2) => "Q4_0",
        Some(3) => "Q4_1",
        Some(7) => "Q8_0",
        Some(8) => "Q5_0",
        Some(9) => "Q5_1",
        Some(10) => "Q2_K",
        Some(11) => "Q3_K_S",
        Some(12) => "Q3_K_M",
        Some(13) => "Q3_K_L",
        Some(14) => "Q4_K_S",
        Some(15) => "Q4_K_M",
        Some(16) => "Q5_K_S",
        Some(17) => "Q5_K_M",
        Some(18) => "Q6_K",
        Some(32) => "BF16",
        Some(other) => return format!("type {other}"),
        None => "unknown",
    };
    name.to_string()
}

impl Loaded {
    /// Loads `path` (read-only, memory-mapped). `gpu_layers` > 0 offloads with the `cuda` build.
    pub fn load(path: &Path, gpu_layers: u32) -> Result<Loaded, ModelError> {
        let mut backend = LlamaBackend::init().map_err(ModelError::Backend)?;
        // llama.cpp's own log would go to stderr; it is noisy and could echo model text.
        backend.void_logs();
        let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
        let model =
            LlamaModel::load_from_file(&backend, path, &params).map_err(ModelError::Load)?;
        // A file without `tokenizer.chat_template` is usually a base (pre-trained) model:
        // wrapping its prompt in turn markers it never saw makes it echo them, so its prompt is
        // passed as plain text instead.
        let template = model.chat_template(None).ok();
        Ok(Loaded {
            backend,
            model,
            template,
        })
    }

    pub fn facts(&self) -> ModelFacts {
        let meta = |k: &str| self.model.meta_val_str(k).ok();
        ModelFacts {
            architecture: meta("general.architecture").unwrap_or_else(|| "unknown".into()),
            parameters: self.model.n_params(),
            quantization: quantization(
                meta("general.file_type").and_then(|v| v.trim().parse().ok()),
            ),
            context_length: self.model.n_ctx_train(),
            vocab_size: u32::try_from(self.model.n_vocab()).unwrap_or(0),
            chat_template: if self.template.is_some() {
                "model"
            } else {
                "none"
            }
            .into(),
        }
    }

    /// The chat rendered with the model's template and tokenised, ready to decode.
    pub fn prompt_tokens(&self, messages: &[Message]) -> Result<Vec<LlamaToken>, RequestError> {
        let chat = messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                LlamaChatMessage::new(role.into(), m.content.0.clone())
                    .map_err(|_| RequestError::Params(ParamError::Text))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let text = match &self.template {
            Some(t) => self
                .model
                .apply_chat_template(t, &chat, true)
                .map_err(|_| {
                    RequestError::Internal("the chat template could not be applied".into())
                })?,
            None => messages
                .iter()
                .map(|m| m.content.0.as_str())
                .collect::<Vec<_>>()
                .join("\n\n"),
        };
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(text.as_bytes(), true, true);
        // Templates that spell out BOS themselves would get it twice.
        if tokens.len() >= 2 && tokens[0] == vocab.bos() && tokens[1] == vocab.bos() {
            tokens.remove(0);
        }
        if tokens.is_empty() {
            return Err(RequestError::Params(ParamError::Messages));
        }
        Ok(tokens)
    }

    /// The context length to use per sequence: the requested one, at most what the model was
    /// trained for.
    pub fn context_per_sequence(&self, requested: u32) -> NonZeroU32 {
        let trained = self.model.n_ctx_train().max(1);
        let want = if requested == 0 { 2048 } else { requested };
        NonZeroU32::new(want.min(trained)).unwrap_or(NonZeroU32::MIN)
    }
}
