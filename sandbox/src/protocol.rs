//! The supervisor ↔ worker protocol: versioned, size-bounded frames over the inherited
//! `SOCK_SEQPACKET` socket (one frame per packet, so the kernel keeps the boundaries).
//!
//! A frame is a two-byte header (`b'P'`, [`VERSION`]) and a postcard-encoded [`Request`]
//! (supervisor → worker) or [`Event`] (worker → supervisor). postcard validates UTF-8 and never
//! allocates more than the frame holds, which matters because the supervisor decodes bytes from
//! a process it does not trust; [`Validator`] then checks the sequence (hello first, model facts
//! next, events only for requests that are open). Text that may hold PHI travels as [`Phi`],
//! whose `Debug` and `Display` print only its length.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Protocol version; both sides must speak the same one.
pub const VERSION: u8 = 1;
const MAGIC: u8 = b'P';
/// The largest frame either side sends or accepts.
pub const MAX_FRAME: usize = 128 * 1024;
/// Bounds on what a request may ask for.
pub const MAX_STOP_STRINGS: usize = 8;
pub const MAX_STOP_LEN: usize = 64;
pub const MAX_MESSAGES: usize = 64;

/// Text that may contain PHI: prompts, generated text. Never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Phi(pub String);

impl std::fmt::Debug for Phi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

impl std::fmt::Display for Phi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Phi,
}

/// Sampling settings; [`Sampling::validate`] keeps them within bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub seed: u32,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    /// Keep generating past end-of-text tokens (fixed-length benchmarks and tests).
    pub ignore_eos: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            seed: 0,
            max_tokens: 256,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Why a request's parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ParamError {
    #[error("temperature must be between 0 and 2")]
    Temperature,
    #[error("top_k must be between 1 and 1000")]
    TopK,
    #[error("top_p must be in (0, 1]")]
    TopP,
    #[error("max_tokens must be between 1 and {max}")]
    MaxTokens { max: u32 },
    #[error("at most {MAX_STOP_STRINGS} stop strings of 1 to {MAX_STOP_LEN} bytes")]
    Stop,
    #[error("a prompt needs 1 to {MAX_MESSAGES} messages")]
    Messages,
    #[error("prompt text must not contain NUL characters")]
    Text,
}

impl Sampling {
    /// Checks every field; `max_tokens_limit` is the worker's own cap.
    pub fn validate(&self, max_tokens_limit: u32) -> Result<(), ParamError> {
        if !(0.0..=2.0).contains(&self.temperature) {
            return Err(ParamError::Temperature);
        }
        if !(1..=1000).contains(&self.top_k) {
            return Err(ParamError::TopK);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ParamError::TopP);
        }
        if self.max_tokens == 0 || self.max_tokens > max_tokens_limit {
            return Err(ParamError::MaxTokens {
                max: max_tokens_limit,
            });
        }
        if self.stop.len() > MAX_STOP_STRINGS
            || self
                .stop
                .iter()
                .any(|s| s.is_empty() || s.len() > MAX_STOP_LEN)
        {
            return Err(ParamError::Stop);
        }
        Ok(())
    }
}

/// Supervisor → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Start generating for a chat; the worker applies the model's chat template.
    Generate {
        id: u64,
        messages: Vec<Message>,
        sampling: Sampling,
    },
    /// Stop generating for `id` (a `Done` with `Cancelled` follows, unless it already ended).
    Cancel { id: u64 },
    /// Finish open requests and exit.
    Shutdown,
}

/// What the model is, as reported by the worker after loading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFacts {
    pub architecture: String,
    pub parameters: u64,
    pub quantization: String,
    pub context_length: u32,
    pub vocab_size: u32,
    /// Which chat template is applied: `model` (the file's own) or `none` (a file without
    /// one, usually a base model: the messages' text is the prompt).
    pub chat_template: String,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Finish {
    /// The model produced its end-of-generation token.
    EndOfText,
    /// `max_tokens` reached.
    Length,
    /// A stop string appeared (it is not sent).
    StopString,
    Cancelled,
}

impl Finish {
    /// The name used in audit records and the web UI's events.
    pub fn name(self) -> &'static str {
        match self {
            Finish::EndOfText => "end_of_text",
            Finish::Length => "length",
            Finish::StopString => "stop_string",
            Finish::Cancelled => "cancelled",
        }
    }
}

/// Counts and timings of one finished request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub prompt_ms: u32,
    pub generate_ms: u32,
}

/// Why the worker refused or failed a request. Carries no prompt text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RequestError {
    #[error("the prompt has {tokens} tokens; this model's context holds {context} (including the reply)")]
    PromptTooLong { tokens: u32, context: u32 },
    #[error("invalid parameters: {0}")]
    Params(ParamError),
    #[error("all {slots} inference slots are busy")]
    Busy { slots: u32 },
    #[error("request id {0} is already in use")]
    DuplicateId(u64),
    #[error("inference failed: {0}")]
    Internal(String),
}

/// Worker → supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// First frame: the worker's protocol version and build.
    Hello {
        version: u8,
        worker: String,
    },
    /// The model is loaded; `slots` requests can run at once.
    Ready {
        facts: ModelFacts,
        slots: u32,
    },
    /// Loading failed (no request is open); the worker exits after sending it.
    LoadFailed {
        reason: String,
    },
    /// A piece of generated text (always complete UTF-8).
    Token {
        id: u64,
        text: Phi,
    },
    Done {
        id: u64,
        finish: Finish,
        usage: Usage,
    },
    Failed {
        id: u64,
        error: RequestError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than {MAX_FRAME}")]
    TooLarge(usize),
    #[error("frame too short")]
    Short,
    #[error("frame does not start with the protocol magic")]
    Magic,
    #[error("protocol version {0} is not {VERSION}")]
    Version(u8),
    #[error("frame body does not decode: {0}")]
    Body(String),
    #[error("{0} bytes after the frame body")]
    Trailing(usize),
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![MAGIC, VERSION];
    let body = postcard::to_stdvec(value).map_err(|e| FrameError::Body(e.to_string()))?;
    out.extend_from_slice(&body);
    if out.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(out.len()));
    }
    Ok(out)
}

fn decode<'a, T: Deserialize<'a>>(frame: &'a [u8]) -> Result<T, FrameError> {
    if frame.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(frame.len()));
    }
    let [magic, version, body @ ..] = frame else {
        return Err(FrameError::Short);
    };
    if *magic != MAGIC {
        return Err(FrameError::Magic);
    }
    if *version != VERSION {
        return Err(FrameError::Version(*version));
    }
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| FrameError::Body(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(value)
}

impl Request {
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        encode(self)
    }
    pub fn decode(frame: &[u8]) -> Result<Request, FrameError> {
        decode(frame)
    }
}

impl Event {
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        encode(self)
    }
    pub fn decode(frame: &[u8]) -> Result<Event, FrameError> {
        decode(frame)
    }
}

/// A protocol violation by the worker: the supervisor kills and restarts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("expected {expected}, got {got}")]
    Order {
        expected: &'static str,
        got: &'static str,
    },
    #[error("event for request {0}, which is not open")]
    UnknownRequest(u64),
    #[error("the worker speaks protocol version {0}")]
    Version(u8),
}

fn name(e: &Event) -> &'static str {
    match e {
        Event::Hello { .. } => "hello",
        Event::Ready { .. } => "ready",
        Event::LoadFailed { .. } => "load-failed",
        Event::Token { .. } => "token",
        Event::Done { .. } => "done",
        Event::Failed { .. } => "failed",
    }
}

/// The supervisor's view of the conversation, checking every frame the worker sends.
#[derive(Debug, Default)]
pub struct Validator {
    state: Phase,
    open: BTreeSet<u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    AwaitHello,
    AwaitReady,
    Serving,
    Ended,
}

impl Validator {
    /// Records that the supervisor sent `Generate` for `id`.
    pub fn opened(&mut self, id: u64) {
        self.open.insert(id);
    }

    /// Decodes and checks one frame from the worker.
    pub fn check(&mut self, frame: &[u8]) -> Result<Event, Violation> {
        let event = Event::decode(frame)?;
        let got = name(&event);
        let order = |expected| Violation::Order { expected, got };
        match (self.state, &event) {
            (Phase::AwaitHello, Event::Hello { version, .. }) => {
                if *version != VERSION {
                    return Err(Violation::Version(*version));
                }
                self.state = Phase::AwaitReady;
            }
            (Phase::AwaitHello, _) => return Err(order("hello")),
            (Phase::AwaitReady, Event::Ready { .. }) => self.state = Phase::Serving,
            (Phase::AwaitReady, Event::LoadFailed { .. }) => self.state = Phase::Ended,
            (Phase::AwaitReady, _) => return Err(order("ready or load-failed")),
            (Phase::Serving, Event::Token { id, .. }) => {
                if !self.open.contains(id) {
                    return Err(Violation::UnknownRequest(*id));
                }
            }
            (Phase::Serving, Event::Done { id, .. } | Event::Failed { id, .. }) => {
                if !self.open.remove(id) {
                    return Err(Violation::UnknownRequest(*id));
                }
            }
            (Phase::Serving, _) => return Err(order("token, done or failed")),
            (Phase::Ended, _) => return Err(order("nothing after load-failed")),
        }
        Ok(event)
    }
}

/// The checks the fuzz targets run (`fuzz/`), shared with the test that replays their corpus.
#[doc(hidden)]
pub mod fuzzing {
    use super::{Event, Request, Validator};

    /// Arbitrary bytes as a worker frame: never panics; what decodes re-encodes identically.
    pub fn event(data: &[u8]) {
        if let Ok(event) = Event::decode(data) {
            let again = event.encode().expect("a decoded event re-encodes");
            let round = Event::decode(&again).expect("round trip");
            assert_eq!(round.encode().expect("re-encode"), again);
        }
        // The same bytes split at every 0xFF, as a sequence of frames through a validator.
        let mut v = Validator::default();
        v.opened(1);
        for frame in data.split(|b| *b == 0xFF) {
            let _ = v.check(frame);
        }
    }

    /// Arbitrary bytes as a supervisor frame.
    pub fn request(data: &[u8]) {
        if let Ok(request) = Request::decode(data) {
            let again = request.encode().expect("a decoded request re-encodes");
            let round = Request::decode(&again).expect("round trip");
            assert_eq!(round.encode().expect("re-encode"), again);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ModelFacts {
        ModelFacts {
            architecture: "llama".into(),
            parameters: 1000,
            quantization: "Q8_0".into(),
            context_length: 256,
            vocab_size: 300,
            chat_template: "chatml".into(),
        }
    }

    #[test]
    fn frames_round_trip() {
        let r = Request::Generate {
            id: 7,
            messages: vec![Message {
                role: Role::User,
                content: Phi("héllo".into()),
            }],
            sampling: Sampling::default(),
        };
        assert_eq!(Request::decode(&r.encode().unwrap()).unwrap(), r);
        let e = Event::Done {
            id: 7,
            finish: Finish::Length,
            usage: Usage {
                prompt_tokens: 3,
                generated_tokens: 4,
                prompt_ms: 5,
                generate_ms: 6,
            },
        };
        assert_eq!(Event::decode(&e.encode().unwrap()).unwrap(), e);
    }

    #[test]
    fn malformed_frames_are_refused() {
        let good = Event::Token {
            id: 1,
            text: Phi("ab".into()),
        }
        .encode()
        .unwrap();
        assert_eq!(Event::decode(&[]), Err(FrameError::Short));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Event::decode(&bad), Err(FrameError::Magic));
        let mut bad = good.clone();
        bad[1] = 9;
        assert_eq!(Event::decode(&bad), Err(FrameError::Version(9)));
        let mut bad = good.clone();
        bad.push(0);
        assert_eq!(Event::decode(&bad), Err(FrameError::Trailing(1)));
        // Broken UTF-8 in the text: the last two bytes are the text "ab".
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 2] = 0xC3;
        bad[n - 1] = 0x28;
        assert!(matches!(Event::decode(&bad), Err(FrameError::Body(_))));
        assert_eq!(
            Event::decode(&vec![0u8; MAX_FRAME + 1]),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
        // A length prefix claiming far more than the frame holds does not allocate it.
        let huge = [MAGIC, VERSION, 3, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F];
        assert!(matches!(Event::decode(&huge), Err(FrameError::Body(_))));
    }

    #[test]
    fn the_validator_enforces_order_and_known_ids() {
        let f = |e: Event| e.encode().unwrap();
        let mut v = Validator::default();
        let token = f(Event::Token {
            id: 1,
            text: Phi("x".into()),
        });
        assert!(matches!(v.check(&token), Err(Violation::Order { .. })));
        let mut v = Validator::default();
        let hello = f(Event::Hello {
            version: VERSION,
            worker: "t".into(),
        });
        v.check(&hello).unwrap();
        assert!(matches!(v.check(&token), Err(Violation::Order { .. })));
        v.check(&f(Event::Ready {
            facts: facts(),
            slots: 8,
        }))
        .unwrap();
        assert_eq!(v.check(&token), Err(Violation::UnknownRequest(1)));
        v.opened(1);
        v.check(&token).unwrap();
        let done = f(Event::Done {
            id: 1,
            finish: Finish::EndOfText,
            usage: Usage {
                prompt_tokens: 1,
                generated_tokens: 1,
                prompt_ms: 0,
                generate_ms: 0,
            },
        });
        v.check(&done).unwrap();
        assert_eq!(v.check(&token), Err(Violation::UnknownRequest(1)));
        assert_eq!(v.check(&done), Err(Violation::UnknownRequest(1)));

        let mut v = Validator::default();
        let old = f(Event::Hello {
            version: 0,
            worker: "t".into(),
        });
        assert_eq!(v.check(&old), Err(Violation::Version(0)));
    }

    #[test]
    fn parameters_are_bounded() {
        let ok = Sampling::default();
        assert_eq!(ok.validate(512), Ok(()));
        let bad = |f: fn(&mut Sampling)| {
            let mut s = Sampling::default();
            f(&mut s);
            s.validate(512).unwrap_err()
        };
        assert_eq!(bad(|s| s.temperature = 3.0), ParamError::Temperature);
        assert_eq!(bad(|s| s.temperature = f32::NAN), ParamError::Temperature);
        assert_eq!(bad(|s| s.top_k = 0), ParamError::TopK);
        assert_eq!(bad(|s| s.top_p = 0.0), ParamError::TopP);
        assert_eq!(
            bad(|s| s.max_tokens = 513),
            ParamError::MaxTokens { max: 512 }
        );
        assert_eq!(bad(|s| s.stop = vec![String::new()]), ParamError::Stop);
        assert_eq!(bad(|s| s.stop = vec!["x".into(); 9]), ParamError::Stop);
    }

    #[test]
    fn phi_never_prints() {
        let p = Phi("patient John Doe".into());
        assert_eq!(
            format!("{p} {p:?}"),
            "<redacted 16 bytes> <redacted 16 bytes>"
        );
        let m = Message {
            role: Role::User,
            content: p,
        };
        assert!(!format!("{m:?}").contains("John"));
    }
}
