//! Real inference on generated models, in the real sandbox. Needs root.

mod support;

use std::process::Stdio;
use std::time::Duration;

use sandbox::protocol::{Event, Finish};
use support::*;

#[test]
fn loads_reports_facts_and_generates_deterministically() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let mut c = start(
        &model,
        &["--slots", "4", "--threads", "2"],
        Stdio::inherit(),
    );
    let ready = c.ready();
    let Event::Ready { facts, slots } = ready else {
        panic!("{ready:?}")
    };
    assert_eq!(slots, 4);
    assert_eq!(facts.architecture, "llama");
    assert_eq!(facts.quantization, "Q8_0");
    assert_eq!(facts.context_length, 512);
    assert_eq!(facts.vocab_size, 512);
    assert_eq!(
        facts.parameters,
        models::testmodel::LlamaConfig::tiny().parameters()
    );
    assert_eq!(facts.chat_template, "model");

    c.generate(1, "hello there", greedy(24));
    let a = c.collect(&[1], Duration::from_secs(60)).remove(0);
    c.generate(2, "hello there", greedy(24));
    let b = c.collect(&[2], Duration::from_secs(60)).remove(0);
    assert_eq!(a.text, b.text, "greedy output is deterministic");
    match a.end {
        Some(End::Done(finish, usage)) => {
            assert!(matches!(finish, Finish::Length | Finish::EndOfText));
            assert!(usage.prompt_tokens > 3, "{usage:?}");
            assert!(usage.generated_tokens >= 1);
        }
        other => panic!("{other:?}"),
    }
}

fn fixed(max_tokens: u32) -> sandbox::protocol::Sampling {
    sandbox::protocol::Sampling {
        ignore_eos: true,
        ..greedy(max_tokens)
    }
}

#[test]
fn concurrent_requests_give_the_same_outputs_as_sequential_ones() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let prompts: Vec<String> = (0..8)
        .map(|i| format!("note {i}: patient stable, {}", "x".repeat(i * 3)))
        .collect();

    let mut c = start(
        &model,
        &["--slots", "8", "--threads", "2"],
        Stdio::inherit(),
    );
    assert!(matches!(c.ready(), Event::Ready { .. }));
    let mut sequential = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        c.generate(i as u64, p, fixed(64));
        sequential.push(c.collect(&[i as u64], Duration::from_secs(60)).remove(0));
    }
    let ids: Vec<u64> = (100..108).collect();
    for (id, p) in ids.iter().zip(&prompts) {
        c.generate(*id, p, fixed(64));
    }
    let concurrent = c.collect(&ids, Duration::from_secs(120));
    for (s, b) in sequential.iter().zip(&concurrent) {
        assert_eq!(s.text, b.text, "request {} differs when batched", b.id);
        assert!(
            matches!(b.end, Some(End::Done(Finish::Length, ref u)) if u.generated_tokens == 64),
            "{b:?}"
        );
    }
    let distinct: std::collections::BTreeSet<&str> =
        sequential.iter().map(|o| o.text.as_str()).collect();
    assert!(
        distinct.len() > 1,
        "different prompts should give different outputs: {distinct:?}"
    );
}

#[test]
fn cancelling_frees_the_slot_for_the_next_request() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let mut c = start(
        &model,
        &["--slots", "1", "--threads", "2"],
        Stdio::inherit(),
    );
    assert!(matches!(c.ready(), Event::Ready { .. }));
    c.generate(1, "a long answer please", fixed(400));
    c.generate(2, "short", fixed(4));
    // Let request 1 start, then cancel it; request 2 is waiting for its slot.
    let first = c
        .next(Duration::from_secs(30))
        .expect("a token of request 1");
    assert!(matches!(first, Event::Token { id: 1, .. }), "{first:?}");
    c.send(&sandbox::protocol::Request::Cancel { id: 1 });
    let out = c.collect(&[1, 2], Duration::from_secs(60));
    match &out[0].end {
        Some(End::Done(Finish::Cancelled, u)) => assert!(u.generated_tokens < 400, "{u:?}"),
        other => panic!("request 1: {other:?}"),
    }
    assert!(
        matches!(out[1].end, Some(End::Done(Finish::Length, _))),
        "{:?}",
        out[1]
    );
    // Cancelling something already finished is harmless.
    c.send(&sandbox::protocol::Request::Cancel { id: 1 });
    c.generate(3, "again", fixed(4));
    let again = c.collect(&[3], Duration::from_secs(60));
    assert!(matches!(again[0].end, Some(End::Done(Finish::Length, _))));
}

#[test]
fn bad_requests_get_clear_errors_before_any_decode() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let mut c = start(
        &model,
        &["--slots", "2", "--threads", "2", "--context", "128"],
        Stdio::inherit(),
    );
    assert!(matches!(c.ready(), Event::Ready { .. }));
    let long = "word ".repeat(400);
    c.generate(1, &long, greedy(8));
    let mut hot = greedy(8);
    hot.temperature = 9.0;
    c.generate(2, "x", hot);
    c.generate(3, "nul\0byte", greedy(8));
    let out = c.collect(&[1, 2, 3], Duration::from_secs(30));
    use sandbox::protocol::{ParamError, RequestError};
    match &out[0].end {
        Some(End::Failed(RequestError::PromptTooLong { tokens, context })) => {
            assert!(*tokens > 128, "{tokens}");
            assert_eq!(*context, 128);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        out[1].end,
        Some(End::Failed(RequestError::Params(ParamError::Temperature)))
    );
    assert_eq!(
        out[2].end,
        Some(End::Failed(RequestError::Params(ParamError::Text)))
    );
    assert!(out.iter().all(|o| o.tokens == 0));
    // Sampling with temperature works and stays within max_tokens.
    let mut warm = fixed(16);
    warm.temperature = 0.8;
    warm.seed = 42;
    c.generate(4, "hello", warm.clone());
    let a = c.collect(&[4], Duration::from_secs(30)).remove(0);
    c.generate(5, "hello", warm);
    let b = c.collect(&[5], Duration::from_secs(30)).remove(0);
    assert_eq!(a.text, b.text, "the same seed gives the same sample");
}

#[test]
fn stop_strings_end_generation_and_are_not_sent() {
    require_root();
    let t = tempfile::tempdir().unwrap();
    let model = tiny_model(t.path());
    let mut c = start(&model, &["--threads", "2"], Stdio::inherit());
    assert!(matches!(c.ready(), Event::Ready { .. }));
    c.generate(1, "tell me", fixed(48));
    let full = c.collect(&[1], Duration::from_secs(30)).remove(0);
    // Stop at a piece of the text the model is known to produce.
    let chars: Vec<char> = full.text.chars().collect();
    assert!(chars.len() > 8, "{:?}", full.text);
    let stop: String = chars[4..7].iter().collect();
    let mut s = fixed(48);
    s.stop = vec![stop.clone()];
    c.generate(2, "tell me", s);
    let cut = c.collect(&[2], Duration::from_secs(30)).remove(0);
    assert!(
        matches!(cut.end, Some(End::Done(Finish::StopString, _))),
        "{cut:?}"
    );
    let expected = &full.text[..full.text.find(&stop).unwrap()];
    assert_eq!(cut.text, expected);
}
