//! `phibox-audit-bench`: durable audit records per second with 1, 16 and 256 concurrent
//! appenders, against the reference a careful hand-written logger would be — a plain loop of
//! `write` + `fdatasync` of one record-sized line — on the same filesystem, in the same run,
//! interleaved over several rounds. Prints medians, spreads and ratios. A program, not a test.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use sandbox::protocol::Phi;
use supervisor::audit::{Action, Actor, AuditLog, Entry, Options};
use supervisor::clock::SystemClock;

#[derive(Debug, Parser)]
struct Args {
    /// A directory on the filesystem to measure (a temporary directory is made inside it).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    concurrency: Vec<usize>,
}

fn entry(log: &AuditLog, n: u64) -> Entry {
    Entry::new(Action::ChatRequest)
        .actor(&Actor {
            user_id: Some("jsmith".into()),
            user_role: Some("nurse".into()),
            department: Some("internal_medicine".into()),
            session_id: Some(format!("s-{n}")),
            client_ip: Some("10.0.50.23".into()),
        })
        .model("gemma-3-270m")
        .prompt(log.hash_key(), &Phi("x".repeat(847)))
}

/// The reference: one line, `write`, `fdatasync`, repeat.
fn reference(dir: &Path, line: &[u8], secs: f64) -> Result<f64> {
    let path = dir.join("reference.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(line)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok(rate)
}

async fn ours(dir: &Path, appenders: usize, secs: f64) -> Result<f64> {
    let data = dir.join(format!("trail-{appenders}"));
    let mut o = Options::new(&data, Arc::new(SystemClock));
    o.provision = true;
    let (log, _) = AuditLog::open(o)?;
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|i| {
            let (log, stop, count) = (log.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                let mut n = i as u64;
                while !stop.load(Ordering::Relaxed) {
                    log.append(entry(&log, n)).await?;
                    count.fetch_add(1, Ordering::Relaxed);
                    n += appenders as u64;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    log.close().await?;
    std::fs::remove_dir_all(data)?;
    Ok(rate)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> Result<()> {
    let args = Args::parse();
    let tmp = tempfile::Builder::new()
        .prefix("phibox-audit-bench-")
        .tempdir_in(&args.dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // A record line of the size the trail writes.
    let line = {
        let (log, _) = {
            let mut o = Options::new(&tmp.path().join("probe"), Arc::new(SystemClock));
            o.provision = true;
            AuditLog::open(o)?
        };
        let mut l = entry(&log, 0).into_record_for_size().into_bytes();
        l.push(b'\n');
        log.close_blocking()?;
        l
    };
    println!(
        "# phibox-audit-bench: {} rounds of {} s, interleaved, on {} ({}-byte records)",
        args.rounds,
        args.seconds,
        args.dir.display(),
        line.len()
    );
    let mut refs = Vec::new();
    let mut mine = vec![Vec::new(); args.concurrency.len()];
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        refs.push(reference(tmp.path(), &line, args.seconds)?);
        for (k, &c) in args.concurrency.iter().enumerate() {
            mine[k].push(rt.block_on(ours(tmp.path(), c, args.seconds))?);
        }
    }
    let r = median(&refs);
    println!("\n| measure | records/s (median) | spread | ÷ write+fdatasync loop |");
    println!("|---|---|---|---|");
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.0}–{hi:.0}")
    };
    println!(
        "| write+fdatasync loop (reference) | {r:.0} | {} | 1.00 |",
        spread(&refs)
    );
    for (k, c) in args.concurrency.iter().enumerate() {
        let m = median(&mine[k]);
        println!(
            "| audit trail, {c} appender(s) | {m:.0} | {} | {:.2} |",
            spread(&mine[k]),
            m / r
        );
    }
    Ok(())
}
