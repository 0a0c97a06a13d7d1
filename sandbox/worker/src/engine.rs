//! Continuous batching: up to `slots` requests share every decode step. Each step's batch holds
//! the next token of every generating sequence plus chunks of prompts still being read, so a new
//! prompt joins running generations at once; a finished sequence frees its KV cells at once.
//! Requests beyond the slots wait in a bounded queue.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use sandbox::protocol::{
    Event, Finish, Message, ParamError, Request, RequestError, Sampling, Usage, MAX_MESSAGES,
};

use crate::greedy::argmax;
use crate::io::{Incoming, IoError, Outbox};
use crate::model::Loaded;
use crate::text::TextStream;

/// Engine settings (from the worker's command line).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub slots: u32,
    /// KV cells per sequence (prompt + reply).
    pub context: NonZeroU32,
    /// Tokens per decode step.
    pub batch: u32,
    pub threads: i32,
    pub max_tokens: u32,
    /// Requests waiting for a slot, at most.
    pub queue: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("creating the llama.cpp context")]
    Context(#[source] llama_cpp_2::LlamaContextLoadError),
    #[error("warm-up decode failed")]
    Warmup(#[source] llama_cpp_2::DecodeError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{0}")]
    Closed(String),
}

struct Pending {
    id: u64,
    tokens: Vec<LlamaToken>,
    sampling: Sampling,
    arrived: Instant,
}

struct Slot {
    id: u64,
    seq: i32,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens already in the KV cache.
    prefilled: usize,
    /// Position of the next token to decode.
    pos: i32,
    /// The sampled token to feed in the next step.
    next: Option<LlamaToken>,
    /// Index in the current batch whose logits to sample, if any.
    logits_at: Option<i32>,
    /// `None`: greedy, [`argmax`] over the logits.
    sampler: Option<LlamaSampler>,
    text: TextStream,
    generated: u32,
    max_tokens: u32,
    ignore_eos: bool,
    cancelled: bool,
    arrived: Instant,
    first_token_at: Option<Instant>,
    /// Released text not yet sent, and when text was last sent (see [`STREAM_INTERVAL`]).
    unsent: String,
    sent_at: Option<Instant>,
}

/// Text is streamed at most this often per request (the first piece at once): one frame per
/// token would wake the supervisor for every token, stealing CPU time from the decode threads
/// on a small machine, while a reader cannot tell 40 ms apart.
const STREAM_INTERVAL: Duration = Duration::from_millis(40);
/// Held text is sent regardless of [`STREAM_INTERVAL`] beyond this size (frames stay small).
const MAX_UNSENT: usize = 4096;

fn sampler(s: &Sampling) -> Option<LlamaSampler> {
    if s.temperature == 0.0 {
        return None;
    }
    Some(LlamaSampler::chain_simple([
        LlamaSampler::top_k(s.top_k as i32),
        LlamaSampler::top_p(s.top_p, 1),
        LlamaSampler::temp(s.temperature),
        LlamaSampler::dist(s.seed),
    ]))
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// The serving loop.
pub struct Engine<'m> {
    loaded: &'m Loaded,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    cfg: EngineConfig,
    slots: Vec<Option<Slot>>,
    queue: VecDeque<Pending>,
    out: Outbox,
    shutting_down: bool,
}

impl<'m> Engine<'m> {
    pub fn new(loaded: &'m Loaded, cfg: EngineConfig, out: Outbox) -> Result<Self, EngineError> {
        let total = cfg.context.get().saturating_mul(cfg.slots);
        let batch = cfg.batch.max(cfg.slots);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(total))
            .with_n_batch(batch)
            .with_n_ubatch(batch)
            .with_n_seq_max(cfg.slots)
            .with_kv_unified(false)
            .with_n_threads(cfg.threads)
            .with_n_threads_batch(cfg.threads);
        let ctx = loaded
            .model
            .new_context(&loaded.backend, params)
            .map_err(EngineError::Context)?;
        Ok(Engine {
            loaded,
            ctx,
            batch: LlamaBatch::new(batch as usize, 1),
            slots: (0..cfg.slots).map(|_| None).collect(),
            queue: VecDeque::new(),
            cfg,
            out,
            shutting_down: false,
        })
    }

    /// Decodes one token and forgets it: starts the thread pool and touches every code path
    /// that may read files, before the serve-stage filter ends file access.
    pub fn warm_up(&mut self) -> Result<(), EngineError> {
        let bos = self.loaded.model.vocab().bos();
        self.batch.clear();
        self.batch
            .add(bos, 0, &[0], true)
            .expect("batch has room for one token");
        self.ctx
            .decode(&mut self.batch)
            .map_err(EngineError::Warmup)?;
        let _ = self.ctx.clear_kv_cache_seq(Some(0), None, None);
        self.batch.clear();
        Ok(())
    }

    fn busy(&self) -> bool {
        !self.queue.is_empty() || self.slots.iter().any(Option::is_some)
    }

    fn known(&self, id: u64) -> bool {
        self.queue.iter().any(|p| p.id == id) || self.slots.iter().flatten().any(|s| s.id == id)
    }

    fn fail(&self, id: u64, error: RequestError) -> Result<(), EngineError> {
        Ok(self.out.send(&Event::Failed { id, error })?)
    }

    fn admit(
        &mut self,
        id: u64,
        messages: &[Message],
        sampling: Sampling,
    ) -> Result<(), EngineError> {
        if self.known(id) {
            return self.fail(id, RequestError::DuplicateId(id));
        }
        if self.shutting_down {
            return self.fail(
                id,
                RequestError::Internal("the worker is shutting down".into()),
            );
        }
        if messages.is_empty() || messages.len() > MAX_MESSAGES {
            return self.fail(id, RequestError::Params(ParamError::Messages));
        }
        if let Err(e) = sampling.validate(self.cfg.max_tokens) {
            return self.fail(id, RequestError::Params(e));
        }
        let tokens = match self.loaded.prompt_tokens(messages) {
            Ok(t) => t,
            Err(e) => return self.fail(id, e),
        };
        let context = self.cfg.context.get();
        // The prompt must leave room for at least one generated token.
        if tokens.len() as u64 >= u64::from(context) {
            let tokens = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
            return self.fail(id, RequestError::PromptTooLong { tokens, context });
        }
        if self.queue.len() >= self.cfg.queue {
            return self.fail(
                id,
                RequestError::Busy {
                    slots: self.cfg.slots,
                },
            );
        }
        self.queue.push_back(Pending {
            id,
            tokens,
            sampling,
            arrived: Instant::now(),
        });
        Ok(())
    }

    fn cancel(&mut self, id: u64) -> Result<(), EngineError> {
        if let Some(i) = self.queue.iter().position(|p| p.id == id) {
            self.queue.remove(i);
            let usage = Usage {
                prompt_tokens: 0,
                generated_tokens: 0,
                prompt_ms: 0,
                generate_ms: 0,
            };
            self.out.send(&Event::Done {
                id,
                finish: Finish::Cancelled,
                usage,
            })?;
        } else if let Some(slot) = self.slots.iter_mut().flatten().find(|s| s.id == id) {
            slot.cancelled = true;
        }
        Ok(())
    }

    fn handle(&mut self, req: Request) -> Result<(), EngineError> {
        match req {
            Request::Generate {
                id,
                messages,
                sampling,
            } => self.admit(id, &messages, sampling),
            Request::Cancel { id } => self.cancel(id),
            Request::Shutdown => {
                self.shutting_down = true;
                Ok(())
            }
        }
    }

    /// Serves until shutdown (after in-flight requests finish) or until the supervisor leaves.
    pub fn run(&mut self, inbox: &Receiver<Incoming>) -> Result<(), EngineError> {
        loop {
            // Block while idle; otherwise only drain what has arrived.
            if !self.busy() {
                if self.shutting_down {
                    return Ok(());
                }
                match inbox.recv_timeout(Duration::from_secs(3600)) {
                    Ok(Incoming::Request(r)) => self.handle(r)?,
                    Ok(Incoming::Closed(why)) => return Err(EngineError::Closed(why)),
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                    Err(RecvTimeoutError::Timeout) => continue,
                }
            }
            while let Ok(incoming) = inbox.try_recv() {
                match incoming {
                    Incoming::Request(r) => self.handle(r)?,
                    Incoming::Closed(why) => return Err(EngineError::Closed(why)),
                }
            }
            self.fill_slots();
            self.step()?;
        }
    }

    fn fill_slots(&mut self) {
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let Some(p) = self.queue.pop_front() else {
                return;
            };
            *slot = Some(Slot {
                id: p.id,
                seq: seq as i32,
                prompt: p.tokens,
                prefilled: 0,
                pos: 0,
                next: None,
                logits_at: None,
                sampler: sampler(&p.sampling),
                text: TextStream::new(p.sampling.stop.clone()),
                generated: 0,
                max_tokens: p.sampling.max_tokens,
                ignore_eos: p.sampling.ignore_eos,
                cancelled: false,
                arrived: p.arrived,
                first_token_at: None,
                unsent: String::new(),
                sent_at: None,
            });
        }
    }

    /// Builds and decodes one batch, then samples for every sequence that got logits.
    fn step(&mut self) -> Result<(), EngineError> {
        // Cancelled sequences end before they take any room in the batch.
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|s| s.cancelled) {
                self.finish(i, Finish::Cancelled)?;
            }
        }
        self.batch.clear();
        let capacity = self.cfg.batch.max(self.cfg.slots) as i32;
        // Generating sequences first: one token each.
        for slot in self.slots.iter_mut().flatten() {
            slot.logits_at = None;
            if let Some(token) = slot.next.take() {
                self.batch
                    .add(token, slot.pos, &[slot.seq], true)
                    .expect("the batch holds a token per slot");
                slot.pos += 1;
                slot.logits_at = Some(self.batch.n_tokens() - 1);
            }
        }
        // Then prompt chunks in the room left.
        for slot in self.slots.iter_mut().flatten() {
            while slot.prefilled < slot.prompt.len() && self.batch.n_tokens() < capacity {
                let last = slot.prefilled + 1 == slot.prompt.len();
                self.batch
                    .add(slot.prompt[slot.prefilled], slot.pos, &[slot.seq], last)
                    .expect("room was checked");
                slot.prefilled += 1;
                slot.pos += 1;
                if last {
                    slot.logits_at = Some(self.batch.n_tokens() - 1);
                }
            }
        }
        if self.batch.n_tokens() == 0 {
            return Ok(());
        }
        if self.ctx.decode(&mut self.batch).is_err() {
            for i in 0..self.slots.len() {
                if let Some(slot) = self.slots[i].take() {
                    let _ = self
                        .ctx
                        .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                    self.fail(
                        slot.id,
                        RequestError::Internal("llama.cpp could not decode the batch".into()),
                    )?;
                }
            }
            return Ok(());
        }
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            let Some(at) = slot.logits_at else {
                continue;
            };
            let token = match slot.sampler.as_mut() {
                Some(s) => s.sample(&self.ctx, at),
                None => LlamaToken(argmax(self.ctx.get_logits_ith(at))),
            };
            slot.first_token_at.get_or_insert(now);
            let vocab = self.loaded.model.vocab();
            if vocab.is_eog(token) && !slot.ignore_eos {
                self.finish(i, Finish::EndOfText)?;
                continue;
            }
            slot.generated += 1;
            let piece = vocab.token_to_piece(token, false, None);
            let step = slot.text.push(&piece);
            slot.unsent.push_str(&step.text);
            let full = slot.pos as u32 + 1 >= self.cfg.context.get();
            let done_by_length = slot.generated >= slot.max_tokens || full;
            let due = slot
                .sent_at
                .is_none_or(|t| now.duration_since(t) >= STREAM_INTERVAL)
                || slot.unsent.len() >= MAX_UNSENT;
            if due && !slot.unsent.is_empty() {
                slot.sent_at = Some(now);
                let text = std::mem::take(&mut slot.unsent);
                self.out.send(&Event::Token {
                    id: slot.id,
                    text: sandbox::protocol::Phi(text),
                })?;
            }
            if step.stopped {
                self.finish(i, Finish::StopString)?;
            } else if done_by_length {
                self.finish(i, Finish::Length)?;
            } else if let Some(slot) = self.slots[i].as_mut() {
                slot.next = Some(token);
            }
        }
        Ok(())
    }

    /// Ends slot `i`: flushes held text, reports usage, frees its KV cells.
    fn finish(&mut self, i: usize, finish: Finish) -> Result<(), EngineError> {
        let Some(mut slot) = self.slots[i].take() else {
            return Ok(());
        };
        let _ = self
            .ctx
            .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
        // Text released before the end is sent even when cancelled; text held back as a
        // possible stop string or incomplete UTF-8 only when the sequence ended otherwise.
        let mut rest = std::mem::take(&mut slot.unsent);
        if finish != Finish::StopString && finish != Finish::Cancelled {
            rest.push_str(&slot.text.finish());
        }
        if !rest.is_empty() {
            self.out.send(&Event::Token {
                id: slot.id,
                text: sandbox::protocol::Phi(rest),
            })?;
        }
        let now = Instant::now();
        let first = slot.first_token_at.unwrap_or(now);
        let usage = Usage {
            prompt_tokens: u32::try_from(slot.prompt.len()).unwrap_or(u32::MAX),
            generated_tokens: slot.generated,
            prompt_ms: ms(first.duration_since(slot.arrived)),
            generate_ms: ms(now.duration_since(first)),
        };
        self.out.send(&Event::Done {
            id: slot.id,
            finish,
            usage,
        })?;
        Ok(())
    }
}
