//! The GGUF container format (version 3): typed metadata key/values, tensor descriptions and
//! aligned tensor data.

pub mod reader;
pub mod writer;

pub use reader::{read_header, Header, HeaderError};
pub use writer::{GgufWriter, Tensor, TensorType, Value};

/// "GGUF" as a little-endian u32.
pub const MAGIC: &[u8; 4] = b"GGUF";
pub const VERSION: u32 = 3;
/// Default alignment of the tensor data section and of each tensor.
pub const ALIGNMENT: u64 = 32;
