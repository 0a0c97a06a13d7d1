//! Crash safety of the audit trail: a child process appends from 8 threads and is SIGKILLed at a
//! random moment, 200 times. After each kill the parent opens the trail as phiboxd does at
//! start-up (which moves a torn last line aside and records it) and checks that every record
//! the child saw acknowledged is there with its seq, and that the whole trail verifies with
//! the seal seed and the box's seal key. Every fifth round a torn last line (an interrupted
//! write, as a power cut can leave) is added after the kill to prove its recovery.
//!
//! `harness = false`: this binary is both the test and, with PHIBOX_AUDIT_CHILD set, the
//! appender.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use supervisor::audit::keys::{SEAL_SEED_FILE, SEAL_STATE_FILE};
use supervisor::audit::{
    segment, verify, Action, AuditLog, Entry, Options, Record, SealKey, VerifyOptions,
};
use supervisor::clock::SystemClock;

const CHILD: &str = "PHIBOX_AUDIT_CHILD";
const ROUNDS: usize = 200;
/// A fresh trail every this many rounds keeps each round's full verification short.
const ROUNDS_PER_TRAIL: usize = 25;
const THREADS: usize = 8;

fn options(data: &Path) -> Options {
    let mut o = Options::new(data, Arc::new(SystemClock));
    o.provision = true;
    o
}

/// The appender: prints `seq tag` for every acknowledged record, until killed.
fn child(data: &Path) -> ! {
    let (log, _) = AuditLog::open(options(data)).expect("child opens the trail");
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for n in 0u64.. {
                    let tag = format!("{}-{t}-{n}", std::process::id());
                    let a = log
                        .append_blocking(Entry::new(Action::ChatRequest).detail("tag", &tag))
                        .expect("append");
                    let mut o = out.lock().unwrap();
                    writeln!(o, "{} {tag}", a.seq).unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    std::process::exit(3)
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn all_records(data: &Path) -> Vec<Record> {
    supervisor::audit::reader::records(&data.join("audit"), None, None).unwrap()
}

#[allow(clippy::print_stdout)]
fn main() {
    if let Ok(dir) = std::env::var(CHILD) {
        child(Path::new(&dir));
    }
    let seed = std::env::var("PHIBOX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("audit_crash: {ROUNDS} kills, seed {seed} (rerun with PHIBOX_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let me = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut acked_total = 0usize;
    let mut torn_real = 0usize;
    let mut torn_injected = 0usize;
    let mut tmp = None;
    let mut acked: HashMap<String, u64> = HashMap::new();
    for round in 0..ROUNDS {
        if round % ROUNDS_PER_TRAIL == 0 {
            tmp = Some(tempfile::tempdir().unwrap());
            acked.clear();
        }
        let data = tmp.as_ref().unwrap().path();
        let mut child = Command::new(&me)
            .env(CHILD, data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + rng.below(60)));
        child.kill().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "round {round}: the child ended otherwise: {status:?}"
        );
        for line in out.lines() {
            let (seq, tag) = line.split_once(' ').expect("`seq tag`");
            acked.insert(tag.to_owned(), seq.parse().unwrap());
            acked_total += 1;
        }
        // Sometimes an interrupted write of a last line, as after a power cut.
        let newest = segment::list(&data.join("audit")).unwrap().pop();
        let mut injected = None;
        if round % 5 == 4 {
            if let Some(seg) = &newest {
                let torn = br#"{"seq":99999999,"timestamp":"2026-"#;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .unwrap();
                f.write_all(torn).unwrap();
                injected = Some(torn.to_vec());
                torn_injected += 1;
            }
        }
        let had_torn = newest
            .as_ref()
            .map(|s| segment::read(s).unwrap().torn)
            .unwrap_or_default();
        // Start-up, as phiboxd does it.
        let (log, opened) = AuditLog::open(options(data)).unwrap();
        match (&had_torn, &opened.torn_moved_to) {
            (Some((_, bytes)), Some(aside)) => {
                assert_eq!(&std::fs::read(aside).unwrap(), bytes, "round {round}");
                if injected.is_none() {
                    torn_real += 1;
                } else {
                    assert!(bytes.ends_with(injected.as_deref().unwrap()));
                }
            }
            (None, None) => {}
            (t, m) => panic!("round {round}: torn {t:?} but moved {m:?}"),
        }
        log.close_blocking().unwrap();
        let records = all_records(data);
        if had_torn.is_some() {
            assert!(
                records
                    .iter()
                    .any(|r| r.action == Action::TornTailRecovered),
                "round {round}: the recovery is recorded"
            );
        }
        let by_tag: HashMap<&str, u64> = records
            .iter()
            .filter_map(|r| Some((r.detail.get("tag")?.as_str(), r.seq)))
            .collect();
        for (tag, seq) in &acked {
            assert_eq!(
                by_tag.get(tag.as_str()),
                Some(seq),
                "round {round}: acknowledged record {tag} (seq {seq}) lost"
            );
        }
        let secrets = data.join("secrets");
        let report = verify(
            &data.join("audit"),
            &VerifyOptions {
                seed: Some(SealKey::load_seed(&secrets.join(SEAL_SEED_FILE)).unwrap()),
                state: Some(SealKey::load_state(&secrets.join(SEAL_STATE_FILE)).unwrap()),
            },
        );
        assert!(report.intact(), "round {round}: {report:?}");
        assert!(report.tail_checked);
    }
    assert!(
        acked_total > ROUNDS,
        "the children got records acknowledged: {acked_total}"
    );
    println!(
        "audit_crash: ok: {ROUNDS} kills, {acked_total} acknowledged records all present, \
         {torn_real} torn line(s) from kills and {torn_injected} injected, all moved aside and \
         recorded ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}
