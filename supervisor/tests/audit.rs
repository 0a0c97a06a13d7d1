//! The audit trail end to end on a real filesystem: records, keyed hashes, group commit, seals
//! every 15 minutes, at rotation and at shutdown (with a controllable clock), torn-tail
//! recovery, refusal to run on missing secrets or a cut trail, and the verifier against a
//! corpus of damaged trails (every byte changed, every record deleted, every pair swapped,
//! insertions, cut tails, deleted segments, re-chained modifications).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use jiff::SignedDuration;
use sandbox::protocol::Phi;
use supervisor::audit::keys::{SEAL_SEED_FILE, SEAL_STATE_FILE};
use supervisor::audit::record::line_hash;
use supervisor::audit::{
    verify, Action, Actor, AuditError, AuditLog, DamageKind, Entry, Options, Record, Report,
    SealKey, VerifyOptions,
};
use supervisor::clock::{Clock, ManualClock};

fn clock(at: &str) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(at.parse().unwrap()))
}

/// Options for tests that play an intruder rewriting closed segments: without the append-only
/// attribute (which only the retention test below keeps on).
fn options(data: &Path, clock: &Arc<ManualClock>) -> Options {
    let mut o = Options::new(data, clock.clone());
    o.provision = true;
    o.append_only = false;
    o
}

fn full_verify(data: &Path) -> Report {
    let secrets = data.join("secrets");
    verify(
        &data.join("audit"),
        &VerifyOptions {
            seed: Some(SealKey::load_seed(&secrets.join(SEAL_SEED_FILE)).unwrap()),
            state: Some(SealKey::load_state(&secrets.join(SEAL_STATE_FILE)).unwrap()),
        },
    )
}

fn records(data: &Path) -> Vec<Record> {
    supervisor::audit::reader::records(&data.join("audit"), None, None).unwrap()
}

fn nurse() -> Actor {
    Actor {
        user_id: Some("jsmith".into()),
        user_role: Some("nurse".into()),
        department: Some("internal_medicine".into()),
        session_id: Some("s-1".into()),
        client_ip: Some("10.0.50.23".into()),
    }
}

/// A trail over three months with interval, rotation and shutdown seals.
fn corpus(data: &Path) {
    let c = clock("2026-01-31T23:30:00Z");
    let (log, _) = AuditLog::open(options(data, &c)).unwrap();
    let add = |i: u32| {
        log.append_blocking(
            Entry::new(Action::ChatRequest)
                .actor(&nurse())
                .model("gemma")
                .prompt(log.hash_key(), &Phi(format!("prompt {i}"))),
        )
        .unwrap();
    };
    for i in 0..4 {
        add(i);
        c.advance(SignedDuration::from_mins(1));
    }
    c.advance(SignedDuration::from_mins(15));
    log.tick_blocking(); // interval seal
    for i in 4..7 {
        add(i);
        c.advance(SignedDuration::from_mins(3));
    }
    c.set("2026-02-01T00:00:30Z".parse().unwrap());
    add(7); // rotation seal in January, then February
    add(8);
    c.set("2026-03-02T08:00:00Z".parse().unwrap());
    add(9);
    add(10);
    log.close_blocking().unwrap(); // shutdown seal
}

#[test]
fn records_have_the_fields_chain_and_seal_as_specified() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let rs = records(dir.path());
    let names: Vec<String> = fs::read_dir(dir.path().join("audit"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        names,
        [
            "audit-2026-01.jsonl",
            "audit-2026-02.jsonl",
            "audit-2026-03.jsonl"
        ]
    );
    let seals: Vec<(u64, String, String)> = rs
        .iter()
        .filter(|r| r.action == Action::Seal)
        .map(|r| {
            (
                r.seq,
                r.detail["reason"].clone(),
                r.detail["key_index"].clone(),
            )
        })
        .collect();
    // The March seal closing February may be taken by the 15-minute timer (a month has passed
    // on the clock) just before the rotation would: either way February ends sealed.
    let feb_reason = seals[2].1.clone();
    assert!(
        feb_reason == "rotation" || feb_reason == "interval",
        "{seals:?}"
    );
    assert_eq!(
        seals,
        vec![
            (4, "interval".into(), "0".into()),
            (8, "rotation".into(), "1".into()),
            (11, feb_reason, "2".into()),
            (14, "shutdown".into(), "3".into()),
        ]
    );
    // Gap-free seq, every prev the hash of the line before.
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(r.seq, i as u64);
        if i > 0 {
            assert_eq!(r.prev, line_hash(rs[i - 1].to_line().as_bytes()));
        }
    }
    let first = &rs[0];
    assert_eq!(first.user_id.as_deref(), Some("jsmith"));
    assert_eq!(first.client_ip.as_deref(), Some("10.0.50.23"));
    assert_eq!(first.prompt_length_chars, Some(8));
    let hash = first.prompt_hash.as_deref().unwrap();
    assert!(hash.starts_with("hmac-sha256:"), "{hash}");
    // Keyed: a plain SHA-256 of the prompt is not what is stored.
    assert!(!hash.contains(&line_hash(b"prompt 0")[7..]));
    // Closed segments are read-only; the open one is not.
    let mode = |n: &str| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(dir.path().join("audit").join(n))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("audit-2026-01.jsonl"), 0o400);
    assert_eq!(mode("audit-2026-03.jsonl"), 0o600);
    let report = full_verify(dir.path());
    assert!(report.intact(), "{report:?}");
    assert_eq!((report.records, report.seals_verified), (15, 4));
    assert!(report.tail_checked);
}

#[test]
fn no_seal_without_new_records_and_none_before_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock("2026-05-05T10:00:00Z");
    let (log, _) = AuditLog::open(options(dir.path(), &c)).unwrap();
    log.append_blocking(Entry::new(Action::Startup)).unwrap();
    c.advance(SignedDuration::from_mins(14));
    log.tick_blocking();
    assert_eq!(records(dir.path()).len(), 1);
    c.advance(SignedDuration::from_mins(1));
    log.tick_blocking();
    assert_eq!(records(dir.path()).len(), 2, "a seal at 15 minutes");
    c.advance(SignedDuration::from_mins(60));
    log.tick_blocking();
    assert_eq!(records(dir.path()).len(), 2, "nothing new, nothing to seal");
    log.close_blocking().unwrap();
    assert_eq!(records(dir.path()).len(), 2);
    assert!(full_verify(dir.path()).intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_share_commits_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock("2026-05-05T10:00:00Z");
    let (log, _) = AuditLog::open(options(dir.path(), &c)).unwrap();
    let tasks: Vec<_> = (0..256)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                log.append(Entry::new(Action::Logout).detail("n", i.to_string()))
                    .await
                    .unwrap()
                    .seq
            })
        })
        .collect();
    let mut seqs = BTreeSet::new();
    for t in tasks {
        assert!(seqs.insert(t.await.unwrap()));
    }
    assert_eq!(seqs, (0..256).collect());
    let ns: BTreeSet<String> = records(dir.path())
        .iter()
        .map(|r| r.detail["n"].clone())
        .collect();
    assert_eq!(ns.len(), 256);
    log.close().await.unwrap();
    assert!(full_verify(dir.path()).intact());
}

#[test]
fn a_torn_last_line_is_moved_aside_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock("2026-05-05T10:00:00Z");
    let (log, _) = AuditLog::open(options(dir.path(), &c)).unwrap();
    log.append_blocking(Entry::new(Action::Startup)).unwrap();
    log.close_blocking().unwrap();
    let seg = dir.path().join("audit/audit-2026-05.jsonl");
    let mut bytes = fs::read(&seg).unwrap();
    let whole = bytes.len() as u64;
    bytes.extend_from_slice(br#"{"seq":2,"timestamp":"2026-05-05T10:0"#);
    fs::write(&seg, &bytes).unwrap();
    let damaged = full_verify(dir.path());
    assert_eq!(damaged.damage.unwrap().kind, DamageKind::TornLine);

    let (log, opened) = AuditLog::open(options(dir.path(), &c)).unwrap();
    let aside = opened.torn_moved_to.expect("the torn line was found");
    assert_eq!(
        fs::read(&aside).unwrap(),
        br#"{"seq":2,"timestamp":"2026-05-05T10:0"#
    );
    let rs = records(dir.path());
    let note = rs.last().unwrap();
    assert_eq!(note.action, Action::TornTailRecovered);
    assert_eq!(
        note.seq, 2,
        "after the startup record and the shutdown seal"
    );
    assert_eq!(note.detail["offset"], whole.to_string());
    assert_eq!(note.detail["bytes"], "37");
    log.close_blocking().unwrap();
    let report = full_verify(dir.path());
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.seals, 2);
}

#[test]
fn refuses_to_run_without_secrets_or_on_a_cut_trail() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock("2026-05-05T10:00:00Z");
    let mut o = options(dir.path(), &c);
    o.provision = false;
    assert!(matches!(
        AuditLog::open(o.clone()),
        Err(AuditError::NotProvisioned(_))
    ));
    corpus(dir.path());
    // The last segment (with the shutdown seal) removed: the seal key is ahead of the trail.
    fs::remove_file(dir.path().join("audit/audit-2026-03.jsonl")).unwrap();
    assert!(matches!(
        AuditLog::open(o.clone()),
        Err(AuditError::TrailBehindKey { trail: 3, state: 4 })
    ));
    fs::remove_file(dir.path().join("secrets/audit-hmac-key")).unwrap();
    o.provision = true;
    assert!(matches!(
        AuditLog::open(o),
        Err(AuditError::SecretsMissing(_))
    ));
}

// ---- the damage corpus ----

/// The trail as (segment path, lines).
fn load(data: &Path) -> Vec<(PathBuf, Vec<Vec<u8>>)> {
    supervisor::audit::segment::list(&data.join("audit"))
        .unwrap()
        .into_iter()
        .map(|s| {
            let lines = supervisor::audit::segment::read(&s)
                .unwrap()
                .lines
                .into_iter()
                .map(|(_, l)| l)
                .collect();
            (s.path, lines)
        })
        .collect()
}

fn store(trail: &[(PathBuf, Vec<Vec<u8>>)]) {
    for (path, lines) in trail {
        let mut bytes = Vec::new();
        for l in lines {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
        }
        fs::write(path, bytes).unwrap();
    }
}

/// What an intruder without the seal keys can do: renumber and re-chain every record.
fn rechain(trail: &mut [(PathBuf, Vec<Vec<u8>>)]) {
    let mut prev = supervisor::audit::record::GENESIS.to_owned();
    let mut seq = 0;
    for (_, lines) in trail.iter_mut() {
        for l in lines.iter_mut() {
            let mut r = Record::parse(l).unwrap();
            r.seq = seq;
            r.prev = prev.clone();
            *l = r.to_line().into_bytes();
            prev = line_hash(l);
            seq += 1;
        }
    }
}

/// Applies a change to a copy of the trail, verifies, restores; returns the damage.
fn damaged(
    data: &Path,
    original: &[(PathBuf, Vec<Vec<u8>>)],
    change: impl FnOnce(&mut Vec<(PathBuf, Vec<Vec<u8>>)>),
) -> supervisor::audit::Damage {
    let mut t = original.to_vec();
    change(&mut t);
    for (p, _) in original {
        let _ = fs::remove_file(p);
    }
    store(&t);
    let report = full_verify(data);
    for (p, _) in &t {
        let _ = fs::remove_file(p);
    }
    store(original);
    report.damage.expect("damage must be detected")
}

fn seq_at(trail: &[(PathBuf, Vec<Vec<u8>>)], s: usize, i: usize) -> u64 {
    Record::parse(&trail[s].1[i]).unwrap().seq
}

#[test]
fn every_changed_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let trail = load(dir.path());
    let mut tried = 0;
    for (s, (path, lines)) in trail.iter().enumerate() {
        let mut file = Vec::new();
        let mut owner = Vec::new(); // the seq owning each byte (its newline included)
        for (i, l) in lines.iter().enumerate() {
            file.extend_from_slice(l);
            file.push(b'\n');
            owner.extend(std::iter::repeat_n(seq_at(&trail, s, i), l.len() + 1));
        }
        for pos in 0..file.len() {
            let mut bytes = file.clone();
            bytes[pos] ^= 0x01;
            fs::write(path, &bytes).unwrap();
            let report = full_verify(dir.path());
            let d = report
                .damage
                .unwrap_or_else(|| panic!("byte {pos} of {} not detected", path.display()));
            assert!(
                d.seq <= owner[pos],
                "byte {pos}: reported seq {} after the changed record {}",
                d.seq,
                owner[pos]
            );
            tried += 1;
        }
        fs::write(path, &file).unwrap();
    }
    assert!(tried > 3000, "{tried}");
    assert!(full_verify(dir.path()).intact());
}

#[test]
fn every_deleted_swapped_or_inserted_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let trail = load(dir.path());
    for s in 0..trail.len() {
        for i in 0..trail[s].1.len() {
            let seq = seq_at(&trail, s, i);
            let d = damaged(dir.path(), &trail, |t| {
                t[s].1.remove(i);
            });
            let last = s + 1 == trail.len() && i + 1 == trail[s].1.len();
            let want = if seq == 0 {
                DamageKind::MissingStart
            } else if last {
                DamageKind::TruncatedTail
            } else {
                DamageKind::Missing
            };
            assert_eq!((d.kind, d.seq), (want, seq), "deleting seq {seq}: {d}");

            if i + 1 < trail[s].1.len() {
                let d = damaged(dir.path(), &trail, |t| t[s].1.swap(i, i + 1));
                assert_eq!(
                    (d.kind, d.seq),
                    (DamageKind::Reordered, seq),
                    "swap {seq}: {d}"
                );
            }

            // A copy of another record inserted before this one.
            let d = damaged(dir.path(), &trail, |t| {
                let copy = t[0].1[1].clone();
                t[s].1.insert(i, copy);
            });
            assert!(d.seq <= seq, "insert before {seq}: {d}");
            assert!(
                matches!(d.kind, DamageKind::Reordered | DamageKind::Modified),
                "insert before {seq}: {d}"
            );
        }
    }
}

#[test]
fn re_chained_insertions_and_modifications_are_caught_by_the_seals() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let trail = load(dir.path());
    // A forged record inserted and everything renumbered and re-chained.
    let d = damaged(dir.path(), &trail, |t| {
        let mut forged = Record::parse(&t[0].1[1]).unwrap();
        forged.user_id = Some("someone_else".into());
        t[0].1.insert(2, forged.to_line().into_bytes());
        rechain(t);
    });
    assert_eq!((d.kind, d.seq), (DamageKind::BadSeal, 0), "{d}");
    // Each non-seal record modified and the chain recomputed.
    for s in 0..trail.len() {
        for i in 0..trail[s].1.len() {
            let r = Record::parse(&trail[s].1[i]).unwrap();
            if r.action == Action::Seal {
                continue;
            }
            let d = damaged(dir.path(), &trail, |t| {
                let mut r = Record::parse(&t[s].1[i]).unwrap();
                r.prompt_length_chars = Some(1);
                t[s].1[i] = r.to_line().into_bytes();
                rechain(t);
            });
            assert_eq!(d.kind, DamageKind::BadSeal, "modified seq {}: {d}", r.seq);
            assert!(d.seq <= r.seq, "{d}");
        }
    }
    // Without the seed the same change passes: the seals are what catch it.
    let mut t = trail.clone();
    let mut r = Record::parse(&t[0].1[0]).unwrap();
    r.user_id = Some("x".into());
    t[0].1[0] = r.to_line().into_bytes();
    rechain(&mut t);
    store(&t);
    assert!(verify(&dir.path().join("audit"), &VerifyOptions::default()).intact());
    store(&trail);
}

#[test]
fn cut_tails_and_deleted_segments_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let trail = load(dir.path());
    let last = trail.len() - 1;
    for k in 1..=trail[last].1.len() {
        let d = damaged(dir.path(), &trail, |t| {
            let n = t[last].1.len();
            t[last].1.truncate(n - k);
        });
        assert_eq!(d.kind, DamageKind::TruncatedTail, "cut {k}: {d}");
    }
    // A cut in the middle of the last line.
    let seg = &trail[last].0;
    let bytes = fs::read(seg).unwrap();
    fs::write(seg, &bytes[..bytes.len() - 10]).unwrap();
    assert_eq!(
        full_verify(dir.path()).damage.unwrap().kind,
        DamageKind::TornLine
    );
    fs::write(seg, &bytes).unwrap();
    let kinds: Vec<(DamageKind, u64)> = (0..trail.len())
        .map(|s| {
            let d = damaged(dir.path(), &trail, |t| {
                t[s].1.clear();
                let p = t[s].0.clone();
                t.retain(|(q, _)| *q != p);
            });
            (d.kind, d.seq)
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (DamageKind::MissingStart, 0),
            (DamageKind::Missing, 9),
            (DamageKind::TruncatedTail, 12),
        ]
    );
    assert!(full_verify(dir.path()).intact());
}

#[test]
fn a_foreign_or_rolled_back_seal_state_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let secrets = dir.path().join("secrets");
    let state = secrets.join(SEAL_STATE_FILE);
    let saved = fs::read(&state).unwrap();
    let other = SealKey::generate_seed().unwrap().advanced_to(4).unwrap();
    other.save_state(&state).unwrap();
    assert_eq!(
        full_verify(dir.path()).damage.unwrap().kind,
        DamageKind::ForeignState
    );
    fs::write(&state, saved).unwrap();
}

#[test]
fn the_cli_exits_0_intact_1_damaged_2_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_phibox"));
    let audit = dir.path().join("audit");
    let seed = dir.path().join("secrets").join(SEAL_SEED_FILE);
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(&bin).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["audit".as_ref(), "verify".as_ref(), audit.as_os_str()]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("INTACT") && out.contains("seals: not checked"),
        "{out}"
    );
    let with_seed = [
        "audit".as_ref(),
        "verify".as_ref(),
        audit.as_os_str(),
        "--seal-key".as_ref(),
        seed.as_os_str(),
    ];
    let (code, out) = run(&with_seed);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("4 MAC(s) verified") && out.contains("tail: checked"),
        "{out}"
    );
    let seg = audit.join("audit-2026-02.jsonl");
    let text = fs::read_to_string(&seg).unwrap();
    fs::write(&seg, text.replacen("jsmith", "jsmitH", 1)).unwrap();
    let (code, out) = run(&with_seed);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("DAMAGED: first bad seq 9: modified record"),
        "{out}"
    );
    let (code, _) = run(&[
        "audit".as_ref(),
        "verify".as_ref(),
        audit.as_os_str(),
        "--seal-key".as_ref(),
        "/nonexistent".as_ref(),
    ]);
    assert_eq!(code, Some(2));
}

#[test]
fn prompt_hashes_verify_a_stored_text() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock("2026-05-05T10:00:00Z");
    let (log, _) = AuditLog::open(options(dir.path(), &c)).unwrap();
    let text = Phi("Pt. 67F, CKD stage 3, summarise".to_owned());
    log.append_blocking(Entry::new(Action::ChatRequest).prompt(log.hash_key(), &text))
        .unwrap();
    let r = &records(dir.path())[0];
    let recorded = r.prompt_hash.as_deref().unwrap();
    assert!(log.hash_key().matches(&text.0, recorded));
    assert!(!log
        .hash_key()
        .matches("Pt. 67F, CKD stage 4, summarise", recorded));
    let raw = fs::read_to_string(dir.path().join("audit/audit-2026-05.jsonl")).unwrap();
    assert!(!raw.contains("CKD"), "no prompt text in the trail");
    assert_eq!(r.prompt_length_chars, Some(31));
}

#[test]
fn a_torn_copy_left_pending_by_a_crash_is_recorded_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock("2026-05-05T10:00:00Z");
    let (log, _) = AuditLog::open(options(dir.path(), &c)).unwrap();
    log.append_blocking(Entry::new(Action::Startup)).unwrap();
    log.close_blocking().unwrap();
    // A crash after the torn line was copied and cut, before its record was written.
    let torn = dir.path().join("audit/torn");
    fs::create_dir_all(&torn).unwrap();
    fs::write(
        torn.join("audit-2026-05.jsonl.120.1.torn.pending"),
        b"{\"seq\":2,",
    )
    .unwrap();
    let (log, _) = AuditLog::open(options(dir.path(), &c)).unwrap();
    log.close_blocking().unwrap();
    let note = records(dir.path())
        .into_iter()
        .find(|r| r.action == Action::TornTailRecovered)
        .expect("recorded");
    assert_eq!(note.detail["recorded_after_restart"], "true");
    assert_eq!(note.detail["bytes"], "9");
    assert!(torn.join("audit-2026-05.jsonl.120.1.torn").exists());
    assert!(!torn.join("audit-2026-05.jsonl.120.1.torn.pending").exists());
    assert!(full_verify(dir.path()).intact());
}

#[test]
fn a_stored_transcript_is_checked_against_the_sessions_keyed_hashes() {
    use supervisor::audit::transcript::{check, Turn};
    let dir = tempfile::tempdir().unwrap();
    let c = clock("2026-05-05T10:00:00Z");
    let (log, _) = AuditLog::open(options(dir.path(), &c)).unwrap();
    let key = log.hash_key();
    let turns = [
        (
            "Summarise: 71M, NSTEMI, PCI to LAD",
            "71-year-old man with NSTEMI…",
        ),
        ("Draft the discharge letter", "Dear colleague, …"),
    ];
    for (session, (user, response)) in ["other", "s-7", "s-7"]
        .iter()
        .zip([turns[0], turns[0], turns[1]].iter())
    {
        let actor = Actor {
            session_id: Some((*session).into()),
            ..nurse()
        };
        let req = log
            .append_blocking(
                Entry::new(Action::ChatRequest)
                    .actor(&actor)
                    .prompt(key, &Phi((*user).into())),
            )
            .unwrap();
        log.append_blocking(
            Entry::new(Action::ChatResponseCompleted)
                .actor(&actor)
                .response(key, &Phi((*response).into()))
                .detail("request_seq", req.seq.to_string()),
        )
        .unwrap();
    }
    log.close_blocking().unwrap();
    let rs = supervisor::audit::reader::records(&dir.path().join("audit"), None, None).unwrap();
    let transcript = |t: &[(&str, &str)]| -> Vec<Turn> {
        t.iter()
            .map(|(u, r)| Turn {
                user: Phi((*u).into()),
                response: Phi((*r).into()),
            })
            .collect()
    };
    let ok = check(log.hash_key(), "s-7", &transcript(&turns), &rs);
    assert!(ok.matches(), "{ok:?}");
    assert_eq!(ok.turns[0].request_seq, Some(2));
    assert_eq!(ok.turns[1].response_seq, Some(5));
    // An edited response, a missing turn, another session's text.
    let edited = check(
        log.hash_key(),
        "s-7",
        &transcript(&[
            turns[0],
            ("Draft the discharge letter", "Dear colleague, (edited)"),
        ]),
        &rs,
    );
    assert!(!edited.matches());
    assert!(edited.turns[1].user_matches && !edited.turns[1].response_matches);
    let short = check(log.hash_key(), "s-7", &transcript(&turns[..1]), &rs);
    assert!(!short.matches());
    assert_eq!(short.unmatched_requests, vec![4]);
    assert!(!check(log.hash_key(), "other", &transcript(&turns), &rs).matches());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_younger_than_six_years_leaves_and_an_export_keeps_the_trail_verifiable() {
    use supervisor::audit::retention::{export_oldest, Retention, RetentionError};
    // On disk (ext4 here), not a tmpfs /tmp: the append-only attribute needs a real filesystem.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let c = clock("2019-01-10T09:00:00Z");
    let mut o = options(dir.path(), &c);
    o.append_only = true;
    let (log, _) = AuditLog::open(o).unwrap();
    log.append(Entry::new(Action::Startup)).await.unwrap();
    log.append(Entry::new(Action::LoginSuccess).actor(&nurse()))
        .await
        .unwrap();
    c.set("2019-02-10T09:00:00Z".parse().unwrap());
    log.append(Entry::new(Action::Logout).actor(&nurse()))
        .await
        .unwrap();
    c.set("2025-01-20T09:00:00Z".parse().unwrap());
    log.append(Entry::new(Action::LoginSuccess).actor(&nurse()))
        .await
        .unwrap();
    let audit = dir.path().join("audit");
    let jan = audit.join("audit-2019-01.jsonl");

    // Closed segments are append-only: not even root deletes them without clearing it first.
    let lsattr = Command::new("lsattr").arg(&jan).output().unwrap();
    let attrs = String::from_utf8_lossy(&lsattr.stdout);
    assert!(
        attrs.split_whitespace().next().unwrap_or("").contains('a'),
        "closed segment without the append-only attribute: {attrs}"
    );
    assert_eq!(
        fs::remove_file(&jan).unwrap_err().raw_os_error(),
        Some(nix::libc::EPERM)
    );

    assert!(matches!(
        Retention::new(5, false),
        Err(RetentionError::BelowMinimum(5))
    ));
    assert_eq!(Retention::new(5, true).unwrap().years(), 5);
    let six = Retention::default();
    assert_eq!(six.years(), 6);
    let archive = dir.path().join("archive");
    // Six years after January 2019 ends is 2025-02-01: not yet.
    let early = export_oldest(&log, &audit, &archive, &six, c.now()).await;
    assert!(
        matches!(early, Err(RetentionError::TooYoung { .. })),
        "{early:?}"
    );
    assert!(jan.exists());

    c.set("2025-02-01T00:00:00Z".parse().unwrap());
    let done = export_oldest(&log, &audit, &archive, &six, c.now())
        .await
        .unwrap();
    assert_eq!(done.segment, "audit-2019-01.jsonl");
    assert_eq!(done.records, 3, "two records and the rotation seal");
    assert!(!jan.exists());
    assert!(archive.join("audit-2019-01.jsonl").exists());
    // February 2019 is not releasable before March 2025.
    assert!(matches!(
        export_oldest(&log, &audit, &archive, &six, c.now()).await,
        Err(RetentionError::TooYoung { .. })
    ));
    log.close().await.unwrap();
    let report = full_verify(dir.path());
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.starts_after_export, Some(3));
    let export = records(dir.path())
        .into_iter()
        .find(|r| r.action == Action::AuditExport)
        .unwrap();
    assert_eq!(export.detail["segment"], "audit-2019-01.jsonl");
    assert_eq!(export.detail["retention_years"], "6");

    // A segment removed without an export record is a missing start.
    let feb = audit.join("audit-2019-02.jsonl");
    supervisor::audit::attr::clear_append_only(&feb).unwrap();
    fs::remove_file(&feb).unwrap();
    let d = full_verify(dir.path()).damage.unwrap();
    assert_eq!(d.kind, DamageKind::MissingStart, "{d}");
    for e in fs::read_dir(&audit).unwrap().flatten() {
        let _ = supervisor::audit::attr::clear_append_only(&e.path());
    }
}

#[test]
fn the_review_reports_what_the_guide_asks_to_look_for() {
    use supervisor::audit::review::{review, FindingKind, ReviewOptions};
    let dir = tempfile::tempdir().unwrap();
    let c = clock("2026-10-26T10:00:00Z"); // the Monday before: baseline only
    let (log, _) = AuditLog::open(options(dir.path(), &c)).unwrap();
    let key_chat = |actor: &Actor, chars: usize| {
        log.append_blocking(
            Entry::new(Action::ChatRequest)
                .actor(actor)
                .prompt(log.hash_key(), &Phi("x".repeat(chars))),
        )
        .unwrap()
        .seq
    };
    let at = |t: &str| c.set(t.parse().unwrap());
    let jsmith = nurse();
    let adoe = Actor {
        user_id: Some("adoe".into()),
        ..nurse()
    };
    let biller = Actor {
        user_id: Some("bbill".into()),
        department: Some("billing".into()),
        ..nurse()
    };
    at("2026-10-26T03:00:00Z");
    key_chat(&jsmith, 800); // off-hours, but before the period
    for i in 0..6 {
        at(&format!("2026-11-02T10:{:02}:00Z", i * 5));
        key_chat(&jsmith, 780 + i * 10);
    }
    at("2026-11-02T10:40:00Z");
    let big_for_him = key_chat(&jsmith, 4000);
    at("2026-11-02T11:00:00Z");
    let absolute = key_chat(&adoe, 25_000);
    at("2026-11-03T02:30:00Z");
    let night = key_chat(&jsmith, 800);
    at("2026-11-04T09:00:00Z");
    let billing = key_chat(&biller, 500);
    let add = |e: Entry| log.append_blocking(e).unwrap().seq;
    let failed = add(Entry::new(Action::LoginFailure)
        .actor(&adoe)
        .detail("reason", "bad_password"));
    let lockout = add(Entry::new(Action::Lockout).actor(&adoe));
    let glass = add(Entry::new(Action::BreakGlassLogin).actor(&Actor {
        user_id: Some("emergency1".into()),
        ..Actor::default()
    }));
    let usb = add(Entry::new(Action::UsbInserted)
        .detail("vendor", "0781")
        .detail("product", "5581")
        .detail("serial", "4C530001"));
    let crash = add(Entry::new(Action::WorkerCrash).detail("kind", "crashed"));
    at("2026-11-07T11:00:00Z"); // a Saturday
    let saturday = add(Entry::new(Action::LoginSuccess).actor(&jsmith));
    at("2026-11-10T11:00:00Z");
    add(Entry::new(Action::LoginFailure).actor(&adoe)); // after the period
    log.close_blocking().unwrap();

    let rs = supervisor::audit::reader::records(&dir.path().join("audit"), None, None).unwrap();
    let mut opts = ReviewOptions::new(
        "2026-11-02T00:00:00Z".parse().unwrap(),
        "2026-11-09T00:00:00Z".parse().unwrap(),
    );
    opts.expected_departments = Some(
        ["internal_medicine", "nursing"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    );
    let report = review(&rs, &opts);
    let got: Vec<(FindingKind, u64)> = report.findings.iter().map(|f| (f.kind, f.seq)).collect();
    let mut want = vec![
        (FindingKind::LargePrompt, big_for_him),
        (FindingKind::LargePrompt, absolute),
        (FindingKind::OffHours, night),
        (FindingKind::UnexpectedDepartment, billing),
        (FindingKind::FailedLogin, failed),
        (FindingKind::Lockout, lockout),
        (FindingKind::BreakGlass, glass),
        (FindingKind::UsbEvent, usb),
        (FindingKind::WorkerCrash, crash),
        (FindingKind::OffHours, saturday),
    ];
    want.sort_by_key(|(_, s)| *s);
    let mut got_sorted = got.clone();
    got_sorted.sort_by_key(|(_, s)| *s);
    assert_eq!(got_sorted, want, "{:#?}", report.findings);
    let why = |seq| &report.findings.iter().find(|f| f.seq == seq).unwrap().why;
    assert!(
        why(big_for_him).contains("this user's median"),
        "{}",
        why(big_for_him)
    );
    assert!(why(absolute).contains("absolute threshold"));
    assert!(why(usb).contains("serial 4C530001"));

    // The command line, in its three formats.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_phibox"));
    let run = |format: &str| {
        let out = Command::new(&bin)
            .args(["audit", "review"])
            .arg(dir.path().join("audit"))
            .args([
                "--since",
                "2026-11-02",
                "--until",
                "2026-11-09",
                "--department",
                "internal_medicine",
                "--department",
                "nursing",
                "--format",
                format,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run("text");
    assert!(
        text.contains("10 finding(s)") && text.contains("Break-glass uses (1)"),
        "{text}"
    );
    let csv = run("csv");
    assert_eq!(csv.lines().count(), 11, "{csv}");
    assert!(csv.starts_with("kind,seq,timestamp,action,user_id"));
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(json["findings"].as_array().unwrap().len(), 10);
    assert_eq!(json["counts"]["off_hours"], 2);
    // Bad input is refused with exit code 2.
    let out = Command::new(&bin)
        .args(["audit", "review"])
        .arg(dir.path().join("audit"))
        .args(["--since", "last week"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn compressed_closed_segments_verify_and_damage_inside_them_is_found() {
    use std::io::{Read, Write};
    use supervisor::audit::retention::compress_closed;
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let audit = dir.path().join("audit");
    // An interrupted earlier run left a bogus compressed copy beside January: ignored.
    fs::write(audit.join("audit-2026-01.jsonl.gz"), b"not gzip").unwrap();
    assert!(full_verify(dir.path()).intact());
    let done = compress_closed(&audit).unwrap();
    assert_eq!(done, ["audit-2026-01.jsonl", "audit-2026-02.jsonl"]);
    assert!(!audit.join("audit-2026-01.jsonl").exists());
    assert!(audit.join("audit-2026-01.jsonl.gz").exists());
    assert!(
        audit.join("audit-2026-03.jsonl").exists(),
        "the open segment stays"
    );
    let report = full_verify(dir.path());
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, 15);
    // A record changed inside a compressed segment (and recompressed) is still found.
    let gz = audit.join("audit-2026-02.jsonl.gz");
    supervisor::audit::attr::clear_append_only(&gz).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(fs::File::open(&gz).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(text.replacen("jsmith", "jsmitH", 1).as_bytes())
        .unwrap();
    fs::write(&gz, enc.finish().unwrap()).unwrap();
    let d = full_verify(dir.path()).damage.unwrap();
    assert_eq!((d.kind, d.seq), (DamageKind::Modified, 9), "{d}");
    for e in fs::read_dir(&audit).unwrap().flatten() {
        let _ = supervisor::audit::attr::clear_append_only(&e.path());
    }
}
