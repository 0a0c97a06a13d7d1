//! Small random-weight llama models with a complete SentencePiece-style tokenizer (specials,
//! the 256 byte-fallback tokens, ChatML control tokens and ordinary pieces), which llama.cpp
//! loads and runs like a real model. Deterministic for a given seed. Also writes deliberately
//! broken files for the worker's hostile-input tests.

use std::io;
use std::path::Path;

use crate::gguf::{GgufWriter, Tensor, TensorType, Value};

/// Shape and encoding of a generated model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab: usize,
    pub embedding: u32,
    pub layers: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub feed_forward: u32,
    pub context: u32,
    pub ty: TensorType,
    pub seed: u64,
}

impl LlamaConfig {
    /// A model of a few hundred thousand parameters: loads and generates in milliseconds.
    pub fn tiny() -> LlamaConfig {
        LlamaConfig {
            vocab: 512,
            embedding: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            feed_forward: 128,
            context: 512,
            ty: TensorType::Q8_0,
            seed: 1,
        }
    }

    /// About 25M parameters: answers take about a second on two cores, so streaming is
    /// visible (the browser test) and batching matters (the web benchmark).
    pub fn small() -> LlamaConfig {
        LlamaConfig {
            embedding: 512,
            layers: 8,
            heads: 8,
            kv_heads: 4,
            feed_forward: 1536,
            context: 2048,
            ..LlamaConfig::tiny()
        }
    }

    /// About 200M parameters (214 MB in Q8_0): the benchmark model.
    pub fn bench_200m() -> LlamaConfig {
        LlamaConfig {
            vocab: 32000,
            embedding: 1024,
            layers: 12,
            heads: 16,
            kv_heads: 4,
            feed_forward: 2816,
            context: 2048,
            ty: TensorType::Q8_0,
            seed: 1,
        }
    }

    /// Number of weights.
    pub fn parameters(&self) -> u64 {
        let e = u64::from(self.embedding);
        let kv = e / u64::from(self.heads) * u64::from(self.kv_heads);
        let ff = u64::from(self.feed_forward);
        let per_layer = 2 * e + 2 * e * e + 2 * e * kv + 3 * e * ff;
        2 * e * self.vocab as u64 + e + u64::from(self.layers) * per_layer
    }
}

/// Deterministic pseudo-random numbers for weights (splitmix64): test data needs repeatability,
/// not quality, and this keeps the generator free of a RNG dependency's version drift.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Token kinds as llama.cpp numbers them.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const BYTE: i32 = 6;

/// The ChatML template; llama.cpp recognises it by its markers.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Tokens, scores and kinds of a vocabulary of `size` entries.
fn vocabulary(size: usize) -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens: Vec<(String, i32)> = vec![
        ("<unk>".into(), UNKNOWN),
        ("<s>".into(), CONTROL),
        ("</s>".into(), CONTROL),
        ("<|im_start|>".into(), CONTROL),
        ("<|im_end|>".into(), CONTROL),
    ];
    tokens.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), BYTE)));
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let mut pieces: Vec<String> = vec!["\u{2581}".into()];
    pieces.extend(letters.iter().map(|c| c.to_string()));
    pieces.extend(letters.iter().map(|c| format!("\u{2581}{c}")));
    'outer: for a in &letters {
        for b in &letters {
            pieces.push(format!("{a}{b}"));
            pieces.push(format!("\u{2581}{a}{b}"));
            if tokens.len() + pieces.len() >= size {
                break 'outer;
            }
        }
    }
    // Filler pieces are longer than every piece above, so they cannot repeat one.
    let mut n = 0;
    while tokens.len() + pieces.len() < size {
        pieces.push(format!("\u{2581}tok{n}"));
        n += 1;
    }
    tokens.extend(pieces.into_iter().map(|p| (p, NORMAL)));
    tokens.truncate(size);
    let scores = (0..tokens.len()).map(|i| -(i as f32)).collect();
    let kinds = tokens.iter().map(|(_, k)| *k).collect();
    (tokens.into_iter().map(|(t, _)| t).collect(), scores, kinds)
}

/// The GGUF contents of a random llama model.
pub fn llama(cfg: &LlamaConfig) -> GgufWriter {
    let mut w = GgufWriter::default();
    let head_dim = cfg.embedding / cfg.heads;
    let file_type = match cfg.ty {
        TensorType::F32 => 0,
        TensorType::F16 => 1,
        TensorType::Q8_0 => 7,
    };
    let (tokens, scores, kinds) = vocabulary(cfg.vocab);
    w.meta("general.architecture", Value::Str("llama".into()))
        .meta("general.name", Value::Str("phibox-test-llama".into()))
        .meta("general.file_type", Value::U32(file_type))
        .meta("llama.context_length", Value::U32(cfg.context))
        .meta("llama.embedding_length", Value::U32(cfg.embedding))
        .meta("llama.block_count", Value::U32(cfg.layers))
        .meta("llama.feed_forward_length", Value::U32(cfg.feed_forward))
        .meta("llama.attention.head_count", Value::U32(cfg.heads))
        .meta("llama.attention.head_count_kv", Value::U32(cfg.kv_heads))
        .meta("llama.rope.dimension_count", Value::U32(head_dim))
        .meta("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .meta("tokenizer.ggml.model", Value::Str("llama".into()))
        .meta("tokenizer.ggml.tokens", Value::ArrStr(tokens))
        .meta("tokenizer.ggml.scores", Value::ArrF32(scores))
        .meta("tokenizer.ggml.token_type", Value::ArrI32(kinds))
        .meta("tokenizer.ggml.bos_token_id", Value::U32(1))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(2))
        .meta("tokenizer.ggml.unknown_token_id", Value::U32(0))
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(true))
        .meta("tokenizer.ggml.add_space_prefix", Value::Bool(true))
        .meta(
            "tokenizer.chat_template",
            Value::Str(CHATML_TEMPLATE.into()),
        );

    let mut rng = Rng(cfg.seed);
    let e = u64::from(cfg.embedding);
    let kv = u64::from(head_dim * cfg.kv_heads);
    let ff = u64::from(cfg.feed_forward);
    let v = cfg.vocab as u64;
    let mut matrix = |name: String, cols: u64, rows: u64, scale: f32| Tensor {
        name,
        shape: vec![cols, rows],
        ty: cfg.ty,
        data: (0..cols * rows).map(|_| rng.next_f32() * scale).collect(),
    };
    let norm = |name: String| Tensor {
        name,
        shape: vec![e],
        ty: TensorType::F32,
        data: vec![1.0; e as usize],
    };
    let s = 1.0 / (e as f32).sqrt();
    w.tensors
        .push(matrix("token_embd.weight".into(), e, v, 1.0));
    for l in 0..cfg.layers {
        let b = |n: &str| format!("blk.{l}.{n}.weight");
        w.tensors.push(norm(b("attn_norm")));
        w.tensors.push(matrix(b("attn_q"), e, e, s));
        w.tensors.push(matrix(b("attn_k"), e, kv, s));
        w.tensors.push(matrix(b("attn_v"), e, kv, s));
        w.tensors.push(matrix(b("attn_output"), e, e, s));
        w.tensors.push(norm(b("ffn_norm")));
        w.tensors.push(matrix(b("ffn_gate"), e, ff, s));
        w.tensors.push(matrix(b("ffn_up"), e, ff, s));
        w.tensors
            .push(matrix(b("ffn_down"), ff, e, 1.0 / (ff as f32).sqrt()));
    }
    w.tensors.push(norm("output_norm.weight".into()));
    w.tensors
        .push(matrix("output.weight".into(), e, v, s * 4.0));
    w
}

/// Writes a random llama model to `path`.
pub fn write_llama(cfg: &LlamaConfig, path: &Path) -> io::Result<()> {
    let mut f = io::BufWriter::new(std::fs::File::create(path)?);
    llama(cfg).write_to(&mut f)
}

/// The file name of shard `no` (0-based) of `count`, as llama.cpp's gguf-split names it.
pub fn split_name(prefix: &str, no: usize, count: usize) -> String {
    format!("{prefix}-{:05}-of-{count:05}.gguf", no + 1)
}

/// Writes the model split into `count` shards in `dir` (as llama.cpp's gguf-split does: every
/// shard carries `split.no`, `split.count` and `split.tensors.count`, the first also all other
/// metadata; the tensors are divided in order). Returns the shards' paths, first first.
pub fn write_llama_split(
    cfg: &LlamaConfig,
    dir: &Path,
    prefix: &str,
    count: usize,
) -> io::Result<Vec<std::path::PathBuf>> {
    let whole = llama(cfg);
    let total = whole.tensors.len();
    let per = total.div_ceil(count);
    let mut paths = Vec::new();
    for (no, tensors) in whole.tensors.chunks(per).enumerate() {
        let mut w = GgufWriter::default();
        if no == 0 {
            w.metadata = whole.metadata.clone();
        }
        w.meta("split.no", Value::U16(no as u16))
            .meta("split.count", Value::U16(count as u16))
            .meta("split.tensors.count", Value::I32(total as i32));
        w.tensors = tensors.to_vec();
        let path = dir.join(split_name(prefix, no, count));
        let mut f = io::BufWriter::new(std::fs::File::create(&path)?);
        w.write_to(&mut f)?;
        paths.push(path);
    }
    assert_eq!(paths.len(), count, "more shards than tensors");
    Ok(paths)
}

/// Ways to break a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// The file stops in the middle of the tensor data.
    Truncated,
    /// A tensor claims dimensions far beyond the file (and beyond memory).
    AbsurdTensor,
    /// A required metadata value has the wrong type.
    BadMetadata,
    /// Not a GGUF file at all.
    Garbage,
    /// Two tokens with the same text: llama.cpp aborts while loading the vocabulary.
    DuplicateTokens,
}

/// Writes a broken variant of the tiny model.
pub fn write_hostile(kind: Hostile, path: &Path) -> io::Result<()> {
    let mut w = llama(&LlamaConfig::tiny());
    match kind {
        Hostile::Truncated => {
            let mut bytes = Vec::new();
            w.write_to(&mut bytes)?;
            bytes.truncate(bytes.len() / 2);
            return std::fs::write(path, bytes);
        }
        Hostile::Garbage => return std::fs::write(path, b"this is not a model\n".repeat(64)),
        Hostile::AbsurdTensor => {
            if let Some(t) = w.tensors.iter_mut().find(|t| t.name == "output.weight") {
                // Keep the data small but claim 2^50 elements.
                t.shape = vec![1 << 25, 1 << 25];
                t.ty = TensorType::F32;
                t.data.truncate(64);
            }
        }
        Hostile::DuplicateTokens => {
            for (k, v) in &mut w.metadata {
                if let (true, Value::ArrStr(tokens)) = (k == "tokenizer.ggml.tokens", v) {
                    tokens[300] = tokens[301].clone();
                }
            }
        }
        Hostile::BadMetadata => {
            for (k, v) in &mut w.metadata {
                if k == "llama.block_count" {
                    *v = Value::Str("twelve".into());
                }
                if k == "tokenizer.ggml.scores" {
                    *v = Value::ArrF32(vec![0.0; 3]);
                }
            }
        }
    }
    let mut f = io::BufWriter::new(std::fs::File::create(path)?);
    w.write_to(&mut f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vocabulary_is_complete_and_unique() {
        let (tokens, scores, kinds) = vocabulary(512);
        assert_eq!(tokens.len(), 512);
        assert_eq!(scores.len(), 512);
        assert_eq!(kinds.iter().filter(|k| **k == BYTE).count(), 256);
        let unique: std::collections::BTreeSet<_> = tokens.iter().collect();
        assert_eq!(unique.len(), tokens.len());
        let (big, ..) = vocabulary(32000);
        assert_eq!(big.len(), 32000);
        let unique: std::collections::BTreeSet<_> = big.iter().collect();
        assert_eq!(
            unique.len(),
            big.len(),
            "llama.cpp aborts on duplicate tokens"
        );
    }

    #[test]
    fn generation_is_deterministic_and_sized() {
        let cfg = LlamaConfig::tiny();
        let mut a = Vec::new();
        let mut b = Vec::new();
        llama(&cfg).write_to(&mut a).unwrap();
        llama(&cfg).write_to(&mut b).unwrap();
        assert_eq!(a, b);
        let other = LlamaConfig {
            seed: 2,
            ..cfg.clone()
        };
        let mut c = Vec::new();
        llama(&other).write_to(&mut c).unwrap();
        assert_ne!(a, c);
        let counted: u64 = llama(&cfg)
            .tensors
            .iter()
            .map(|t| t.shape.iter().product::<u64>())
            .sum();
        assert_eq!(counted, cfg.parameters());
    }
}
