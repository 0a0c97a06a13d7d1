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

/// Splits a shard's file name as llama.cpp's gguf-split writes it,
/// `PREFIX-00001-of-00003.gguf`, into the prefix, the shard number (1-based) and the count.
pub fn split_file_name(name: &str) -> Option<(&str, usize, usize)> {
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if prefix.is_empty() || !digits(no) || !digits(count) {
        return None;
    }
    let (no, count): (usize, usize) = (no.parse().ok()?, count.parse().ok()?);
    (1..=count).contains(&no).then_some((prefix, no, count))
}

#[cfg(test)]
mod tests {
    use super::split_file_name;

    #[test]
    fn shard_names_are_read_as_gguf_split_writes_them() {
        assert_eq!(
            split_file_name("gemma-00002-of-00003.gguf"),
            Some(("gemma", 2, 3))
        );
        for bad in [
            "gemma.gguf",
            "gemma-2-of-3.gguf",
            "gemma-00004-of-00003.gguf",
            "gemma-00000-of-00003.gguf",
            "-00001-of-00002.gguf",
            "gemma-00001-of-00002.bin",
        ] {
            assert_eq!(split_file_name(bad), None, "{bad}");
        }
    }
}
