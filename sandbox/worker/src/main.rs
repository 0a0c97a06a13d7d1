//! phibox-worker: llama.cpp inference for phiboxd, run only inside the sandbox. It confines
//! itself further before reading the model (`confine::enter`) and again once the model is loaded
//! (`confine::serve`: no file access at all from then on), then serves requests from the control
//! socket with continuous batching. It never logs prompt or generated text.
//!
//! This is the only crate that links llama.cpp.

mod engine;
mod greedy;
mod io;
mod model;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sandbox::protocol::{Event, VERSION};

use crate::engine::{Engine, EngineConfig};
use crate::model::Loaded;

/// phibox's inference worker (started by phiboxd through phibox-jail; refuses to run otherwise).
#[derive(Debug, Parser)]
#[command(name = "phibox-worker", version)]
struct Args {
    /// The GGUF model, as seen inside the sandbox.
    #[arg(long)]
    model: PathBuf,
    /// Requests decoded together.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    slots: u32,
    /// KV cells per request (prompt + reply); 0 = 2048, at most the model's trained context.
    #[arg(long, default_value_t = 0)]
    context: u32,
    /// Tokens per decode step.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=8192))]
    batch: u32,
    /// CPU threads; 0 = every CPU the worker may use.
    #[arg(long, default_value_t = 0)]
    threads: u32,
    /// Upper bound on a request's max_tokens.
    #[arg(long, default_value_t = 2048)]
    max_tokens: u32,
    /// Requests waiting for a slot, at most.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Layers offloaded to the GPU (cuda builds).
    #[arg(long, default_value_t = 0)]
    gpu_layers: u32,
    /// Self-test: once serving, attempt this escape and report the result on stderr.
    #[arg(long)]
    escape: Option<String>,
    #[arg(long, default_value = "")]
    escape_arg: String,
}

/// Exit codes.
const NOT_CONFINED: u8 = 4;
const LOAD_FAILED: u8 = 3;

fn main() -> ExitCode {
    // First act: verify the sandbox and add the load-stage filter before reading anything.
    let socket = match sandbox::confine::enter() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("phibox-worker: {}", sandbox::error_chain::chain(&e));
            return ExitCode::from(NOT_CONFINED);
        }
    };
    let args = Args::parse();
    let (out, inbox) = io::split(socket);
    let hello = Event::Hello {
        version: VERSION,
        worker: format!("phibox-worker {}", env!("CARGO_PKG_VERSION")),
    };
    if out.send(&hello).is_err() {
        return ExitCode::from(LOAD_FAILED);
    }
    let load_failed = |reason: String| {
        let _ = out.send(&Event::LoadFailed { reason });
        ExitCode::from(LOAD_FAILED)
    };
    let loaded = match Loaded::load(&args.model, args.gpu_layers) {
        Ok(l) => l,
        Err(e) => return load_failed(sandbox::error_chain::chain(&e)),
    };
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as i32)
    } else {
        args.threads as i32
    };
    let cfg = EngineConfig {
        slots: args.slots,
        context: loaded.context_per_sequence(args.context),
        batch: args.batch,
        threads,
        max_tokens: args.max_tokens,
        queue: args.queue,
    };
    let mut engine = match Engine::new(&loaded, cfg, out.clone()) {
        Ok(e) => e,
        Err(e) => return load_failed(sandbox::error_chain::chain(&e)),
    };
    if let Err(e) = engine.warm_up() {
        return load_failed(sandbox::error_chain::chain(&e));
    }
    // The model is loaded: from here on the worker opens and reads no file.
    if let Err(e) = sandbox::confine::serve() {
        return load_failed(sandbox::error_chain::chain(&e));
    }
    if let Some(name) = &args.escape {
        eprintln!("trying {name}");
        let result = sandbox::escape::attempt(name, &args.escape_arg);
        eprintln!("escape {name}: {result}");
        return ExitCode::SUCCESS;
    }
    let ready = Event::Ready {
        facts: loaded.facts(),
        slots: args.slots,
    };
    if out.send(&ready).is_err() {
        return ExitCode::from(LOAD_FAILED);
    }
    match engine.run(&inbox) {
        Ok(()) => ExitCode::SUCCESS,
        // The supervisor went away (it restarts workers on its own terms): a normal end.
        Err(engine::EngineError::Closed(why)) => {
            eprintln!("phibox-worker: stopping: {why}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("phibox-worker: {}", sandbox::error_chain::chain(&e));
            ExitCode::FAILURE
        }
    }
}
