//! Rendering an error with its whole source chain on one line, for logs, the launcher's status
//! pipe and command-line tools (each layer says only its own step; this joins them).

/// `outer: cause: root cause`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
