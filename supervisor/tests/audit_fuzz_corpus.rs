//! Replays the `audit_segment` fuzz target's corpus (`fuzz/corpus/audit_segment`) through the
//! same checks the target runs, on every CI run, without nightly Rust.

#[test]
fn the_audit_segment_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/audit_segment");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        supervisor::audit::fuzzing::segment(&data);
        n += 1;
    }
    assert!(n >= 100, "the corpus holds only {n} inputs");
}
