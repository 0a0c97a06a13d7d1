//! Inference for the rest of phiboxd: the manager that keeps the confined worker running
//! (start, readiness, restart with back-off, graceful stop) and the async handle through which
//! any number of callers generate text. Every frame from the worker is validated; a protocol
//! violation is treated as a worker fault.

mod backoff;
mod handle;
mod link;
mod manager;

pub use backoff::Backoff;
pub use handle::{InferenceError, InferenceHandle, Status, StreamItem, TokenStream};
pub use manager::{spawn_manager, WorkerLaunch};
