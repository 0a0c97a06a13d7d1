//! What the fuzz targets (`fuzz/fuzz_targets/bundle_*.rs`) run, here so that the corpus replay
//! in `models/tests/fuzz_corpus.rs` runs exactly the same checks on stable Rust.

use crate::bundle::keys::TrustedKeys;
use crate::bundle::Manifest;
use crate::gguf::read_header;

/// The manifest parser: never panics; whatever it accepts is valid and survives a round trip.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::parse(data) {
        assert!(m.validate().is_ok());
        let again = Manifest::parse(m.to_toml().as_bytes()).expect("a parsed manifest re-parses");
        assert_eq!(again, m);
    }
    // The same bytes as a signature: refused without a panic (no key is trusted).
    assert!(TrustedKeys::default().verify(b"manifest", data).is_err());
}

/// The GGUF header reader: never panics, never claims more tensors than it read.
pub fn gguf_header(data: &[u8]) {
    if let Ok(h) = read_header(data) {
        assert!(h.tensors <= data.len() as u64);
        if let Some((no, count)) = h.split {
            assert!(no < count);
        }
    }
}
