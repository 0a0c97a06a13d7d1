//! `phibox-install-bench`: the install's copy of a multi-GB bundle (verify the signature, copy
//! into staging while hashing, fsync, check the GGUF header) against `cat FILE > /dev/null`
//! plus `sha256sum FILE` on the same file, in the same run, alternating. Prints the medians and
//! their ratio (reference time ÷ our time: above 1 means the install is faster than reading and
//! hashing the file with the standard tools).
//!
//! The model file is a generated GGUF header followed by pseudo-random bytes: the installer
//! reads only the header, so the bytes after it only need to be many and incompressible.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use models::bundle::keys::{self, Password};
use models::bundle::store::Store;
use models::bundle::{create, prepare, sign, CreateOptions, Prepared, Quiet, TrustedKeys};
use models::testmodel::{llama, LlamaConfig};

#[derive(Debug, Parser)]
#[command(about = "Install throughput of a multi-GB bundle vs cat + sha256sum")]
struct Args {
    /// Size of the model file in GiB.
    #[arg(long, default_value_t = 4.0)]
    gib: f64,
    /// Measured rounds of each.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Work directory (the bundle and the store; on the data disk you want to measure).
    #[arg(long, default_value = "/var/tmp/phibox-install-bench")]
    dir: PathBuf,
    /// Drop the page cache before every measured run (root): reads come from the disk.
    #[arg(long)]
    cold: bool,
}

fn make_model(path: &Path, bytes: u64) -> Result<()> {
    let mut head = Vec::new();
    llama(&LlamaConfig::tiny()).write_to(&mut head)?;
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path)?);
    f.write_all(&head)?;
    let mut left = bytes.saturating_sub(head.len() as u64);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            // xorshift64*: incompressible enough for a file system that might compress.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            chunk.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    f.get_ref().sync_all()?;
    Ok(())
}

fn drop_caches() -> Result<()> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").context("dropping the page cache needs root")
}

fn timed(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let status = cmd.stdout(Stdio::null()).status()?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(t.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bytes = (args.gib * f64::from(1u32 << 30)) as u64;
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(args.dir.join("bundle"))?;
    std::fs::create_dir_all(args.dir.join("trusted"))?;
    let bundle = args.dir.join("bundle");
    let model = bundle.join("model.gguf");
    println!("writing a {:.1} GiB model to {}", args.gib, model.display());
    make_model(&model, bytes)?;
    let id = keys::keygen(&args.dir.join("bench"), Password::Unencrypted)?;
    let (_, sk) = keys::read_secret_key(&args.dir.join("bench.key"), Password::Unencrypted)?;
    std::fs::copy(
        args.dir.join("bench.pub"),
        args.dir.join("trusted/bench.pub"),
    )?;
    let opts = CreateOptions {
        name: "bench".into(),
        version: "1".into(),
        sequence: 1,
        signer: id,
        files: vec![],
    };
    create(&bundle, &opts)?;
    sign(&bundle, &sk, id)?;
    let keys = TrustedKeys::load_dir(&args.dir.join("trusted"))?;
    let (mut ours, mut reference) = (Vec::new(), Vec::new());
    // One untimed run of each first (page cache, allocator, binaries).
    for round in 0..=args.rounds {
        if args.cold {
            drop_caches()?;
        }
        let cat = timed(Command::new("cat").arg(&model))?;
        if args.cold {
            drop_caches()?;
        }
        let sum = timed(Command::new("sha256sum").arg(&model))?;
        if args.cold {
            drop_caches()?;
        }
        let root = args.dir.join(format!("store-{round}"));
        let (store, _) = Store::open(&root)?;
        let t = Instant::now();
        let staged = match prepare(&store, &keys, &bundle, &mut Quiet)? {
            Prepared::Staged(s) => s,
            other => bail!("unexpected {other:?}"),
        };
        let install = t.elapsed();
        drop(staged);
        std::fs::remove_dir_all(&root)?;
        if round > 0 {
            println!(
                "round {round}: cat {:.2}s + sha256sum {:.2}s = {:.2}s; install copy {:.2}s",
                cat.as_secs_f64(),
                sum.as_secs_f64(),
                (cat + sum).as_secs_f64(),
                install.as_secs_f64()
            );
            reference.push(cat + sum);
            ours.push(install);
        }
    }
    let (r, o) = (median(reference), median(ours));
    let gib = bytes as f64 / f64::from(1u32 << 30);
    println!(
        "{} cache, {gib:.1} GiB: reference {:.2}s ({:.0} MiB/s), install {:.2}s ({:.0} MiB/s); ratio reference/install = {:.2} (goal >= 0.9)",
        if args.cold { "cold" } else { "warm" },
        r.as_secs_f64(),
        gib * 1024.0 / r.as_secs_f64(),
        o.as_secs_f64(),
        gib * 1024.0 / o.as_secs_f64(),
        r.as_secs_f64() / o.as_secs_f64()
    );
    std::fs::remove_dir_all(&args.dir)?;
    Ok(())
}
