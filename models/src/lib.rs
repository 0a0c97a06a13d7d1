//! Model files. So far: a GGUF v3 writer and a generator of small random-weight llama models
//! with a complete tokenizer, so that tests and benchmarks need no download. Pure logic plus
//! file I/O; no network, no unsafe.
#![forbid(unsafe_code)]

pub mod gguf;
pub mod testmodel;
