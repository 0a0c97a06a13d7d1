//! Turning generated token bytes into text that is safe to send: incomplete UTF-8 sequences
//! are held until the rest arrives (invalid bytes become U+FFFD), and text that might be the
//! start of a stop string is held until it is known not to be one. Stop strings are never sent.

/// Per-request output state.
#[derive(Debug, Default)]
pub struct TextStream {
    bytes: Vec<u8>,
    held: String,
    stops: Vec<String>,
}

/// What one step produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Text to send now (may be empty).
    pub text: String,
    /// A stop string was found; generation ends.
    pub stopped: bool,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> TextStream {
        TextStream {
            stops,
            ..TextStream::default()
        }
    }

    /// Takes the longest decodable prefix of the byte buffer.
    fn decode_bytes(&mut self) -> String {
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.bytes) {
                Ok(s) => {
                    out.push_str(s);
                    self.bytes.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: from_utf8 vouched for the first `valid` bytes.
                    out.push_str(std::str::from_utf8(&self.bytes[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete sequence at the end: wait for more bytes.
                        None => {
                            self.bytes.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.bytes.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Adds the bytes of one token.
    pub fn push(&mut self, piece: &[u8]) -> Step {
        self.bytes.extend_from_slice(piece);
        let new = self.decode_bytes();
        self.held.push_str(&new);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let text = self.held[..at].to_string();
            self.held.clear();
            return Step {
                text,
                stopped: true,
            };
        }
        // Hold back the longest tail that could still grow into a stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_prefix_suffix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let text = self.held[..cut].to_string();
        self.held.drain(..cut);
        Step {
            text,
            stopped: false,
        }
    }

    /// Everything still held, at the end of generation (an incomplete sequence becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.held);
        if !self.bytes.is_empty() {
            out.push_str(&String::from_utf8_lossy(&self.bytes));
            self.bytes.clear();
        }
        out
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`, on char bounds.
fn longest_prefix_suffix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop.is_char_boundary(n)
                && text.ends_with(&stop[..n])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_utf8_is_held_until_complete() {
        let mut t = TextStream::new(vec![]);
        let e = "é".as_bytes();
        assert_eq!(t.push(&e[..1]).text, "");
        assert_eq!(t.push(&e[1..]).text, "é");
        let crab = "🦀".as_bytes();
        assert_eq!(t.push(&crab[..2]).text, "");
        assert_eq!(t.push(&crab[2..3]).text, "");
        assert_eq!(t.push(&crab[3..]).text, "🦀");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut t = TextStream::new(vec![]);
        assert_eq!(t.push(&[b'a', 0xFF, b'b']).text, "a\u{FFFD}b");
        assert_eq!(t.push(&[0xE2, 0x82]).text, "");
        assert_eq!(t.finish(), "\u{FFFD}");
    }

    #[test]
    fn stop_strings_are_cut_even_across_tokens() {
        let mut t = TextStream::new(vec!["</end>".into()]);
        assert_eq!(
            t.push(b"hello </"),
            Step {
                text: "hello ".into(),
                stopped: false
            }
        );
        assert_eq!(
            t.push(b"en"),
            Step {
                text: "".into(),
                stopped: false
            }
        );
        assert_eq!(
            t.push(b"d> more"),
            Step {
                text: "".into(),
                stopped: true
            }
        );
        let mut t = TextStream::new(vec!["</end>".into()]);
        assert_eq!(t.push(b"a </x").text, "a </x");
        assert_eq!(t.finish(), "");
        let mut t = TextStream::new(vec!["STOP".into()]);
        assert_eq!(t.push(b"xxST").text, "xx");
        assert_eq!(t.finish(), "ST", "held text is released at the end");
    }

    #[test]
    fn the_earliest_stop_string_wins() {
        let mut t = TextStream::new(vec!["b".into(), "a".into()]);
        assert_eq!(
            t.push(b"xab"),
            Step {
                text: "x".into(),
                stopped: true
            }
        );
    }
}
