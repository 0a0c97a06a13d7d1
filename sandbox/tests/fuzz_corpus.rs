//! Replays the fuzz targets' corpora (`fuzz/corpus/*`) through the same checks the targets run,
//! so every input the fuzzer ever kept is re-checked on every CI run without nightly Rust.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    n
}

#[test]
fn the_event_corpus_replays_cleanly() {
    let n = replay("protocol_event", sandbox::protocol::fuzzing::event);
    assert!(n >= 10, "the corpus holds only {n} inputs");
}

#[test]
fn the_request_corpus_replays_cleanly() {
    let n = replay("protocol_request", sandbox::protocol::fuzzing::request);
    assert!(n >= 5, "the corpus holds only {n} inputs");
}
