#!/usr/bin/env bash
# Runs the web UI benchmark (as root): 15 users signed in over HTTPS stream chats through the
# web UI while the same requests go to the worker directly, alternating, in one run; prints
# time to first token and throughput as ratios web ÷ direct. Extra arguments go to
# phibox-web-bench (e.g. --rounds 6, --model FILE). Record results in docs/benchmarks.md.
source "$(dirname "$0")/common.sh"
cd "$(dirname "$0")/.."
require_root
base_packages
ensure_rust
cargo build --release --locked --workspace --bins
model=.cache/models/small-q8_0.gguf
mkdir -p .cache/models
[ -f "$model" ] || target/release/phibox-gguf-gen --preset small --seed 2 "$model"
exec target/release/phibox-web-bench --model "$model" "$@"
