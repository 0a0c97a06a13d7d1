//! `phibox-gguf-gen`: writes a random-weight llama GGUF for tests and benchmarks.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use models::gguf::TensorType;
use models::testmodel::{self, Hostile, LlamaConfig};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    Tiny,
    Small,
    Bench200m,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Ty {
    F32,
    F16,
    Q8_0,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Broken {
    Truncated,
    AbsurdTensor,
    BadMetadata,
    Garbage,
    DuplicateTokens,
}

/// Writes a random-weight llama model (complete tokenizer, ChatML template) as GGUF.
#[derive(Debug, Parser)]
struct Args {
    /// Output file.
    out: PathBuf,
    #[arg(long, value_enum, default_value = "tiny")]
    preset: Preset,
    #[arg(long = "type", value_enum, default_value = "q8-0")]
    ty: Ty,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write a deliberately broken file instead.
    #[arg(long, value_enum)]
    broken: Option<Broken>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(b) = args.broken {
        let kind = match b {
            Broken::Truncated => Hostile::Truncated,
            Broken::AbsurdTensor => Hostile::AbsurdTensor,
            Broken::BadMetadata => Hostile::BadMetadata,
            Broken::Garbage => Hostile::Garbage,
            Broken::DuplicateTokens => Hostile::DuplicateTokens,
        };
        testmodel::write_hostile(kind, &args.out)?;
        return Ok(());
    }
    let mut cfg = match args.preset {
        Preset::Tiny => LlamaConfig::tiny(),
        Preset::Small => LlamaConfig::small(),
        Preset::Bench200m => LlamaConfig::bench_200m(),
    };
    cfg.ty = match args.ty {
        Ty::F32 => TensorType::F32,
        Ty::F16 => TensorType::F16,
        Ty::Q8_0 => TensorType::Q8_0,
    };
    cfg.seed = args.seed;
    testmodel::write_llama(&cfg, &args.out)?;
    Ok(())
}
