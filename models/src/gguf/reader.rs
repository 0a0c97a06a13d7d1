//! Reads what a GGUF file says about itself — architecture, quantisation, context length,
//! parameter count, shard numbering — from its header, without loading the tensors. Bundles use
//! it twice: `phibox bundle create` fills the manifest's model facts, and the installer refuses
//! a staged file that is not GGUF or does not match the signed facts. The input is untrusted:
//! every count and length is bounded, arrays are skipped without being stored, and reading stops
//! at a fixed header budget. Hand-written for the same reason as the writer (no crate reads
//! GGUF metadata without the tensor data).

use std::io::{self, Read};

use super::MAGIC;

/// Most header bytes read (metadata plus tensor infos). Gemma 3's 262k-token vocabulary with
/// scores and token types is about 6 MB; a header beyond this is refused.
pub const HEADER_BUDGET: u64 = 64 << 20;
/// Longest string (key or value) kept.
const MAX_STRING: u64 = 1 << 20;
/// Most metadata entries and tensors.
const MAX_ENTRIES: u64 = 1 << 20;
/// Most dimensions of one tensor (ggml has 4).
const MAX_DIMS: u32 = 8;

const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STR: u32 = 8;
const T_ARR: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// What the header of one GGUF file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.file_type`, named as llama.cpp names it (`Q8_0`, `Q4_K_M`, …).
    pub quantization: Option<String>,
    /// `<architecture>.context_length`.
    pub context_length: Option<u64>,
    /// `split.no` (0-based) and `split.count` of a file made by llama.cpp's gguf-split.
    pub split: Option<(u64, u64)>,
    /// Elements of the tensors in this file.
    pub parameters: u64,
    pub tensors: u64,
}

/// Why a file is not a GGUF this reader accepts.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("not a GGUF file (magic {0:02x?})")]
    Magic([u8; 4]),
    #[error("unsupported GGUF version {0}")]
    Version(u32),
    #[error("the file ends inside its header")]
    Truncated,
    #[error("the header is larger than {HEADER_BUDGET} bytes")]
    TooLarge,
    #[error("malformed header: {0}")]
    Malformed(&'static str),
    #[error("reading the header")]
    Io(#[source] io::Error),
}

/// A reader that refuses to go past the header budget.
struct Bounded<R> {
    inner: R,
    used: u64,
}

impl<R: Read> Bounded<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), HeaderError> {
        self.used += buf.len() as u64;
        if self.used > HEADER_BUDGET {
            return Err(HeaderError::TooLarge);
        }
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => HeaderError::Truncated,
            _ => HeaderError::Io(e),
        })
    }

    fn skip(&mut self, n: u64) -> Result<(), HeaderError> {
        if self.used.saturating_add(n) > HEADER_BUDGET {
            return Err(HeaderError::TooLarge);
        }
        self.used += n;
        let got =
            io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(HeaderError::Io)?;
        if got < n {
            return Err(HeaderError::Truncated);
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, HeaderError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, HeaderError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn string(&mut self) -> Result<String, HeaderError> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(HeaderError::Malformed("string too long"));
        }
        let mut b = vec![0u8; n as usize];
        self.fill(&mut b)?;
        String::from_utf8(b).map_err(|_| HeaderError::Malformed("string is not UTF-8"))
    }

    fn skip_string(&mut self) -> Result<(), HeaderError> {
        let n = self.u64()?;
        self.skip(n)
    }
}

/// A scalar metadata value the facts need; everything else is skipped.
enum Scalar {
    Int(u64),
    Str(String),
    Other,
}

fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        T_U8 | T_I8 | T_BOOL => Some(1),
        T_U16 | T_I16 => Some(2),
        T_U32 | T_I32 | T_F32 => Some(4),
        T_U64 | T_I64 | T_F64 => Some(8),
        _ => None,
    }
}

fn value<R: Read>(r: &mut Bounded<R>, ty: u32) -> Result<Scalar, HeaderError> {
    match ty {
        T_U32 => Ok(Scalar::Int(u64::from(r.u32()?))),
        T_I32 => {
            let v = r.u32()? as i32;
            Ok(u64::try_from(v).map_or(Scalar::Other, Scalar::Int))
        }
        T_U64 => Ok(Scalar::Int(r.u64()?)),
        T_I64 => {
            let v = r.u64()? as i64;
            Ok(u64::try_from(v).map_or(Scalar::Other, Scalar::Int))
        }
        T_U16 => Ok(Scalar::Int(u64::from(u16::from_le_bytes(r.bytes()?)))),
        T_STR => Ok(Scalar::Str(r.string()?)),
        T_ARR => {
            let item = r.u32()?;
            let n = r.u64()?;
            if item == T_STR {
                for _ in 0..n {
                    r.skip_string()?;
                }
            } else if let Some(size) = fixed_size(item) {
                r.skip(n.checked_mul(size).ok_or(HeaderError::TooLarge)?)?;
            } else {
                return Err(HeaderError::Malformed("array of unsupported type"));
            }
            Ok(Scalar::Other)
        }
        other => match fixed_size(other) {
            Some(size) => r.skip(size).map(|()| Scalar::Other),
            None => Err(HeaderError::Malformed("unknown metadata type")),
        },
    }
}

/// llama.cpp's `llama_ftype` names (`general.file_type`).
pub fn file_type_name(id: u64) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

/// Reads the header of a GGUF file (versions 2 and 3).
pub fn read_header(input: impl Read) -> Result<Header, HeaderError> {
    let mut r = Bounded {
        inner: input,
        used: 0,
    };
    let magic: [u8; 4] = r.bytes()?;
    if &magic != MAGIC {
        return Err(HeaderError::Magic(magic));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(HeaderError::Version(version));
    }
    let tensors = r.u64()?;
    let entries = r.u64()?;
    if tensors > MAX_ENTRIES || entries > MAX_ENTRIES {
        return Err(HeaderError::Malformed("too many entries"));
    }
    let mut h = Header {
        version,
        architecture: None,
        quantization: None,
        context_length: None,
        split: None,
        parameters: 0,
        tensors,
    };
    let mut ctx: Vec<(String, u64)> = Vec::new();
    let (mut split_no, mut split_count) = (None, None);
    for _ in 0..entries {
        let key = r.string()?;
        let ty = r.u32()?;
        match (key.as_str(), value(&mut r, ty)?) {
            ("general.architecture", Scalar::Str(s)) => h.architecture = Some(s),
            ("general.file_type", Scalar::Int(id)) => {
                h.quantization = Some(file_type_name(id).map_or(format!("type {id}"), Into::into))
            }
            ("split.no", Scalar::Int(n)) => split_no = Some(n),
            ("split.count", Scalar::Int(n)) => split_count = Some(n),
            (k, Scalar::Int(n)) if k.ends_with(".context_length") => ctx.push((key.clone(), n)),
            _ => {}
        }
    }
    if let Some(arch) = &h.architecture {
        let want = format!("{arch}.context_length");
        h.context_length = ctx.into_iter().find(|(k, _)| *k == want).map(|(_, n)| n);
    }
    h.split = match (split_no, split_count) {
        (Some(no), Some(count)) if no < count => Some((no, count)),
        (None, None) => None,
        _ => return Err(HeaderError::Malformed("inconsistent split numbering")),
    };
    for _ in 0..tensors {
        r.skip_string()?;
        let dims = r.u32()?;
        if dims == 0 || dims > MAX_DIMS {
            return Err(HeaderError::Malformed("tensor dimensions"));
        }
        let mut elements: u64 = 1;
        for _ in 0..dims {
            elements = elements
                .checked_mul(r.u64()?)
                .ok_or(HeaderError::Malformed("tensor size overflows"))?;
        }
        let _ty = r.u32()?;
        let _offset = r.u64()?;
        h.parameters = h
            .parameters
            .checked_add(elements)
            .ok_or(HeaderError::Malformed("tensor sizes overflow"))?;
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testmodel::{llama, LlamaConfig};

    fn tiny_bytes() -> (LlamaConfig, Vec<u8>) {
        let cfg = LlamaConfig::tiny();
        let mut b = Vec::new();
        llama(&cfg).write_to(&mut b).unwrap();
        (cfg, b)
    }

    #[test]
    fn the_facts_of_a_generated_model_are_read_back() {
        let (cfg, b) = tiny_bytes();
        let h = read_header(&b[..]).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.architecture.as_deref(), Some("llama"));
        assert_eq!(h.context_length, Some(u64::from(cfg.context)));
        assert_eq!(h.parameters, cfg.parameters());
        assert!(h.quantization.is_some());
        assert_eq!(h.split, None);
    }

    #[test]
    fn other_files_and_broken_headers_are_refused() {
        assert!(matches!(
            read_header(&b"PK\x03\x04 a zip file"[..]),
            Err(HeaderError::Magic(_))
        ));
        let (_, b) = tiny_bytes();
        let mut v9 = b.clone();
        v9[4] = 9;
        assert!(matches!(read_header(&v9[..]), Err(HeaderError::Version(9))));
        // Cut anywhere inside the header: never a panic, always an error.
        for cut in (0..4096).step_by(7) {
            assert!(read_header(&b[..cut]).is_err(), "cut at {cut}");
        }
        // A string claiming a petabyte.
        let mut huge = b.clone();
        huge[24..32].copy_from_slice(&(1u64 << 50).to_le_bytes());
        assert!(read_header(&huge[..]).is_err());
    }
}
