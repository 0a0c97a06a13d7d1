//! `phibox-bench`: inference throughput of phibox (phiboxd's manager driving the confined
//! worker, every token through the sandbox and the protocol) against llama.cpp's own tools on
//! the same model, thread count and CPU flags, run interleaved (ours, reference, ours, …) over
//! several rounds. Prints medians, spreads and the ratios ours ÷ reference. A program, not a
//! test: throughput on a shared 2-core machine is noisy (see shared/notes/llm-feasibility.md).
//!
//! Needs root (the sandbox) and the reference binaries from scripts/build-llama-reference.sh;
//! scripts/bench.sh runs it all.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use sandbox::protocol::{Message, Phi, Role, Sampling};
use supervisor::config::WorkerSection;
use supervisor::inference::{spawn_manager, InferenceHandle, Status, StreamItem, WorkerLaunch};

#[derive(Debug, Parser)]
struct Args {
    /// Directory holding llama-bench and llama-batched-bench.
    #[arg(long)]
    reference: PathBuf,
    /// GGUF models to measure.
    #[arg(long = "model", required = true)]
    models: Vec<PathBuf>,
    #[arg(long, default_value_t = 2)]
    threads: u32,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Worker slots (and the reference's total context is slots × the per-slot context).
    #[arg(long, default_value_t = 16)]
    slots: u32,
    /// Concurrency levels of the aggregate measurement.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,15")]
    concurrency: Vec<u32>,
}

const GEN: u32 = 128;
const PREFILL: u32 = 512;
/// Prompt length (tokens) of the aggregate runs on the reference side.
const SHORT_PROMPT: u32 = 8;
/// KV cells per sequence: room for the prefill prompt. The reference gets the same total.
const CONTEXT_PER_SLOT: u32 = PREFILL + 16;

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.1}–{hi:.1}")
}

fn user(text: String) -> Vec<Message> {
    vec![Message {
        role: Role::User,
        content: Phi(text),
    }]
}

fn fixed(max_tokens: u32) -> Sampling {
    Sampling {
        max_tokens,
        ignore_eos: true,
        ..Sampling::default()
    }
}

/// Runs one generation to its end; returns (prompt tokens, generated, prompt ms, generate ms).
async fn run_one(h: &InferenceHandle, prompt: String, max: u32) -> Result<(u32, u32, u32, u32)> {
    let mut s = h.generate(user(prompt), fixed(max)).await?;
    loop {
        match s.next().await {
            Some(StreamItem::Token(_)) => {}
            Some(StreamItem::Done { usage, .. }) => {
                return Ok((
                    usage.prompt_tokens,
                    usage.generated_tokens,
                    usage.prompt_ms,
                    usage.generate_ms,
                ))
            }
            Some(StreamItem::Failed(e)) => bail!("generation failed: {e}"),
            None => bail!("stream ended early"),
        }
    }
}

/// A prompt of about `tokens` tokens for this model (calibrated with one untimed request).
async fn calibrated_prompt(h: &InferenceHandle, tokens: u32) -> Result<String> {
    let words = |n: usize| -> String {
        (0..n)
            .map(|i| ["patient", "stable", "ward", "review", "notes", "plan"][i % 6])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let probe = (tokens / 8).max(1) as usize;
    let (got, ..) = run_one(h, words(probe), 1).await?;
    let n = (probe as f64 * f64::from(tokens) / f64::from(got.max(1))) as usize;
    Ok(words(n.max(1)))
}

struct Ours {
    decode: f64,
    prefill: f64,
    prefill_tokens: u32,
    aggregate: Vec<f64>,
    peak_rss_kib: u64,
}

fn vm_hwm(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

async fn ours(model: &Path, args: &Args) -> Result<Ours> {
    let dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let settings = WorkerSection {
        slots: args.slots,
        context: CONTEXT_PER_SLOT,
        threads: args.threads,
        max_tokens: 4096,
        ..WorkerSection::default()
    };
    let h = spawn_manager(WorkerLaunch {
        jail: dir.join("phibox-jail"),
        program: dir.join("phibox-worker"),
        model: model.to_path_buf(),
        extra_args: vec![],
        settings,
        allow_partial_landlock: false,
        audit: None,
    });
    let status = tokio::time::timeout(
        Duration::from_secs(300),
        h.wait_for(|s| matches!(s, Status::Ready { .. } | Status::Failed(_))),
    )
    .await?;
    let Status::Ready { pid, .. } = status else {
        bail!("worker did not start: {status:?}")
    };
    // Each measurement is preceded by an untimed run of the same shape, as llama-bench warms
    // up before each test: the first use of a buffer pays its page faults.
    // Decode: one sequence, GEN tokens after a short prompt.
    run_one(&h, "Once upon a time".into(), GEN).await?;
    let (_, generated, _, gen_ms) = run_one(&h, "Once upon a time".into(), GEN).await?;
    let decode = f64::from(generated - 1) * 1000.0 / f64::from(gen_ms.max(1));
    // Prefill: about PREFILL prompt tokens, one generated.
    let prompt = calibrated_prompt(&h, PREFILL).await?;
    run_one(&h, prompt.clone(), 1).await?;
    let (prefill_tokens, _, prompt_ms, _) = run_one(&h, prompt, 1).await?;
    let prefill = f64::from(prefill_tokens) * 1000.0 / f64::from(prompt_ms.max(1));
    // Aggregate: N concurrent sequences of GEN tokens each; all tokens (prompt + generated)
    // over the wall time, like llama-batched-bench's S column.
    let mut aggregate = Vec::new();
    for &n in &args.concurrency {
        let start = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move { run_one(&h, format!("Note {i}: stable"), GEN).await })
            })
            .collect();
        let mut tokens = 0u64;
        for t in tasks {
            let (p, g, ..) = t.await??;
            tokens += u64::from(p) + u64::from(g);
        }
        aggregate.push(tokens as f64 / start.elapsed().as_secs_f64());
    }
    let peak_rss_kib = vm_hwm(pid);
    h.shutdown().await;
    Ok(Ours {
        decode,
        prefill,
        prefill_tokens,
        aggregate,
        peak_rss_kib,
    })
}

struct Reference {
    tg: f64,
    pp: f64,
    aggregate: Vec<f64>,
    peak_rss_kib: u64,
}

/// Runs a command under GNU time; returns stdout and the peak RSS in KiB.
fn timed(cmd: &mut Command) -> Result<(String, u64)> {
    let rss_file = tempfile_path("rss");
    let program = cmd.get_program().to_os_string();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_os_string()).collect();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(program)
        .args(args)
        .output()
        .context("running the reference under /usr/bin/time (Debian package time)")?;
    if !out.status.success() {
        bail!("reference failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rss = std::fs::read_to_string(&rss_file)?
        .trim()
        .parse()
        .unwrap_or(0);
    let _ = std::fs::remove_file(&rss_file);
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), rss))
}

fn tempfile_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("phibox-bench-{tag}-{}", std::process::id()))
}

fn reference(model: &Path, args: &Args) -> Result<Reference> {
    let t = args.threads.to_string();
    let (bench, _) = timed(
        Command::new(args.reference.join("llama-bench"))
            .args(["-m"])
            .arg(model)
            .args([
                "-t",
                &t,
                "-p",
                &PREFILL.to_string(),
                "-n",
                &GEN.to_string(),
                "-r",
                "1",
                "-o",
                "csv",
            ]),
    )?;
    let mut tg = f64::NAN;
    let mut pp = f64::NAN;
    let mut header: Vec<String> = Vec::new();
    for line in bench.lines() {
        let cols: Vec<String> = line
            .split(',')
            .map(|c| c.trim_matches('"').to_string())
            .collect();
        if header.is_empty() {
            header = cols;
            continue;
        }
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .and_then(|i| cols.get(i))
        };
        let (Some(np), Some(ng), Some(ts)) = (col("n_prompt"), col("n_gen"), col("avg_ts")) else {
            continue;
        };
        let ts: f64 = ts.parse().unwrap_or(f64::NAN);
        if ng == "0" {
            pp = ts;
        } else if np == "0" {
            tg = ts;
        }
    }
    let npl: Vec<String> = args.concurrency.iter().map(u32::to_string).collect();
    let ctx = (args.slots * CONTEXT_PER_SLOT).to_string();
    let (batched, rss) = timed(
        Command::new(args.reference.join("llama-batched-bench"))
            .args(["-m"])
            .arg(model)
            .args([
                "-t",
                &t,
                "-c",
                &ctx,
                "-b",
                "512",
                "-ub",
                "512",
                "-npp",
                &SHORT_PROMPT.to_string(),
                "-ntg",
                &GEN.to_string(),
                "-npl",
                &npl.join(","),
            ]),
    )?;
    // The markdown table: | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |
    let mut by_b = std::collections::BTreeMap::new();
    for line in batched.lines() {
        let cols: Vec<&str> = line
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if cols.len() >= 10 {
            if let (Ok(b), Ok(s)) = (cols[2].parse::<u32>(), cols[9].parse::<f64>()) {
                by_b.insert(b, s);
            }
        }
    }
    let aggregate = args
        .concurrency
        .iter()
        .map(|n| by_b.get(n).copied().unwrap_or(f64::NAN))
        .collect();
    Ok(Reference {
        tg,
        pp,
        aggregate,
        peak_rss_kib: rss,
    })
}

#[allow(clippy::print_stdout)]
fn main() -> Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("phibox-bench runs the worker in its sandbox: run it as root");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "# phibox-bench: {} threads, {} rounds, interleaved (phibox, llama.cpp, …)",
        args.threads, args.rounds
    );
    println!("phibox: llama.cpp vendored by llama-cpp-sys-2 0.1.161 (GGML_NATIVE off, ggml defaults: AVX2/FMA/F16C)");
    println!("reference: llama.cpp vendored by llama-cpp-python 0.3.36, same flags\n");
    for model in &args.models {
        let mut o = Vec::new();
        let mut r = Vec::new();
        for round in 0..args.rounds {
            eprintln!("{}: round {}/{}", model.display(), round + 1, args.rounds);
            o.push(rt.block_on(ours(model, &args))?);
            r.push(reference(model, &args)?);
        }
        let med = |f: &dyn Fn(usize) -> f64| -> (f64, String) {
            let v: Vec<f64> = (0..args.rounds).map(f).collect();
            (median(&v), spread(&v))
        };
        println!("## {}\n", model.display());
        println!("| measure | phibox (median, spread) | llama.cpp (median, spread) | ratio |");
        println!("|---|---|---|---|");
        let row = |name: String, ours: (f64, String), refs: (f64, String)| {
            println!(
                "| {name} | {:.1} ({}) | {:.1} ({}) | {:.2} |",
                ours.0,
                ours.1,
                refs.0,
                refs.1,
                ours.0 / refs.0
            );
        };
        row(
            format!("decode t/s ÷ llama-bench tg{GEN}"),
            med(&|i| o[i].decode),
            med(&|i| r[i].tg),
        );
        row(
            format!(
                "prefill t/s ({} tokens) ÷ llama-bench pp{PREFILL}",
                o[0].prefill_tokens
            ),
            med(&|i| o[i].prefill),
            med(&|i| r[i].pp),
        );
        for (k, n) in args.concurrency.iter().enumerate() {
            row(
                format!("aggregate t/s at {n} sequences ÷ llama-batched-bench S"),
                med(&|i| o[i].aggregate[k]),
                med(&|i| r[i].aggregate[k]),
            );
        }
        row(
            "peak RSS MiB (worker ÷ llama-batched-bench)".into(),
            med(&|i| o[i].peak_rss_kib as f64 / 1024.0),
            med(&|i| r[i].peak_rss_kib as f64 / 1024.0),
        );
        println!();
    }
    Ok(())
}
