#!/usr/bin/env bash
# Runs the whole test suite (as root: the sandbox tests create namespaces and mounts):
# formatting, clippy with warnings as errors, the dependency policy, and every test.
source "$(dirname "$0")/common.sh"
cd "$(dirname "$0")/.."
require_root
base_packages
# The TLS tests try old protocol versions with the openssl tool; the audit tests set the
# append-only attribute with chattr (e2fsprogs); the directory tests start OpenLDAP's slapd; the
# browser test drives Debian's Chromium through chromedriver; the bundle tests check signatures
# against the minisign tool.
ensure_packages openssl:openssl chattr:e2fsprogs /usr/sbin/slapd:slapd /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver minisign:minisign
ensure_rust
# A one-off build: incremental state would only cost disk (about 1 GB).
export CARGO_INCREMENTAL=0
say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
if ! command -v cargo-deny >/dev/null 2>&1; then
  say "installing cargo-deny"
  cargo install --locked cargo-deny@0.20.2 >/dev/null
fi
say "cargo deny (licenses, bans, sources)"
cargo deny --log-level error check licenses bans sources
say "cargo test"
cargo test --workspace --locked
