#!/usr/bin/env bash
# Runs the inference benchmark (as root): builds llama.cpp's llama-bench and llama-batched-bench
# as the reference, generates the ~200M-parameter test model, fetches the Gemma 3 270M model,
# builds phibox in release mode and runs phibox-bench on both models. Extra arguments go to
# phibox-bench (e.g. --rounds 5). Results go to stdout; record them in docs/benchmarks.md.
source "$(dirname "$0")/common.sh"
cd "$(dirname "$0")/.."
require_root
base_packages
ensure_packages python3:python3 pip3:python3-pip /usr/bin/time:time
ensure_rust
ref=$(scripts/build-llama-reference.sh)
gemma=$(scripts/fetch-model.sh)
cargo build --release --locked --workspace --bins
big=.cache/models/bench-200m-q8_0.gguf
[ -f "$big" ] || target/release/phibox-gguf-gen --preset bench200m --type q8-0 "$big"
exec target/release/phibox-bench --reference "$ref" --model "$big" --model "$gemma" "$@"
