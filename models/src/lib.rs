//! Model files: signed model bundles and the model store (`bundle`), GGUF headers and a GGUF
//! v3 writer (`gguf`), and a generator of small random-weight llama models with a complete
//! tokenizer, so that tests and benchmarks need no download (`testmodel`). Pure logic plus
//! file I/O; no network, no unsafe.
#![forbid(unsafe_code)]

pub mod bundle;
#[doc(hidden)]
pub mod fuzzing;
pub mod gguf;
pub mod testmodel;
