//! Writes GGUF v3 files: metadata, tensor infos, then the tensor data, each tensor aligned.
//! No crate writes GGUF from Rust with quantisation, so this is hand-written against the
//! format specification (ggml's docs/gguf.md); it supports the tensor types phibox's tests use.

use std::io::{self, Write};

use half::f16;

use super::{ALIGNMENT, MAGIC, VERSION};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U16(u16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    ArrStr(Vec<String>),
    ArrF32(Vec<f32>),
    ArrI32(Vec<i32>),
}

const T_U16: u32 = 2;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STR: u32 = 8;
const T_ARR: u32 = 9;

/// Tensor element encodings (ggml type ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    /// Blocks of 32 values: an f16 scale and 32 signed bytes.
    Q8_0,
}

impl TensorType {
    fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 8,
        }
    }
}

/// One tensor: its name, shape (innermost dimension first, as ggml orders them), values.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub ty: TensorType,
    pub data: Vec<f32>,
}

impl Tensor {
    /// The encoded bytes of the tensor.
    pub fn encode(&self) -> Vec<u8> {
        match self.ty {
            TensorType::F32 => self.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            TensorType::F16 => self
                .data
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
            TensorType::Q8_0 => {
                let mut out = Vec::with_capacity(self.data.len() / 32 * 34);
                for block in self.data.chunks(32) {
                    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
                    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                    for i in 0..32 {
                        let v = block.get(i).copied().unwrap_or(0.0);
                        out.push(((v * inv).round().clamp(-127.0, 127.0) as i8) as u8);
                    }
                }
                out
            }
        }
    }
}

/// Collects metadata and tensors, then writes the file in one pass.
#[derive(Debug, Default)]
pub struct GgufWriter {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<Tensor>,
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value(out: &mut Vec<u8>, v: &Value) {
    let u32le = |out: &mut Vec<u8>, x: u32| out.extend_from_slice(&x.to_le_bytes());
    match v {
        Value::U16(x) => {
            u32le(out, T_U16);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::U32(x) => {
            u32le(out, T_U32);
            u32le(out, *x);
        }
        Value::I32(x) => {
            u32le(out, T_I32);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::F32(x) => {
            u32le(out, T_F32);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Bool(b) => {
            u32le(out, T_BOOL);
            out.push(u8::from(*b));
        }
        Value::Str(s) => {
            u32le(out, T_STR);
            string(out, s);
        }
        Value::ArrStr(items) => {
            u32le(out, T_ARR);
            u32le(out, T_STR);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for s in items {
                string(out, s);
            }
        }
        Value::ArrF32(items) => {
            u32le(out, T_ARR);
            u32le(out, T_F32);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        Value::ArrI32(items) => {
            u32le(out, T_ARR);
            u32le(out, T_I32);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
}

fn pad(out: &mut Vec<u8>, len: u64) {
    while !(out.len() as u64).is_multiple_of(len) {
        out.push(0);
    }
}

impl GgufWriter {
    pub fn meta(&mut self, key: &str, v: Value) -> &mut Self {
        self.metadata.push((key.to_string(), v));
        self
    }

    /// The header and metadata/tensor-info section, padded to the data section.
    fn header(&self, encoded: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            string(&mut out, k);
            value(&mut out, v);
        }
        let mut offset = 0u64;
        for (t, bytes) in self.tensors.iter().zip(encoded) {
            string(&mut out, &t.name);
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in &t.shape {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += (bytes.len() as u64).div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        pad(&mut out, ALIGNMENT);
        out
    }

    /// Writes the whole file.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let encoded: Vec<Vec<u8>> = self.tensors.iter().map(Tensor::encode).collect();
        w.write_all(&self.header(&encoded))?;
        for bytes in &encoded {
            w.write_all(bytes)?;
            let rem = (bytes.len() as u64) % ALIGNMENT;
            if rem != 0 {
                w.write_all(&vec![0u8; (ALIGNMENT - rem) as usize])?;
            }
        }
        w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_the_format() {
        let mut w = GgufWriter::default();
        w.meta("general.architecture", Value::Str("llama".into()));
        w.tensors.push(Tensor {
            name: "t".into(),
            shape: vec![2],
            ty: TensorType::F32,
            data: vec![1.0, 2.0],
        });
        let mut out = Vec::new();
        w.write_to(&mut out).unwrap();
        assert_eq!(&out[..4], b"GGUF");
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(out[8..16].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(out[16..24].try_into().unwrap()), 1);
        assert_eq!(out.len() % 32, 0);
        // The data section ends with the two floats and padding.
        let data_start = out.len() - 32;
        assert_eq!(&out[data_start..data_start + 4], &1.0f32.to_le_bytes());
    }

    #[test]
    fn q8_0_blocks_are_34_bytes_and_round_trip_closely() {
        let data: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 10.0).collect();
        let t = Tensor {
            name: "q".into(),
            shape: vec![64],
            ty: TensorType::Q8_0,
            data: data.clone(),
        };
        let bytes = t.encode();
        assert_eq!(bytes.len(), 68);
        let d = f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
        for i in 0..32 {
            let q = bytes[2 + i] as i8 as f32 * d;
            assert!((q - data[i]).abs() < 0.03, "{q} vs {}", data[i]);
        }
    }
}
